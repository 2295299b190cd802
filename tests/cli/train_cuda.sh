#!/usr/bin/env bash
# audistill train with train.device: cuda against the CPU reference (skips without a GPU or a
# CUDA build): the tiny student distilled from the tiny teacher for 8 steps on both backends
# from the same weights and data; every per-step loss within 1e-4 relative, the final weights
# within 1e-3 relative L2 per tensor (Adam's division by sqrt(v) amplifies the last-digit
# differences of fp32 sums in another order), the dev evaluation (loss + greedy BLEU) runs on
# the GPU, and a run stopped on the GPU resumes on the CPU to the same result (1e-3). The same
# with the optimizer on the GPU (train.optimizer: device: norm, clipping and AdamW as backend
# ops, moments on the device, brought to the host only for checkpoints).
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
py=${PYTHON:-python3}
tmp=$(mktemp -d "${AUDISTILL_TEST_TMP:-/tmp}/train_cuda.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 16 16 280 11 || { echo "cannot make the data set"; exit 1; }

job() { # output dir, device -> job file path
  cat >"$tmp/$1.yaml" <<YAML
student: $fx/tiny_a
teacher: $fx/tiny_a
output: $tmp/$1
data:
  train: $tmp/set.h5
  dev: $tmp/set.h5
train:
  device: $2
  steps: 8
  batch: 4
  micro_batch: 2
  lr: 5e-3
  warmup: 2
  log_every: 1
  eval_every: 4
  eval_segments: 2
  checkpoint_every: 4
  max_len: 64
  max_frames: 100
distill:
  alpha: 0.5
  temperature: 2.0
YAML
  echo "$tmp/$1.yaml"
}

"$bin" train --config "$(job gpu cuda)" --quiet 2>"$tmp/err"
rc=$?
if [[ $rc != 0 ]] && grep -qE "built without CUDA|no usable CUDA device|no CUDA device" "$tmp/err"; then
  echo "SKIP: $(grep -m1 -oE "built without CUDA|no usable CUDA device[^(]*|no CUDA device present" "$tmp/err")"
  exit 77
fi
[[ $rc == 0 ]] && ok || { bad "training on the GPU failed"; cat "$tmp/err"; }
"$bin" train --config "$(job cpu cpu)" --quiet 2>"$tmp/err" || { bad "training on the CPU failed"; cat "$tmp/err"; }
j=$(job moved cuda)
"$bin" train --config "$j" --quiet --stop-after 4 2>"$tmp/err" || { bad "first half on the GPU failed"; cat "$tmp/err"; }
sed -i "s|device: cuda|device: cpu|" "$j"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume on the CPU failed"; cat "$tmp/err"; }
j=$(job gpu_opt cuda)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
"$bin" train --config "$j" --quiet 2>"$tmp/err" || { bad "training with the optimizer on the GPU failed"; cat "$tmp/err"; }
j=$(job gpu_opt_moved cuda)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
"$bin" train --config "$j" --quiet --stop-after 4 2>"$tmp/err" || { bad "first half with the optimizer on the GPU failed"; cat "$tmp/err"; }
sed -i "s|device: cuda|device: cpu|; s|optimizer: device|optimizer: host|" "$j"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume on the CPU of a GPU-optimizer run failed"; cat "$tmp/err"; }
grep -q '"dev/bleu"' "$tmp/gpu/metrics.jsonl" && ok || bad "no dev evaluation on the GPU"

"$py" - "$tmp" <<'PY' && ok || bad "the GPU run differs from the CPU run (above)"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp = sys.argv[1]
def losses(run):
    out = []
    for line in open(f"{tmp}/{run}/metrics.jsonl"):
        r = json.loads(line)
        if "train/loss" in r:
            out.append(r["train/loss"])
    return np.array(out)
status = 0
cpu = losses("cpu")
for run in ("gpu", "gpu_opt", "gpu_opt_moved"):
    gpu = losses(run)
    assert len(cpu) == 8 and len(gpu) == 8, (run, len(cpu), len(gpu))
    err = np.max(np.abs(gpu - cpu) / np.abs(cpu))
    print(f"per-step loss of {run}: worst relative difference {err:.3g} (tolerance 1e-4); "
          f"cpu {cpu[0]:.5f} -> {cpu[-1]:.5f}, {run} {gpu[0]:.5f} -> {gpu[-1]:.5f}")
    status |= not err <= 1e-4
for run in ("gpu", "moved", "gpu_opt", "gpu_opt_moved"):
    a = load_file(f"{tmp}/cpu/final/model.safetensors")
    b = load_file(f"{tmp}/{run}/final/model.safetensors")
    worst = max(np.linalg.norm(b[k] - a[k]) / max(np.linalg.norm(a[k]), 1e-30) for k in a)
    print(f"final weights of {run}: worst relative L2 {worst:.3g} over {len(a)} tensors (tolerance 1e-3)")
    status |= not worst <= 1e-3
sys.exit(status)
PY
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
