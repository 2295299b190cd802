#!/usr/bin/env python3
"""Instruction mix of the tensor-core loops of compiled kernels: a static proxy for the work
around the matrix products, measurable without a GPU.

For each kernel of a cubin's SASS (cuobjdump -sass), every loop (a backward branch and its
target) that contains HMMA instructions and no inner loop with HMMA is reported: its size in
instructions, the HMMAs, the MUFU ops (exponentials, reciprocals), the shared-memory fragment
loads (LDSM), and the other instructions per HMMA. Fewer non-HMMA instructions per HMMA leave
the warp schedulers more slots for the tensor cores.

With --all, every innermost loop is reported instead (kernels without tensor-core loops, such as
the loss's vocabulary sweeps): its instructions, the double-precision ones (DFMA, DADD, DMUL,
DSETP, DMNMX: an H100 issues half as many per cycle as FP32 ones), MUFU ops, conversions
(F2F, I2F, F2I: a quarter) and global loads. A loop's counts cover every path through it.

usage: cuobjdump -sass X.cubin | sass_loop_mix.py [--match SUBSTRING] [--all]
"""
import argparse
import re
import sys

FUNC = re.compile(r"Function : (\S+)")
INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def kernels(text):
    name, body = None, []
    for line in text.splitlines():
        m = FUNC.search(line)
        if m:
            if name:
                yield name, body
            name, body = m.group(1), []
            continue
        m = INSN.search(line)
        if m and name:
            body.append((int(m.group(1), 16), m.group(3), m.group(4)))
    if name:
        yield name, body


def loops(body):
    """(start, end) address pairs of backward branches."""
    out = []
    for addr, op, args in body:
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", args)
            if m and int(m.group(1), 16) <= addr:
                out.append((int(m.group(1), 16), addr))
    return out


def mix(body, lo, hi):
    ops = [op for addr, op, _ in body if lo <= addr <= hi]
    count = lambda p: sum(1 for o in ops if o.startswith(p))
    return len(ops), count("HMMA"), count("MUFU"), count("LDSM")


DOUBLE = ("DFMA", "DADD", "DMUL", "DSETP", "DMNMX")
CONVERT = ("F2F", "I2F", "F2I")


def innermost(spans):
    return [(lo, hi) for lo, hi in spans
            if not any((a, b) != (lo, hi) and lo <= a and b <= hi for a, b in spans)]


def all_loops(text, match):
    print(f"{'kernel':58} {'loop':>13} {'insns':>6} {'double':>6} {'MUFU':>5} {'conv':>5} {'LDG':>4}")
    for name, body in kernels(text):
        if match not in name:
            continue
        for lo, hi in sorted(innermost(loops(body))):
            ops = [op for addr, op, _ in body if lo <= addr <= hi]
            count = lambda prefixes: sum(1 for o in ops if o.startswith(prefixes))
            print(f"{name[:58]:58} {lo:#06x}-{hi:#06x} {len(ops):6} {count(DOUBLE):6} "
                  f"{count('MUFU'):5} {count(CONVERT):5} {count('LDG'):4}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--match", default="")
    ap.add_argument("--all", action="store_true", help="every innermost loop, not only HMMA ones")
    args = ap.parse_args()
    if args.all:
        all_loops(sys.stdin.read(), args.match)
        return
    print(f"{'kernel':58} {'loop':>13} {'insns':>6} {'HMMA':>5} {'MUFU':>5} {'LDSM':>5} {'other/HMMA':>10}")
    for name, body in kernels(sys.stdin.read()):
        if args.match not in name:
            continue
        with_mma = [(lo, hi) for lo, hi in loops(body) if mix(body, lo, hi)[1]]
        for lo, hi in sorted(innermost(with_mma)):
            n, mma, mufu, ldsm = mix(body, lo, hi)
            print(f"{name[:58]:58} {lo:#06x}-{hi:#06x} {n:6} {mma:5} {mufu:5} {ldsm:5} "
                  f"{(n - mma) / mma:10.2f}")


if __name__ == "__main__":
    main()
