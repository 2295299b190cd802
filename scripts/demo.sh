#!/usr/bin/env bash
# The main job on the embedded demo, as far as it exists: installs dependencies, builds, and
# runs the whole path on a tiny Qwen2-Audio model (tests/fixtures/tiny_b, random weights, 1 s
# audio window) and a small synthetic corpus: inspect -> plan (real 7B config) -> synth ->
# prepare -> prune -> distill -> quantize (GPTQ int4) -> size -> translate -> score. The small
# teacher that really translates (and the report and Pareto plot) join with the demo issue.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
bin=./build/audistill
out=out/demo
rm -rf "$out" && mkdir -p "$out"
step() { printf '\n== %s\n' "$1"; }
step "the real Qwen2-Audio-7B, from its config alone"
$bin inspect --config tests/fixtures/qwen2_audio_7b/config.json
step "what a 32k-vocabulary, 24-layer, FFN-8192, int4 student would weigh"
$bin plan --config configs/plans/vocab32k-24layers-ffn8192-int4.yaml --model-config tests/fixtures/qwen2_audio_7b/config.json | tail -1
step "synthetic speech-translation corpus (espeak-ng)"
$bin synth --out "$out/synth" --train 200 --dev 40 --eval 40 --talks 1
step "prepared sets (log-mel + token ids)"
for split in train dev eval; do
  $bin prepare --data "$out/synth" --split "$split" --tokenizer tests/fixtures/tiny_b --out "$out/$split.h5"
done
step "prune the tiny teacher (a layer dropped, FFN by importance)"
$bin prune --config configs/examples/prune.yaml
step "distil the student from the teacher (KL + CE)"
$bin train --config configs/examples/distill.yaml --resume auto
step "quantize the student (decoder and LM head GPTQ int4, embeddings int8)"
$bin quantize --config configs/examples/quantize.yaml
step "what each model weighs"
for m in tests/fixtures/tiny_b "$out/run/final" "$out/student-int4"; do
  printf '%s: ' "$m"; $bin size "$m" | tail -1
done
step "translate the eval split and score it (random tiny weights: expect near-zero BLEU)"
ls "$out"/synth/eval/segmented_wavs/gold/*.wav | sort -V | head -20 >"$out/eval.list"
$bin translate --model "$out/run/final" --lang de --list "$out/eval.list" >"$out/eval.de"
head -20 "$out/synth/eval/text/txt/ACL.6060.eval.en-xx.de.txt" >"$out/eval.ref.de"
$bin score --hyp "$out/eval.de" --ref "$out/eval.ref.de" --lang de
$bin translate --model "$out/student-int4" --lang de --list "$out/eval.list" >"$out/eval.int4.de"
$bin score --hyp "$out/eval.int4.de" --ref "$out/eval.ref.de" --lang de
