#!/usr/bin/env bash
# The main job on the embedded demo. Installs dependencies, builds audistill, and runs the
# path that exists so far: inspecting the real Qwen2-Audio-7B configuration and a tiny model
# saved by transformers. Later stages (synthetic data, pruning, distillation, quantization,
# scoring, the Pareto report) join this script as they land.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== the real Qwen2-Audio-7B, from its config alone"
./build/audistill inspect --config tests/fixtures/qwen2_audio_7b/config.json
echo
echo "== a tiny Qwen2-Audio saved by transformers (bf16, 3 shards)"
./build/audistill inspect tests/fixtures/inspect_tiny
