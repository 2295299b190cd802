#!/usr/bin/env python3
"""Where a step's time moved between two op profiles (AUDISTILL_PROFILE tables, as
bench_distill_step and `audistill train --benchmark` print them): per row of the table, the
calls and milliseconds before and after and the difference, largest changes first, then the
totals. check.sh prints it for its batch-16 benchmark against run 5's profile, so that a GPU
lease shows at once which rows the changes since moved.

usage: profile_diff.py BEFORE.log AFTER.log [--before-table N] [--after-table N]
  --*-table N   which table of the file (0-based; a log may hold several, e.g. one per mode)
"""
import argparse
import re
import sys

ROW = re.compile(r"^(?P<op>\S.*?)\s{2,}(?P<calls>\d+)\s+(?P<ms>[0-9.]+)\s+[0-9.]+\s")
HEAD = re.compile(r"^op profile .*: (?P<s>[0-9.]+) s in")


def tables(path):
    """The op-profile tables of a log: a list of (rows {op: (calls, ms)}, total ms)."""
    out, rows, total = [], None, 0.0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            head = HEAD.match(line)
            if head:
                rows, total = {}, 1e3 * float(head.group("s"))
                out.append((rows, total))
                continue
            if rows is None or line.startswith("op [weight]"):
                continue
            if line.startswith("profiled step") or not line.strip():
                rows = None
                continue
            m = ROW.match(line)
            if m:
                rows[m.group("op").strip()] = (int(m.group("calls")), float(m.group("ms")))
    return out


def pick(path, index):
    found = tables(path)
    if not found:
        sys.exit(f"profile_diff: no op profile table in {path}")
    if not -len(found) <= index < len(found):
        sys.exit(f"profile_diff: {path} has {len(found)} tables, no table {index}")
    return found[index]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--before-table", type=int, default=0)
    ap.add_argument("--after-table", type=int, default=0)
    args = ap.parse_args()
    (old, old_total), (new, new_total) = pick(args.before, args.before_table), pick(
        args.after, args.after_table)
    ops = set(old) | set(new)
    change = lambda op: new.get(op, (0, 0.0))[1] - old.get(op, (0, 0.0))[1]
    print(f"{'op [weight]':70} {'calls':>11} {'ms before':>10} {'ms after':>9} {'change':>8}")
    for op in sorted(ops, key=lambda o: (-abs(change(o)), o)):
        oc, om = old.get(op, (0, 0.0))
        nc, nm = new.get(op, (0, 0.0))
        calls = f"{oc}->{nc}" if oc != nc else str(nc)
        print(f"{op[:70]:70} {calls:>11} {om:10.3f} {nm:9.3f} {nm - om:+8.3f}")
    print(f"{'in table ops':70} {'':>11} {old_total:10.1f} {new_total:9.1f} "
          f"{new_total - old_total:+8.1f}")


if __name__ == "__main__":
    main()
