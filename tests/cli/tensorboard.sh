#!/usr/bin/env bash
# The C TensorBoard writer read back by TensorBoard's own reader (EventAccumulator) or tbparse:
# the fixed scalars that `test_metrics --write` writes (steps 10..50, four tags, a NaN) come
# back with their steps, tags and float32 values; metrics.jsonl parses with Python's json.
# Skips (77) when neither reader is installed (CI may lack them).
set -uo pipefail
py=${PYTHON:-python3}
writer="$(dirname "${AUDISTILL_ST_TOOL:?}")/test_metrics"
[ -x "$writer" ] || { echo "FAIL: $writer not built"; exit 1; }
if ! "$py" -c "import tensorboard" 2>/dev/null && ! "$py" -c "import tbparse" 2>/dev/null; then
  echo "SKIP: neither tensorboard nor tbparse is installed for $py"
  exit 77
fi
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/tensorboard.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$writer" --write "$tmp/run" || { echo "FAIL: the writer failed"; exit 1; }
"$py" - "$tmp/run" <<'PY'
import glob, json, math, os, struct, sys

run = sys.argv[1]
tags = ["train/loss", "train/lr", "train/grad_norm", 'say "hi"\\']
def want(t, step):
    return [2.5 / step, 1e-3 * step, math.sqrt(step), float("nan") if step == 3 else -step][t]
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
failed = 0
def check(ok, msg):
    global failed
    if not ok:
        failed += 1
        print("FAIL:", msg)

got = {}  # tag -> [(step, value)]
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(os.path.join(run, "tensorboard"))
    acc.Reload()
    reader = "tensorboard EventAccumulator"
    for t in acc.Tags()["scalars"]:
        got[t] = [(e.step, e.value) for e in acc.Scalars(t)]
except ImportError:
    from tbparse import SummaryReader
    df = SummaryReader(os.path.join(run, "tensorboard")).scalars
    reader = "tbparse"
    for t, g in df.groupby("tag"):
        got[t] = list(zip(g["step"].tolist(), g["value"].tolist()))
check(sorted(got) == sorted(tags), f"tags {sorted(got)}")
for i, t in enumerate(tags):
    rows = got.get(t, [])
    check([s for s, _ in rows] == [10, 20, 30, 40, 50], f"{t}: steps {[s for s, _ in rows]}")
    for s, v in rows:
        w = f32(want(i, s // 10))
        check((math.isnan(w) and math.isnan(v)) or v == w, f"{t} step {s}: {v!r} vs {w!r}")
lines = open(os.path.join(run, "metrics.jsonl")).read().splitlines()
check(len(lines) == 5, f"{len(lines)} JSONL lines")
for k, line in enumerate(lines):
    rec = json.loads(line)  # strict: NaN must have been written as null
    check(rec["step"] == 10 * (k + 1), f"JSONL step {rec['step']}")
    for i, t in enumerate(tags):
        w = want(i, k + 1)
        check(rec[t] is None if math.isnan(w) else abs(rec[t] - w) <= 1e-8 * abs(w), f"JSONL {t}")
print(f"{reader}: {sum(len(r) for r in got.values())} scalars read back;",
      "ok" if not failed else f"{failed} failures")
sys.exit(1 if failed else 0)
PY
