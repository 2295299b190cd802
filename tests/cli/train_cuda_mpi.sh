#!/usr/bin/env bash
# Data-parallel training on GPUs: audistill train as 2 MPI ranks with train.device: cuda (rank r
# on GPU r) against one process on the CPU with the same global batch (8 examples, micro-batches
# of 2, 6 steps): per-step losses within 1e-4 relative and final weights within 1e-3 relative L2
# per tensor (train_cuda.sh's tolerances), only rank 0 writing. Two ways:
# 1. optimizer: host: gradients averaged through MPI on host memory;
# 2. optimizer: device: gradients summed on the GPUs by NCCL (src/dist/comm_nccl.c), the
#    optimizer on each GPU; plain, and ZeRO-1 (reduce-scatter, moments of slices, all-gather),
#    and ZeRO-1 with bf16 student weights and sliced fp32 masters (3. below);
#    a rank that hangs before the sum ends the job through the NCCL communicator's watchdog
#    (AUDISTILL_COMM_TIMEOUT) with a message naming it.
# Skips without mpirun, an MPI build, a CUDA backend or 2 GPUs; on the CUDA emulator
# (tests/cuda_emu) each rank emulates its own card (AUDISTILL_CUDA_EMU_DEVICES=2) and NCCL is the
# emulator's (emu_nccl.cpp).
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
py=${PYTHON:-python3}
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: mpirun not installed"; exit 77; }
"$py" -c "import numpy, safetensors" 2>/dev/null || { echo "SKIP: needs python3 with numpy and safetensors"; exit 77; }
tmp=$(mktemp -d "${AUDISTILL_TEST_TMP:-/tmp}/train_cuda_mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
export LSAN_OPTIONS=${LSAN_OPTIONS:-detect_leaks=0}
export AUDISTILL_CUDA_EMU_DEVICES=2
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }
job() { # name, device [optimizer]
  cat >"$tmp/$1.yaml" <<YAML
student: $fx/tiny_a
teacher: $fx/tiny_a
output: $tmp/$1
data: {train: $tmp/set.h5}
train: {device: $2, optimizer: ${3:-host}, steps: 6, batch: 8, micro_batch: 2, lr: 5e-3, warmup: 2, log_every: 1, checkpoint_every: 100, max_len: 64, max_frames: 100}
distill: {alpha: 0.5, temperature: 2.0}
YAML
  echo "$tmp/$1.yaml"
}
mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train --config "$(job gpu2 cuda)" --quiet 2>"$tmp/err"
rc=$?
if [[ $rc != 0 ]]; then
  if grep -qE "built without (CUDA|MPI)|no usable CUDA device|no CUDA device|device 1 does not exist" "$tmp/err"; then
    echo "SKIP: $(grep -m1 -oE "built without (CUDA|MPI)|no usable CUDA device[^(]*|no CUDA device present|device 1 does not exist[^)]*\)" "$tmp/err")"
    exit 77
  fi
  bad "2 ranks on GPUs failed"; cat "$tmp/err"
fi
grep -q "data parallel over 2 ranks" "$tmp/err" && ok || { bad "not 2 ranks"; cat "$tmp/err"; }
mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train --config "$(job gpu2dev cuda device)" --quiet 2>"$tmp/err" || { bad "2 ranks on GPUs, optimizer: device"; cat "$tmp/err"; }
grep -q "gradients summed on the cuda backend by the nccl communicator" "$tmp/err" && ok || { bad "optimizer: device did not sum through NCCL"; cat "$tmp/err"; }
j=$(job gpu2zero cuda device)
sed -i "s|optimizer: device,|optimizer: device, zero: 1,|" "$j"
mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train --config "$j" --quiet 2>"$tmp/err" || { bad "2 ranks on GPUs, optimizer: device, zero: 1"; cat "$tmp/err"; }
grep -q "by the nccl communicator, the optimizer on every rank's device, ZeRO-1" "$tmp/err" && ok || { bad "no NCCL ZeRO-1 log line"; cat "$tmp/err"; }
# 3. precision bf16 with the student's GEMM weights in bf16 under ZeRO-1: each rank keeps only
#    its slices' fp32 masters, AdamW writes the bf16 slices, the bf16 weights are all-gathered
#    (even slices as float words). Against the same job with student_weights: f32 (fp32 weights
#    gathered, every GEMM rounding them): the same losses within 1e-6 and final weights within
#    1e-5 relative L2 (the slices differ, so the norm's partial sums do); stopped after 3 steps
#    (the masters gathered into the checkpoint) and resumed: the straight run's final weights
#    bit for bit. Over 3 ranks (batch 6, 3 steps) too, where slices of ceil(n / 3) elements are
#    often odd and are padded to even lengths.
mpi16() { # name student_weights ranks [--stop-after 3 | --resume auto]
  local j=$tmp/$1.yaml
  [ -e "$j" ] || { job "$1" cuda device >/dev/null; sed -i "s|optimizer: device,|optimizer: device, zero: 1, precision: bf16, student_weights: $2,|" "$j"; }
  [[ $3 == 3 ]] && sed -i "s|steps: 6,|steps: 3,|; s|batch: 8,|batch: 6,|" "$j"
  AUDISTILL_CUDA_EMU_DEVICES=$3 mpirun --oversubscribe --allow-run-as-root -np "$3" "$bin" train --config "$j" --quiet "${@:4}" 2>"$tmp/$1.err" && ok || { bad "$3 ranks, ZeRO-1, student_weights $2 ${*:4}"; cat "$tmp/$1.err"; }
}
mpi16 z16 auto 2
mpi16 z32 f32 2
mpi16 z16r auto 2 --stop-after 3
mpi16 z16r auto 2 --resume auto
mpi16 t16 auto 3
mpi16 t32 f32 3
grep -q "fp32 masters on the device (this rank's slices)" "$tmp/z16.err" && ok || { bad "ZeRO-1: the bf16 student weights are not in use"; cat "$tmp/z16.err"; }
cmp -s "$tmp/z16/final/model.safetensors" "$tmp/z16r/final/model.safetensors" && ok || bad "ZeRO-1 bf16 weights: the resumed run ends elsewhere"
"$py" - "$tmp" <<'PY' && ok || bad "ZeRO-1: bf16 student weights against fp32 ones (above)"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp = sys.argv[1]
def losses(run):
    return np.array([r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r])
status = 0
for ranks, f32, b16 in ((2, "z32", "z16"), (3, "t32", "t16")):
    a, b = losses(f32), losses(b16)
    assert len(a) == len(b) == (6 if ranks == 2 else 3), (len(a), len(b))
    err = np.max(np.abs(b - a) / np.abs(a))
    wa, wb = load_file(f"{tmp}/{f32}/final/model.safetensors"), load_file(f"{tmp}/{b16}/final/model.safetensors")
    worst = max(np.linalg.norm(wb[k] - wa[k]) / max(np.linalg.norm(wa[k]), 1e-30) for k in wa)
    print(f"ZeRO-1 over {ranks} ranks, bf16 student weights against f32: losses within {err:.3g} (tolerance 1e-6), final weights {worst:.3g} (tolerance 1e-5)")
    status |= not (err <= 1e-6 and worst <= 1e-5)
sys.exit(status)
PY
"$bin" train --config "$(job cpu cpu)" --quiet 2>"$tmp/err" || { bad "the CPU run failed"; cat "$tmp/err"; }
for run in gpu2 gpu2dev gpu2zero; do
"$py" - "$tmp" "$run" <<'PY' && ok || bad "$run: 2 GPU ranks differ from one CPU process (above)"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp, run = sys.argv[1], sys.argv[2]
def losses(run):
    return np.array([r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r])
a, b = losses("cpu"), losses(run)
assert len(a) == 6 and len(b) == 6, (len(a), len(b))
err = np.max(np.abs(b - a) / np.abs(a))
print(f"{run}: per-step loss: worst relative difference {err:.3g} (tolerance 1e-4); {a[0]:.5f} -> {a[-1]:.5f}")
wa, wb = load_file(f"{tmp}/cpu/final/model.safetensors"), load_file(f"{tmp}/{run}/final/model.safetensors")
worst = max(np.linalg.norm(wb[k] - wa[k]) / max(np.linalg.norm(wa[k]), 1e-30) for k in wa)
print(f"final weights: worst relative L2 {worst:.3g} over {len(wa)} tensors (tolerance 1e-3)")
sys.exit(not (err <= 1e-4 and worst <= 1e-3))
PY
done
# rank 1 hangs at step 3 before the gradient sum: rank 0's NCCL allreduce gives up after
# AUDISTILL_COMM_TIMEOUT seconds, aborts the communicator and ends the job
s=$(date +%s)
AUDISTILL_COMM_TIMEOUT=3 AUDISTILL_RANK_FAULT=1:3:hang timeout 120 mpirun --oversubscribe --allow-run-as-root \
  -np 2 "$bin" train --config "$(job hang cuda device)" --quiet >"$tmp/log" 2>&1
rc=$? took=$(($(date +%s) - s))
echo "hang: job ended with rc $rc after ${took}s"
[ $rc -ne 0 ] && [ $rc -ne 124 ] && ok || { bad "hang: rc $rc after ${took}s"; cat "$tmp/log"; }
grep -m1 "NCCL allreduce on rank" "$tmp/log"
grep -q "NCCL allreduce on rank 0 of 2 waited [0-9]* s for the other ranks" "$tmp/log" && ok || { bad "hang: no NCCL watchdog message"; cat "$tmp/log"; }
[ ! -d "$tmp/hang/final" ] && ok || bad "hang: a failed job wrote final/"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
