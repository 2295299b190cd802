#!/usr/bin/env bash
# BLEU and chrF of every evaluated model against the teacher's own output (the run's
# eval/teacher/hyp.*), beside the scores against the references that the report shows: with a
# teacher that does not translate (the demo teacher, see experiments/demo_teacher), this is the
# measure of what a compressed model keeps of its teacher.
#   experiments/qat/fidelity.sh [AUDISTILL] [EVAL_DIR]
set -euo pipefail
bin=${1:-build/audistill}
eval_dir=${2:-out/qat/eval}
printf '| model | de BLEU vs teacher | de chrF vs teacher | zh BLEU vs teacher | zh chrF vs teacher |\n|---|---:|---:|---:|---:|\n'
for dir in "$eval_dir"/*/; do
  m=$(basename "$dir")
  [ "$m" = teacher ] && continue
  row="| $m"
  for lang in de zh; do
    json=$("$bin" score --hyp "$dir/hyp.$lang" --ref "$eval_dir/teacher/hyp.$lang" --lang "$lang" --json)
    row="$row | $(printf '%s' "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f | %.2f" % (d["bleu"], d["chrf"]))')"
  done
  echo "$row |"
done
