#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a bounded time on a copy
# of its seed corpus. Fails on any crash, leak or sanitizer report.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${AUDISTILL_FUZZ_BUILD:-$root/build-fuzz}
CC=clang cmake -S "$root" -B "$build" -DAUDISTILL_FUZZ=ON -DAUDISTILL_SANITIZE=ON \
  -DAUDISTILL_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=(fuzz_safetensors_header fuzz_config fuzz_yaml_job)
cmake --build "$build" -j2 --target "${targets[@]}" >/dev/null
for t in "${targets[@]}"; do
  corpus_name=${t#fuzz_}
  work=$(mktemp -d)
  cp "$root/tests/fuzz/corpus/$corpus_name/"* "$work/"
  log="$build/$t.log"
  if ! "$build/tests/fuzz/$t" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
       -rss_limit_mb=2048 -artifact_prefix="$build/$t-" "$work" >"$log" 2>&1; then
    echo "fuzz: $t FAILED; last lines of $log:"
    tail -30 "$log"
    rm -rf "$work"
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  [ -z "$execs" ] && execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  echo "fuzz: $t ok, $execs executions in ${seconds}s"
  rm -rf "$work"
done
