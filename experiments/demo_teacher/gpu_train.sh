#!/usr/bin/env bash
# Trains the demo teacher on a lent GPU machine in one call, within a time budget: unpacks the
# bundle (tests/gpu/bundle.sh --espeak), checks `audistill train` on the GPU against the CPU
# (tests/cli/train_cuda.sh; stops at once if it fails), makes the synthetic corpus (identical
# to the one here: synth is deterministic given its seed and sizes), prepares it with the
# teacher's tokenizer, times 40 steps, then trains as many steps as the remaining budget allows
# (cosine schedule over exactly those steps) and copies the final model (split in 15 MB parts)
# and the metrics to $OUT.
#   experiments/demo_teacher/gpu_train.sh BUNDLE.tar.xz TEACHER_INIT_DIR BUDGET_SECONDS
# Rehearsal without a GPU: TRAIN_DEVICE=cpu SYNTH_SIZES="--train 60 --dev 20 --eval 20" ...
# TASKS=de,zh,en adds English transcription (the multitask stage); SKIP_CHECK=1 skips the
# GPU-vs-CPU check; NO_DEV=1 prepares no dev set and evaluates nothing (short budgets).
# The sets always hold the English transcripts, which the job's CTC term spells (teacher-gpu.yaml,
# ctc.weight; CTC_WEIGHT=0 turns it off). TEACHER_INIT_DIR must have Whisper's sinusoidal
# position table (make_init.py writes it; set_positions.py repairs an older init).
set -uo pipefail
device=${TRAIN_DEVICE:-cuda}
tasks=${TASKS:-de,zh}
prep_langs=$tasks
[[ ,$tasks, == *,en,* ]] || prep_langs=$tasks,en
splits="train dev eval"
[[ ${NO_DEV:-0} == 1 ]] && splits=train
sizes=${SYNTH_SIZES:---train 6000 --dev 300 --eval 500}
bundle=$1 init=$2 budget=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
out=${OUT:-/tmp/gpu_train_out}
mkdir -p "$out"
work=/tmp/demo
rm -rf "$work" /tmp/audistill-prebuilt && mkdir -p "$work" /tmp/audistill-prebuilt
tar -C /tmp/audistill-prebuilt -xJf "$bundle" || { echo "FAILED: unpack"; exit 1; }
u=/tmp/audistill-prebuilt
src=$(cat "$u/srcdir")
[[ -e $src/tests/fixtures ]] || { mkdir -p "$(dirname "$src")" && ln -sfn "$root" "$src"; }
cublaslt=$(find /usr/local /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$u/lib:$(dirname "$cublaslt")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$u/bin:$PATH ESPEAK_DATA_PATH=$u/espeak
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

if [[ $device == cuda && ${SKIP_CHECK:-0} != 1 ]]; then
echo "== train on the GPU vs the CPU (t=$(elapsed)s)"
mkdir -p /tmp/tt
AUDISTILL_BIN=$u/bin/audistill AUDISTILL_FIXTURES=$root/tests/fixtures AUDISTILL_TEST_TMP=/tmp/tt \
    AUDISTILL_TINY_SET=$u/bin/tiny_set bash "$root/tests/cli/train_cuda.sh" 2>&1 | tee "$out/train_cuda.log"
[[ ${PIPESTATUS[0]} == 0 ]] || { echo "FAILED: train_cuda (not training the teacher)"; exit 1; }
fi

echo "== synth (t=$(elapsed)s)"
audistill synth --out "$work/synth" $sizes --talks 1 --jobs "$(nproc)" \
    >"$work/synth.log" 2>&1 || { tail "$work/synth.log"; echo "FAILED: synth"; exit 1; }
echo "== prepare (t=$(elapsed)s)"
for s in $splits; do
    audistill prepare --data "$work/synth" --split $s --tokenizer "$init" --n-mels 80 --langs "$prep_langs" \
        --out "$work/$s.h5" >"$work/prepare-$s.log" 2>&1 &
done
wait
for s in $splits; do [[ -s $work/$s.h5 ]] || { tail "$work/prepare-$s.log"; echo "FAILED: prepare $s"; exit 1; }; done
cp -r "$init" "$work/teacher-init"
# The job: tasks as the data languages; without a dev set no dev key and no evaluation.
sed -e "s|langs: \[de, zh\]|langs: [${tasks//,/, }]|" -e "s|weight: 0.3|weight: ${CTC_WEIGHT:-0.3}|" \
    "$root/experiments/demo_teacher/teacher-gpu.yaml" >"$work/job.yaml"
[[ ${NO_DEV:-0} == 1 ]] && sed -i -e "/dev: WORK/d" -e "s|eval_every: 500|eval_every: 0|" "$work/job.yaml"

echo "== timing probe: 40 steps (t=$(elapsed)s)"
sed -e "s|WORK|$work|g" -e "s|STEPS|40|" -e "s|eval_every: 500|eval_every: 0|" \
    -e "s|teacher-run|probe|" -e "s|device: cuda|device: $device|" "$work/job.yaml" >"$work/probe.yaml"
p0=$(date +%s.%N)
audistill train --config "$work/probe.yaml" --quiet 2>&1 | tail -3
p1=$(date +%s.%N)
per=$(python3 -c "print(($p1 - $p0) / 40)")
left=$((budget - $(elapsed) - 45))
steps=$(python3 -c "print(max(100, int($left / ($per * 1.12)) // 50 * 50))")
echo "about $per s/step (probe, start-up included); $left s left: $steps steps"

echo "== train the teacher (t=$(elapsed)s)"
sed -e "s|WORK|$work|g" -e "s|STEPS|$steps|" -e "s|device: cuda|device: $device|" "$work/job.yaml" >"$work/teacher.yaml"
cp "$work/teacher.yaml" "$out/"
limit=$((budget - $(elapsed) - 20))
((limit < 10)) && limit=10
timeout $limit audistill train --config "$work/teacher.yaml" >"$work/train.log" 2>&1
echo "train exit $? (t=$(elapsed)s)"
tr '\r' '\n' <"$work/train.log" | grep -v "^$" | tail -15
cp "$work/teacher-run/metrics.jsonl" "$out/" 2>/dev/null
model=$work/teacher-run/final
[[ -d $model ]] || model=$(ls -d "$work"/teacher-run/checkpoints/step_* 2>/dev/null | tail -1)
echo "model: $model"
if [[ -n $model ]]; then
    cp "$model/config.json" "$out/"
    split -b 15M -d "$model/model.safetensors" "$out/model.safetensors.part"
    sha256sum "$model/model.safetensors" | tee "$out/model.sha256"
fi
echo "done (t=$(elapsed)s)"
