"""The first N segments of a prepared set as a new prepared set (same layout, src/data/prepared.h),
for small ablations such as the 64-clip memorization test in experiments/demo_teacher/README.md.

    python3 experiments/demo_teacher/subset.py IN.h5 OUT.h5 N   (h5py, numpy)
"""
import os
import sys

import h5py
import numpy as np


def main(src, out, n):
    tmp = out + ".tmp"
    with h5py.File(src, "r") as f, h5py.File(tmp, "w") as g:
        n = min(n, int(f.attrs["count"]))
        for k, v in f.attrs.items():
            g.attrs[k] = v
        g.attrs["count"] = np.int64(n)
        off = f["frame_offset"][: n + 1]
        g["features"] = f["features"][: off[n]]
        g["frame_offset"] = off
        for k in ("pad_value", "valid_frames", "talk"):
            g.create_dataset(k, data=f[k][:n], dtype=f[k].dtype)
        for lang in f["ids"]:
            o = f[f"ids/{lang}/offset"][: n + 1]
            g[f"ids/{lang}/offset"] = o
            g[f"ids/{lang}/tokens"] = f[f"ids/{lang}/tokens"][: o[n]]
        for lang in f["text"]:
            g.create_dataset(f"text/{lang}", data=f[f"text/{lang}"][:n], dtype=f[f"text/{lang}"].dtype)
        f.copy(f["prompt"], g, "prompt")
        for name, d in f.items():
            for k, v in d.attrs.items():
                g[name].attrs[k] = v
    os.replace(tmp, out)
    print(f"{out}: {n} segments")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
