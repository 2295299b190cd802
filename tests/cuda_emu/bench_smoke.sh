#!/usr/bin/env bash
# tests/gpu/check.sh's benchmark binary on the CUDA emulator, at the tiny model's widths: it
# runs its warm-ups, timed steps and the profiled step, prints its JSON line with finite losses,
# and the op profile accounts for the profiled step (so a GPU lease is not spent finding a
# crash in the benchmark). Usage: bench_smoke.sh AUDISTILL BENCH FIXTURES TMPDIR
set -uo pipefail
bin=$1 bench=$2 fx=$3
tmp=$(mktemp -d "$4/bench_smoke.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for spec in "teacher []" "student [1]"; do
  set -- $spec
  printf 'teacher: %s/tiny_a\noutput: %s/%s\noutput_dtype: bf16\nprune:\n  drop_decoder_layers: %s\n' \
    "$fx" "$tmp" "$1" "$2" >"$tmp/$1.yaml"
  "$bin" prune --config "$tmp/$1.yaml" >"$tmp/$1.log" 2>&1 || { cat "$tmp/$1.log"; echo "FAIL: bf16 $1"; exit 1; }
done
status=0
for mode in f32 bf16 bf16-flash; do
  if ! "$bench" "$tmp/teacher" "$tmp/student" 2 100 8 2 $mode >"$tmp/$mode.json" 2>"$tmp/$mode.err"; then
    cat "$tmp/$mode.err"; echo "FAIL: bench_distill_step $mode"; status=1; continue
  fi
  cat "$tmp/$mode.json"
  "${PYTHON:-python3}" - "$tmp/$mode.json" "$tmp/$mode.err" <<'PY' || { echo "FAIL: $mode output"; status=1; }
import json, math, re, sys
r = json.load(open(sys.argv[1]))
for k in ("ms_per_step", "loss_first", "loss_last", "profiled_step_ms"):
    assert math.isfinite(r[k]) and r[k] > 0, (k, r[k])
err = open(sys.argv[2]).read()
m = re.search(r"^op profile \(cuda backend\): ([0-9.]+) s", err, re.M)
assert m, "no op profile"
in_ops = float(m.group(1)) * 1e3
assert 0.5 * r["profiled_step_ms"] < in_ops <= r["profiled_step_ms"] * 1.001, (in_ops, r["profiled_step_ms"])
for op in ("linear language_model.lm_head.weight", "attention_backward", "distill_loss"):
    assert re.search(r"^" + re.escape(op) + r" +[0-9]+ ", err, re.M), f"no {op} row"
print(f"profile: {in_ops:.0f} of {r['profiled_step_ms']:.0f} ms in table ops")
PY
done
exit $status
