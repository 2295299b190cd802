"""Round trip with the reference safetensors implementation, both directions, fresh random
values each run. Exact equality: no conversion is lossy for the dtypes compared."""
import json
import os
import random
import subprocess
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

tool = os.environ["AUDISTILL_ST_TOOL"]
tmp = os.environ["AUDISTILL_TEST_TMP"]
failures = 0
checks = 0


def check(cond, msg):
    global failures, checks
    checks += 1
    if not cond:
        failures += 1
        print("FAIL:", msg)


# 1. audistill writes, Python reads.
seed = random.randrange(1 << 30)
path = os.path.join(tmp, f"ours-{os.getpid()}.safetensors")
out = subprocess.run([tool, "write", path, str(seed)], check=True, capture_output=True, text=True)
expected = [json.loads(line) for line in out.stdout.splitlines()]
with safe_open(path, framework="numpy") as f:
    check(f.metadata() == {"format": "pt", "writer": "audistill"}, f"metadata {f.metadata()}")
    keys = set(f.keys())
check(keys == {e["name"] for e in expected}, f"keys {keys}")
loaded = {}
for e in expected:
    if e["dtype"] == "BF16":
        continue  # numpy has no bfloat16; checked by the transformers-written fixtures
    with safe_open(path, framework="numpy") as f:
        loaded[e["name"]] = f.get_tensor(e["name"])
for e in expected:
    if e["dtype"] == "BF16":
        continue
    arr = loaded[e["name"]]
    check(list(arr.shape) == e["shape"], f"{e['name']} shape {arr.shape} vs {e['shape']}")
    # %.9g text is exact for float32 and float16 once rounded back to the stored dtype.
    check(np.array_equal(arr.ravel(), np.array(e["values"], dtype=np.float64).astype(arr.dtype)),
          f"{e['name']} values differ (seed {seed})")
os.unlink(path)

# 2. Python writes, audistill reads.
rng = np.random.default_rng(seed)
tensors = {
    "language_model.model.embed_tokens.weight": rng.standard_normal((5, 4)).astype(np.float32),
    "half": rng.standard_normal((3, 2, 2)).astype(np.float16),
    "ids": rng.integers(-1000, 1000, size=(7,), dtype=np.int32),
    "i8": rng.integers(-128, 128, size=(2, 5), dtype=np.int8),
    "u8": rng.integers(0, 256, size=(6,), dtype=np.uint8),
    "i64": rng.integers(-10**6, 10**6, size=(4,), dtype=np.int64),
    "scalar_like": rng.standard_normal((1,)).astype(np.float32),
}
path = os.path.join(tmp, f"theirs-{os.getpid()}.safetensors")
save_file(tensors, path, metadata={"format": "np", "note": "from python"})
out = subprocess.run([tool, "dump", path], check=True, capture_output=True, text=True)
rows = [json.loads(line) for line in out.stdout.splitlines()]
meta = {r["metadata"]: r["value"] for r in rows if "metadata" in r}
check(meta == {"format": "np", "note": "from python"}, f"metadata {meta}")
got = {r["name"]: r for r in rows if "name" in r}
check(set(got) == set(tensors), f"names {set(got)}")
for name, arr in tensors.items():
    r = got.get(name)
    if r is None:
        continue
    check(r["shape"] == list(arr.shape), f"{name} shape")
    check(np.array_equal(np.array(r["values"], dtype=np.float64).astype(arr.dtype), arr.ravel()),
          f"{name} values differ (seed {seed})")
os.unlink(path)

print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
