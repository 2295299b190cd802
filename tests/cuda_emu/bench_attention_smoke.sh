#!/usr/bin/env bash
# tests/gpu/check.sh's attention benchmark on the CUDA emulator at tiny shapes (causal with
# grouped-query heads, and bidirectional; the flash kernels and the batched GEMMs): it must
# run, take the path it was asked for on every call (one warm-up and ITERS timed, forward and
# backward), and print positive, finite times; a decoding step (forward only) under auto takes
# the kernels (neither the flash kernels nor the GEMMs). The numbers themselves mean nothing here.
# Usage: bench_attention_smoke.sh BENCH_ATTENTION
set -uo pipefail
bench=$1
status=0
check() { # expected-path args...
  local want=$1 out
  shift
  if ! out=$("$bench" "$@" 2>&1); then
    echo "$out"; echo "FAIL: bench_attention $*"; status=1; return
  fi
  echo "$out"
  python3 - "$want" "$out" <<'PY' || { echo "FAIL: bench_attention $*: output"; status=1; }
import json, math, sys
want, r = sys.argv[1], json.loads(sys.argv[2])
iters = 2
calls = (1 if r["decode"] else 2) * (iters + 1)  # forward (and backward): a warm-up, ITERS timed
if want == "kernel":
    ok = r["flash_calls"] == 0 and r["gemm_calls"] == 0
else:
    ok = r[f"{want}_calls"] == calls and r["gemm_calls" if want == "flash" else "flash_calls"] == 0
keys = ("forward_ms", "forward_tflops", "forward_gbs")
if not r["decode"]:
    keys += ("backward_ms", "backward_tflops")
for key in keys:
    ok = ok and math.isfinite(r[key]) and r[key] > 0
sys.exit(not ok)
PY
}
check flash 2 4 2 40 16 causal 2 flash
check gemm 2 4 2 40 16 causal 2 gemm
check flash 2 2 2 70 32 bidirectional 2 flash
check kernel 3 4 2 70 128 decode 2 auto
check flash 3 4 2 70 128 decode 2 flash
# bad arguments are refused with a message, not a crash
for bad in "2 4 3 40 16 causal 2 flash" "2 4 2 40 16 sideways 2" "2 4 2 40 16 decoder 2" "2 4 2 40 16 causal 2 kernel" "0 4 2 40 16 causal 2"; do
  if "$bench" $bad >/dev/null 2>&1; then echo "FAIL: bench_attention accepted: $bad"; status=1; fi
done
[ $status = 0 ] && echo "bench_attention smoke: ok"
exit $status
