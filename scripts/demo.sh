#!/usr/bin/env bash
# The main job on the embedded demo: installs dependencies, builds, and runs the whole
# compression path as one staged job (`audistill run`): synthetic speech, prepared sets,
# vocabulary + layer + FFN pruning, CE fine-tuning vs distillation of the pruned student,
# int8/int4 quantization, translation of the eval split in both directions, scores, sizes,
# and the report with the Pareto plot (out/demo/report/). An interrupted run continues where it
# stopped when started again.
#
# The job compresses the small trained teacher shipped in data/teacher (experiments/
# demo_teacher/ makes it). Without it (a checkout that dropped it), this runs the same path on
# the tiny random fixture model (configs/demo-smoke.yaml: plumbing only, BLEU near zero) and
# says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
# The demo runs on the CPU: the CUDA backend is left out of this build even where nvcc exists
# (README's build section builds it).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DAUDISTILL_CUDA=OFF >/dev/null
cmake --build build -j"$(nproc)"
bin=./build/audistill
printf '\n== the real Qwen2-Audio-7B, from its config alone\n'
$bin inspect --config tests/fixtures/qwen2_audio_7b/config.json
printf '\n== what a 32k-vocabulary, 24-layer, FFN-8192, int4 student would weigh\n'
$bin plan --config configs/plans/vocab32k-24layers-ffn8192-int4.yaml \
    --model-config tests/fixtures/qwen2_audio_7b/config.json | tail -1
if [[ -f data/teacher/model.safetensors ]]; then
    job=configs/demo.yaml
else
    job=configs/demo-smoke.yaml
    printf '\nnote: data/teacher is not shipped yet: running %s on the random tiny model\n' "$job"
fi
printf '\n== audistill run %s\n' "$job"
$bin run "$job"
report=$(sed -n 's/^  report: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$job" | sed "s|{work}|$(sed -n 's/^work_dir: *//p' "$job")|")
printf '\n== %s/report.md\n' "$report"
cat "$report/report.md"
