#!/usr/bin/env bash
# The test command (README, CI): installs dependencies, then builds and runs ctest three times —
# a Release build (with the CUDA backend compiled when nvcc is present; GPU tests skip without
# a GPU), the CUDA tests on the CPU emulator of tests/cuda_emu (when the CUDA headers are
# present; threads and blocks in launch order, then reversed) and an ASan+UBSan build — and
# finally runs each libFuzzer target for a bounded time.
#   AUDISTILL_FUZZ_SECONDS  seconds per fuzz target (default 60; 0 skips fuzzing)
#   AUDISTILL_JOBS          parallel build/test jobs (default: number of cores)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${AUDISTILL_JOBS:-$(nproc)}
fuzz_seconds=${AUDISTILL_FUZZ_SECONDS:-60}
start=$(date +%s)
section() { printf '\n== %s (%ds elapsed)\n' "$1" $(($(date +%s) - start)); }

section "dependencies"
bash scripts/install-deps.sh

section "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAUDISTILL_CUDA=AUTO >/dev/null
cmake --build build -j"$jobs"
section "release tests"
ctest --test-dir build --output-on-failure -j"$jobs"

section "CUDA emulator build (tests/cuda_emu: the CUDA backend's kernels on the CPU)"
emulate=OFF
if cmake -S . -B build-cuda-emu -DCMAKE_BUILD_TYPE=Release -DAUDISTILL_CUDA_EMULATOR=ON >/dev/null; then
  emulate=ON
  cmake --build build-cuda-emu -j"$jobs"
  section "CUDA tests on the emulator"
  ctest --test-dir build-cuda-emu --output-on-failure -j"$jobs" -R '^cuda_|^cli_.*_cuda'
  section "CUDA tests on the emulator, blocks and threads in reverse order, device memory page-protected from host code"
  AUDISTILL_CUDA_EMU_ORDER=reverse AUDISTILL_CUDA_EMU_HOST_CHECK=1 ctest --test-dir build-cuda-emu \
    --output-on-failure -j"$jobs" -R '^cuda_|^cli_.*_cuda'
else
  echo "skipped: the CUDA toolkit headers were not found (the emulator needs cuda_bf16.h)"
fi

section "sanitizer build (ASan + UBSan)"
# With the CUDA emulator where the CUDA headers are: ASan then watches the kernels' memory.
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DAUDISTILL_SANITIZE=ON -DAUDISTILL_CUDA=OFF \
  -DAUDISTILL_CUDA_EMULATOR=$emulate >/dev/null
cmake --build build-sanitize -j"$jobs"
section "sanitizer tests"
# Every test, the training runs on the emulator included (the sanitizer build is -O1).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-sanitize --output-on-failure -j"$jobs"


if [ "$fuzz_seconds" -gt 0 ]; then
  section "fuzzing (${fuzz_seconds}s per target)"
  bash scripts/fuzz.sh "$fuzz_seconds"
fi
section "all tests passed"
