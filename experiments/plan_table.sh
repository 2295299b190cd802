#!/usr/bin/env bash
# Sizes of the recipes in configs/plans on the real Qwen2-Audio-7B config, as a Markdown table.
#   bash experiments/plan_table.sh [path/to/audistill]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/audistill}
cfg=$root/tests/fixtures/qwen2_audio_7b/config.json
echo "| recipe (configs/plans) | parameters | bytes (weights) | GB | of bf16 |"
echo "| --- | ---: | ---: | ---: | ---: |"
for f in bf16 int8 int4 vocab32k-int4 vocab32k-24layers-int4 vocab32k-24layers-ffn8192-int4 vocab32k-24layers-ffn8192-int3; do
  out=$("$bin" plan --config "$root/configs/plans/$f.yaml" --model-config "$cfg")
  params=$(echo "$out" | awk '$1 == "total" {print $3}')
  bytes=$(echo "$out" | awk '$1 == "total" {print $4}')
  pct=$(echo "$out" | sed -n 's/.*GB of weights, \([0-9.]*%\).*/\1/p')
  awk -v f="$f" -v p="$params" -v b="$bytes" -v pct="$pct" \
    'BEGIN {printf "| %s | %s | %s | %.2f | %s |\n", f, p, b, b / 1e9, pct}'
done
