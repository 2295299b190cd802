"""Checks that a bf16 model file holds exactly the f32 model's weights rounded to bf16 (round
to nearest even, computed here with numpy, independently of audistill's conversion).
usage: bf16_rounding.py F32.safetensors BF16.safetensors [MORE_F32_FILES_THAT_MUST_STAY_F32...]"""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header.pop("__metadata__", None)
    return {k: (v["dtype"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in header.items()}


f32, half = load(sys.argv[1]), load(sys.argv[2])
assert set(f32) == set(half) and len(f32) > 10, (len(f32), len(half))
for path in sys.argv[3:]:
    assert all(d == "F32" for d, _ in load(path).values()), f"{path} must stay f32"
for name, (dtype, raw) in f32.items():
    assert dtype == "F32" and half[name][0] == "BF16", (name, dtype, half[name][0])
    u = np.frombuffer(raw, dtype="<u4").astype(np.uint64)
    want = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    got = np.frombuffer(half[name][1], dtype="<u2")
    assert np.array_equal(want, got), f"{name}: {int((want != got).sum())} values differ"
print(f"{len(f32)} tensors: bf16 = f32 rounded to nearest even")
