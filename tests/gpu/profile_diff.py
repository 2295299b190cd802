#!/usr/bin/env python3
"""Where a step's time moved between two op profiles (AUDISTILL_PROFILE tables, as
bench_distill_step and `audistill train --benchmark` print them): per row of the table, the
calls and milliseconds before and after and the difference, largest changes first, then the
totals. check.sh prints it for its batch-16 benchmark against run 5's profile, so that a GPU
lease shows at once which rows the changes since moved.

Rows are named by op and weight, and names change (run 5's one `attention` row is now one
per kind, `attention (causal, head dim 128)`; o_proj's `linear` and the `add` after it are now
one `linear_residual`), so the totals are also given per kind of work: GEMMs (linear*, matmul,
conv1d), attention (forward and backward) and the rest.

usage: profile_diff.py BEFORE.log AFTER.log [--before-table N] [--after-table N] [--top N]
  --*-table N   which table of the file (0-based; a log may hold several, e.g. one per mode)
  --top N       only the N largest changes (the totals always follow)
"""
import argparse
import re
import signal
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


GEMM_OPS = ("linear", "linear_residual", "linear_backward", "matmul", "conv1d")


def kind(op):
    """GEMMs, attention or other, from the op's first word (its weight and kind follow)."""
    first = op.split()[0]
    if first in GEMM_OPS:
        return "GEMMs"
    return "attention" if first in ("attention", "attention_backward") else "other"


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--before-table", type=int, default=0)
    ap.add_argument("--after-table", type=int, default=0)
    ap.add_argument("--top", type=int, default=0)
    args = ap.parse_args()
    (old, old_total), (new, new_total) = pick(args.before, args.before_table), pick(
        args.after, args.after_table)
    ops = set(old) | set(new)
    change = lambda op: new.get(op, (0, 0.0))[1] - old.get(op, (0, 0.0))[1]
    print(f"{'op [weight]':70} {'calls':>11} {'ms before':>10} {'ms after':>9} {'change':>8}")
    ordered = sorted(ops, key=lambda o: (-abs(change(o)), o))
    for op in ordered[:args.top] if args.top > 0 else ordered:
        oc, om = old.get(op, (0, 0.0))
        nc, nm = new.get(op, (0, 0.0))
        calls = f"{oc}->{nc}" if oc != nc else str(nc)
        print(f"{op[:70]:70} {calls:>11} {om:10.3f} {nm:9.3f} {nm - om:+8.3f}")
    for k in ("GEMMs", "attention", "other"):
        om = sum(ms for op, (_, ms) in old.items() if kind(op) == k)
        nm = sum(ms for op, (_, ms) in new.items() if kind(op) == k)
        print(f"{'  all ' + k:70} {'':>11} {om:10.3f} {nm:9.3f} {nm - om:+8.3f}")
    print(f"{'in table ops':70} {'':>11} {old_total:10.1f} {new_total:9.1f} "
          f"{new_total - old_total:+8.1f}")


if __name__ == "__main__":
    main()
