#!/usr/bin/env python3
"""Rewrites one CUDA source of cuda/ into C++ that the CPU emulator of tests/cuda_emu runs.

Three rewrites, each keeping the line count (so compiler messages and the emulator's
reports point at the .cu line):
- `kernel<<<grid, block[, smem[, stream]]>>>(args);` becomes
  `ad_emu_launch((const void *)&kernel, "kernel", grid, block, smem, [&]() { kernel(args); });`
  (launches are synchronous in the emulator, so capturing by reference is exact);
- `extern __shared__ T name[];` becomes a pointer to the launch's dynamic shared memory;
- `__shared__ [__align__(N)] T a[..], b[..];` becomes static storage, aligned alike (all
  threads of a block run on one host thread, one block at a time) that the emulator poisons (NaN bytes) when a block first
  reaches it, so a read before any write shows up as a wrong result.

Usage: translate.py IN.cu OUT.cpp
"""
import os
import re
import sys


def fail(path, text, pos, what):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: cannot translate: {what}")


def split_top(s):
    """Split on commas outside (), [], {}, <>."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def matching(text, start, open_ch, close_ch):
    """Index of the bracket closing the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    return -1


def rewrite_launches(path, text):
    out, pos = [], 0
    while True:
        i = text.find("<<<", pos)
        if i < 0:
            out.append(text[pos:])
            return "".join(out)
        m = re.search(r"([A-Za-z_]\w*(?:\s*<[^<>;()]*>)?)\s*$", text[pos:i])
        if not m:
            fail(path, text, i, "no kernel name before <<<")
        name_start = pos + m.start(1)
        kernel = m.group(1)
        j = text.find(">>>", i)
        if j < 0:
            fail(path, text, i, "<<< without >>>")
        config = split_top(text[i + 3 : j])
        if not 2 <= len(config) <= 4:
            fail(path, text, i, f"launch configuration of {len(config)} items")
        smem = config[2] if len(config) > 2 else "0"
        k = j + 3
        while text[k] in " \t\n":
            k += 1
        if text[k] != "(":
            fail(path, text, k, "no argument list after >>>")
        end = matching(text, k, "(", ")")
        if end < 0:
            fail(path, text, k, "unbalanced argument list")
        args = text[k + 1 : end]
        label = re.sub(r"\s+", "", kernel)
        out.append(text[pos:name_start])
        out.append(
            f'ad_emu_launch((const void *)&{kernel}, "{label}", dim3({config[0]}), '
            f"dim3({config[1]}), (size_t)({smem}), [&]() {{ {kernel}({args}); }})"
        )
        pos = end + 1


SHARED = re.compile(r"(extern\s+)?__shared__\s+(?:__align__\((\d+)\)\s+)?([^;]*?);")


def rewrite_shared(path, text):
    def one(m):
        body = m.group(3)
        tm = re.match(r"((?:const\s+)?[A-Za-z_][\w:]*(?:\s*<[^<>]*>)?\s*\**)\s*(.*)$", body, re.S)
        if not tm:
            fail(path, text, m.start(), "unrecognised __shared__ declaration")
        typ, decls = tm.group(1).strip(), tm.group(2)
        if m.group(1):
            nm = re.match(r"(\w+)\s*\[\s*\]$", decls.strip())
            if not nm:
                fail(path, text, m.start(), "extern __shared__ must be `T name[]`")
            return f"{typ} *{nm.group(1)} = ({typ} *)ad_emu_dynamic_shared()"  + ";"
        names = []
        for d in split_top(decls):
            nm = re.match(r"(\w+)", d)
            if not nm:
                fail(path, text, m.start(), "unrecognised __shared__ declarator")
            names.append(nm.group(1))
        fresh = " ".join(f"ad_emu_shared_fresh({n}, sizeof {n});" for n in names)
        align = f"alignas({m.group(2)}) " if m.group(2) else ""
        return f"{align}static {typ} {decls}; {fresh}"

    return SHARED.sub(one, text)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: translate.py IN.cu OUT.cpp")
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    text = rewrite_shared(src, rewrite_launches(src, text))
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f'#line 1 "{src}"\n' + text)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()
