#!/usr/bin/env bash
# audistill train as 2 MPI ranks on the tiny student (random prepared set), against one process
# with the same global batch (8 examples, micro-batches of 2, 8 steps):
# 1. plain data parallel == single process: per-step losses within 1e-5 relative, final weights
#    and Adam moments within TOL_W / TOL_M absolute; with optimizer: device (gradients summed
#    in place, the optimizer as backend ops) the same run bit for bit;
# 2. ZeRO-1 == plain data parallel within the same tolerances, each rank holding about half of
#    the optimizer-state bytes (from the trainer's log line); ZeRO-1 with optimizer: device on
#    3 ranks == one process, a third of the bytes each, and resumable on 2 ranks with the host
#    optimizer;
# 3. resume on another rank count (2 -> 1 with ZeRO-1 -> plain, 1 -> 2 with plain -> ZeRO-1)
#    ends where the uninterrupted single-process run ends;
# 4. a rank killed (SIGKILL) mid-step ends the whole job within a bounded time, and so does a
#    rank that hangs (the watchdog, AUDISTILL_COMM_TIMEOUT); --resume auto then finishes the run
#    from the last checkpoint with the uninterrupted result;
# 5. only rank 0 writes: one metrics line per step, no second run directory artifacts;
# 6. quantization-aware training of a GPTQ student, plain and ZeRO-1 on 2 ranks, gives the
#    single process's losses (1e-5) and an exact export.
# Skips (77) without mpirun or when this audistill was built without MPI.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
PY=${PYTHON:-python3}
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: mpirun not installed"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/train_mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
TOL_L=1e-5 TOL_W=1e-5 TOL_M=1e-6
# One OpenMP thread per rank: two ranks share this machine's cores (results do not depend on the
# thread count); ranks yield while waiting instead of spinning.
export OMP_NUM_THREADS=1 OMPI_MCA_mpi_yield_when_idle=1
# Sanitizer builds: Open MPI keeps allocations for the life of the process.
export LSAN_OPTIONS=${LSAN_OPTIONS:-detect_leaks=0}
mpi() { mpirun --oversubscribe --allow-run-as-root -np "$@"; }

"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }
job() { # name, steps, zero -> job file path
  cat >"$tmp/$1.yaml" <<EOF
student: $fx/tiny_a
output: $tmp/$1
data:
  train: $tmp/set.h5
  dev: $tmp/set.h5
train:
  steps: $2
  batch: 8
  micro_batch: 2
  lr: 5e-3
  warmup: 2
  log_every: 1
  eval_every: 4
  eval_segments: 2
  checkpoint_every: 3
  max_len: 64
  max_frames: 100
  zero: $3
EOF
  echo "$tmp/$1.yaml"
}
# per-step losses; a run resumed after a crash logs the steps after its checkpoint again: the
# last line of each step counts
losses() {
  grep '"train/loss"' "$1/metrics.jsonl" | sed -E 's/^\{"step": ([0-9]+),.*"train\/loss": ([^,]*),.*/\1 \2/' |
    awk '{v[$1] = $2; if ($1 > n) n = $1} END {for (i = 1; i <= n; i++) print v[i]}'
}
# close RUN_A RUN_B WHAT: per-step losses, final weights and step-8 moments within tolerance
close() {
  local la lb
  la=$(losses "$1") lb=$(losses "$2")
  if [ "$(echo "$la" | wc -l)" -ne 8 ] || [ "$(echo "$lb" | wc -l)" -ne 8 ]; then
    bad "$3: expected 8 loss lines each"
    return
  fi
  paste <(echo "$la") <(echo "$lb") | awk -v t=$TOL_L -v w="$3" '
    {d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1; if (m < 1) m = 1; r = d / m; if (r > worst) worst = r}
    END {printf "%s: losses max rel diff %.3g\n", w, worst; exit !(worst <= t)}' && ok || bad "$3: losses differ"
  "$PY" - "$1" "$2" "$3" "$TOL_W" "$TOL_M" <<'PY' && ok || bad "$3: weights or moments differ"
import sys
import numpy as np
from safetensors.numpy import load_file
a, b, what, tol_w, tol_m = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
def worst(fa, fb):
    x, y = load_file(fa), load_file(fb)
    assert x.keys() == y.keys(), (fa, fb)
    return max(float(np.max(np.abs(x[k].astype(np.float64) - y[k]))) for k in x)
w = worst(f"{a}/final/model.safetensors", f"{b}/final/model.safetensors")
m = worst(f"{a}/checkpoints/step_00000008/optimizer.safetensors",
          f"{b}/checkpoints/step_00000008/optimizer.safetensors")
print(f"{what}: weights max abs diff {w:.3g}, moments {m:.3g}")
sys.exit(0 if w <= tol_w and m <= tol_m else 1)
PY
}

# reference: one process
t0=$(date +%s.%N)
"$bin" train --config "$(job single 8 0)" --quiet 2>"$tmp/err" || { bad "single-process run failed"; cat "$tmp/err"; }
t1=$(date +%s.%N)

# 1. plain data parallel
mpi 2 "$bin" train --config "$(job dp 8 0)" --quiet >"$tmp/dp.log" 2>&1; rc=$?
if grep -q "built without MPI" "$tmp/dp.log"; then echo "SKIP: this audistill was built without MPI"; exit 77; fi
t2=$(date +%s.%N)
[ $rc -eq 0 ] && ok || { bad "2-rank run failed (rc $rc)"; cat "$tmp/dp.log"; }
close "$tmp/single" "$tmp/dp" "2 ranks vs 1"
grep -q "data parallel over 2 ranks (mpi communicator)" "$tmp/dp.log" && ok || bad "no data-parallel log line"
[ "$(grep -c '"train/loss"' "$tmp/dp/metrics.jsonl")" -eq 8 ] && [ "$(grep -c '"dev/loss"' "$tmp/dp/metrics.jsonl")" -eq 2 ] && ok || bad "metrics must be written once (rank 0)"
[ -z "$(find "$tmp/dp" -name '*.tmp.*' -o -name '*.old.*')" ] && ok || bad "leftover temporary files"

# 1b. the optimizer as backend ops (optimizer: device): each gradient summed in place by the
# communicator, then the one-process device step on every rank: bit for bit the host optimizer's
# data parallel (same sums in rank order, same norm, same AdamW)
j=$(job dpdev 8 0)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
mpi 2 "$bin" train --config "$j" --quiet >"$tmp/dpdev.log" 2>&1 || { bad "2 ranks, optimizer: device"; cat "$tmp/dpdev.log"; }
grep -q "data parallel over 2 ranks: gradients summed on the cpu backend by the mpi communicator" "$tmp/dpdev.log" && ok || { bad "optimizer: device: no data-parallel log line"; cat "$tmp/dpdev.log"; }
cmp -s "$tmp/dp/final/model.safetensors" "$tmp/dpdev/final/model.safetensors" &&
  cmp -s "$tmp/dp/checkpoints/step_00000008/optimizer.safetensors" "$tmp/dpdev/checkpoints/step_00000008/optimizer.safetensors" &&
  [ "$(losses "$tmp/dp")" = "$(losses "$tmp/dpdev")" ] && ok || bad "optimizer: device over 2 ranks differs from optimizer: host"
# and stopped after 3 steps, resumed on 2 ranks (moments back from the checkpoint to the devices)
j=$(job dpdevr 8 0)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
mpi 2 "$bin" train --config "$j" --quiet --stop-after 3 >"$tmp/log" 2>&1 &&
  mpi 2 "$bin" train --config "$j" --quiet --resume auto >"$tmp/log" 2>&1 || { bad "optimizer: device, stop and resume"; cat "$tmp/log"; }
cmp -s "$tmp/dp/final/model.safetensors" "$tmp/dpdevr/final/model.safetensors" && ok || bad "optimizer: device over 2 ranks, resumed, differs"

# 2. ZeRO-1
mpi 2 "$bin" train --config "$(job zero 8 1)" --quiet >"$tmp/zero.log" 2>&1 || { bad "ZeRO-1 run failed"; cat "$tmp/zero.log"; }
t3=$(date +%s.%N)
close "$tmp/dp" "$tmp/zero" "ZeRO-1 vs plain"
bytes_of() { sed -nE 's/.*optimizer state bytes per rank: ([0-9]+) ([0-9]+) \(unsharded: ([0-9]+)\).*/\1 \2 \3/p' "$1"; }
echo "$(bytes_of "$tmp/zero.log") $(bytes_of "$tmp/dp.log")" | awk '
  {printf "optimizer bytes per rank: ZeRO-1 %d %d, plain %d %d, unsharded %d\n", $1, $2, $4, $5, $3;
   exit !(NF == 6 && $1 <= 0.51 * $3 && $2 <= 0.51 * $3 && $1 + $2 >= $3 && $4 == $3 && $5 == $3)}' && ok || bad "ZeRO-1 optimizer bytes"

# 2b. ZeRO-1 with the optimizer on the device over 3 ranks (tensors the ranks do not divide go
# through the padded scratch), checkpoints gathered from the slices: equals one process; stopped
# after 3 steps, it resumes on 2 ranks with the host optimizer
j=$(job zdev 8 1)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
mpi 3 "$bin" train --config "$j" --quiet >"$tmp/zdev.log" 2>&1 || { bad "ZeRO-1 on the device, 3 ranks"; cat "$tmp/zdev.log"; }
close "$tmp/single" "$tmp/zdev" "ZeRO-1 on the device, 3 ranks vs 1"
sed -nE 's/.*ZeRO-1: optimizer state bytes per rank: ([0-9]+) ([0-9]+) ([0-9]+) \(unsharded: ([0-9]+)\).*/\1 \2 \3 \4/p' "$tmp/zdev.log" | awk '
  {printf "device ZeRO-1 optimizer bytes per rank: %d %d %d of %d\n", $1, $2, $3, $4;
   exit !(NF == 4 && $1 <= 0.34 * $4 && $2 <= 0.34 * $4 && $3 <= 0.34 * $4 && $1 + $2 + $3 >= $4)}' && ok || { bad "device ZeRO-1 optimizer bytes"; grep "data parallel" "$tmp/zdev.log"; }
j=$(job zdevr 8 1)
sed -i "s|^train:|train:\n  optimizer: device|" "$j"
mpi 3 "$bin" train --config "$j" --quiet --stop-after 3 >"$tmp/log" 2>&1 || { bad "device ZeRO-1, first 3 steps"; cat "$tmp/log"; }
sed -i 's/optimizer: device/optimizer: host/; s/zero: 1/zero: 0/' "$j"
mpi 2 "$bin" train --config "$j" --quiet --resume auto >"$tmp/log" 2>&1 || { bad "device ZeRO-1 3 ranks -> host 2 ranks"; cat "$tmp/log"; }
close "$tmp/single" "$tmp/zdevr" "device ZeRO-1 on 3 ranks, resumed on 2 with the host optimizer"

# 3. resume on another rank count
j=$(job r21 8 1)
mpi 2 "$bin" train --config "$j" --quiet --stop-after 3 >"$tmp/log" 2>&1 || { bad "2 ranks, first 3 steps"; cat "$tmp/log"; }
sed -i 's/zero: 1/zero: 0/' "$j"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/log" || { bad "2 -> 1 resume"; cat "$tmp/log"; }
grep -q "resuming from .*step_00000003" "$tmp/log" && ok || bad "2 -> 1 did not resume at step 3"
close "$tmp/single" "$tmp/r21" "resume 2 -> 1"
j=$(job r12 8 0)
"$bin" train --config "$j" --quiet --stop-after 3 2>"$tmp/log" || { bad "1 rank, first 3 steps"; cat "$tmp/log"; }
sed -i 's/zero: 0/zero: 1/' "$j"
mpi 2 "$bin" train --config "$j" --quiet --resume auto >"$tmp/log" 2>&1 || { bad "1 -> 2 resume"; cat "$tmp/log"; }
grep -q "resuming from .*step_00000003" "$tmp/log" && ok || bad "1 -> 2 did not resume at step 3"
close "$tmp/single" "$tmp/r12" "resume 1 -> 2"

# 4. a dead rank, then a hanging one: the job ends in bounded time; --resume auto finishes it
for mode in die hang; do
  j=$(job "$mode" 8 0)
  fault="1:5"
  [ $mode = hang ] && fault="1:5:hang"
  s=$(date +%s)
  AUDISTILL_COMM_TIMEOUT=3 AUDISTILL_RANK_FAULT=$fault timeout 60 mpirun --oversubscribe \
    --allow-run-as-root -np 2 "$bin" train --config "$j" --quiet >"$tmp/log" 2>&1
  rc=$? took=$(($(date +%s) - s))
  echo "$mode: job ended with rc $rc after ${took}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -lt 30 ] && ok || { bad "$mode: rc $rc after ${took}s"; cat "$tmp/log"; }
  if [ $mode = die ]; then
    grep -q "exited on signal 9" "$tmp/log" && ok || { bad "die: no message naming the dead rank"; cat "$tmp/log"; }
  else
    grep -q "rank 0 of 2: allreduce has waited .* a rank died or hangs; ending the whole job" "$tmp/log" && ok || { bad "hang: no watchdog message"; cat "$tmp/log"; }
  fi
  [ ! -d "$tmp/$mode/final" ] && ok || bad "$mode: a failed job wrote final/"
  mpi 2 "$bin" train --config "$j" --quiet --resume auto >"$tmp/log" 2>&1 || { bad "$mode: resume failed"; cat "$tmp/log"; }
  grep -q "resuming from .*step_00000003" "$tmp/log" && ok || bad "$mode: did not resume at step 3"
  close "$tmp/single" "$tmp/$mode" "after a $mode rank, resumed"
done
# Quantization-aware training (a GPTQ student) over 2 ranks, plain and ZeRO-1, equals one process
# (the learned scales' gradients are summed like the weights'); the export stays exact.
cat >"$tmp/ptq.yaml" <<EOF
model: $fx/tiny_a
output: $tmp/ptq
calibration: {data: $tmp/set.h5, segments: 8, batch: 4, max_frames: 100}
quantize:
  decoder_linear: {bits: 3, group_size: 8, method: gptq}
  lm_head: {bits: 2, group_size: 8, symmetric: true, method: gptq}
EOF
"$bin" quantize --config "$tmp/ptq.yaml" >"$tmp/log" 2>&1 || { bad "quantize for QAT"; cat "$tmp/log"; }
qjob() { # name, zero
  printf 'student: %s/ptq\nteacher: %s/tiny_a\noutput: %s/%s\ndata: {train: %s/set.h5}\ntrain: {steps: 6, batch: 4, micro_batch: 2, lr: 2e-2, log_every: 1, checkpoint_every: 3, max_len: 64, max_frames: 100, zero: %s}\nqat: {scales: learned}\n' \
    "$tmp" "$fx" "$tmp" "$1" "$tmp" "$2" >"$tmp/$1.yaml"
  echo "$tmp/$1.yaml"
}
"$bin" train --config "$(qjob qat1 0)" --quiet >"$tmp/log" 2>&1 || { bad "QAT, one process"; cat "$tmp/log"; }
mpi 2 "$bin" train --config "$(qjob qat2 0)" --quiet >"$tmp/log" 2>&1 || { bad "QAT, 2 ranks"; cat "$tmp/log"; }
mpi 2 "$bin" train --config "$(qjob qatz 1)" --quiet >"$tmp/log" 2>&1 || { bad "QAT, 2 ranks ZeRO-1"; cat "$tmp/log"; }
for run in qat2 qatz; do
  paste <(losses "$tmp/qat1") <(losses "$tmp/$run") | awk -v t=$TOL_L '
    {d = $1 - $2; if (d < 0) d = -d; r = d / ($1 < 0 ? -$1 : $1); if (r > worst) worst = r; n++}
    END {exit !(n == 6 && worst <= t)}' && ok || { bad "$run: QAT losses differ from one process"; paste <(losses "$tmp/qat1") <(losses "$tmp/$run"); }
done
"$PY" "$AUDISTILL_SOURCE/tests/cli/qat_check.py" exported "$tmp/qatz/checkpoints/step_00000006" "$tmp/ptq" "$tmp/qatz/final" >"$tmp/log" 2>&1 && ok || { bad "QAT export over 2 ranks"; cat "$tmp/log"; }
ps -eo args | grep -q "[a]udistill train --config $tmp" && bad "ranks left running" || ok

awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {printf "wall: 1 process %.2f s, 2 ranks %.2f s, 2 ranks ZeRO-1 %.2f s (8 steps, incl. start-up)\n", b - a, c - b, d - c}'
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
