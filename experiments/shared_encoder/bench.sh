#!/usr/bin/env bash
# One distillation step with the teacher running its own audio encoder against the teacher
# taking the student's (distill.share_encoder), side by side: the shipped demo teacher
# (data/teacher: encoder d128 x 3, decoder h256 x 4), a student pruned from it to 2 decoder
# layers (the encoder untouched, so equal), the encoder frozen (train.trainable:
# no_audio_encoder), batches of 8 clips of 10 s with 40 target tokens, `audistill train
# --benchmark` (median ms/step), alternating the two settings ROUNDS times; and the op profile's
# encoder calls of each.
#   experiments/shared_encoder/bench.sh [OUT_DIR]          (from the repository root)
# Environment: AUDISTILL (binary, default build/audistill), TINY_SET (default
# build/tests/tiny_set), STEPS (timed steps per run, default 5), ROUNDS (default 3), THREADS
# (default 2), DEVICE (cpu or cuda, default cpu).
set -euo pipefail
bin=${AUDISTILL:-build/audistill}
tiny_set=${TINY_SET:-build/tests/tiny_set}
out=${1:-out/shared_encoder}
steps=${STEPS:-5} rounds=${ROUNDS:-3} threads=${THREADS:-2} device=${DEVICE:-cpu}
[ -f data/teacher/model.safetensors ] || { echo "data/teacher is missing (run from the repository root)"; exit 1; }
mkdir -p "$out"
printf 'teacher: data/teacher\noutput: %s/student\nprune:\n  drop_decoder_layers: [1, 2]\n' "$out" >"$out/prune.yaml"
[ -d "$out/student" ] || "$bin" prune --config "$out/prune.yaml" >"$out/prune.log" 2>&1
[ -f "$out/set.h5" ] || "$tiny_set" "$out/set.h5" 16 80 2040 7 --frames 1000 --targets 40
for share in true false; do
  cat >"$out/share-$share.yaml" <<EOF
student: $out/student
teacher: data/teacher
output: $out/run-$share
data: {train: $out/set.h5}
train: {device: $device, threads: $threads, trainable: no_audio_encoder, steps: 100, batch: 8, micro_batch: 8, lr: 1e-4, warmup: 0, log_every: 1, max_len: 320, max_frames: 1000}
distill: {alpha: 0.5, temperature: 2.0, share_encoder: $share}
EOF
done
echo "round,share_encoder,ms_per_step" >"$out/times.csv"
for round in $(seq "$rounds"); do
  for share in false true; do
    rm -rf "$out/run-$share"
    line=$("$bin" train --config "$out/share-$share.yaml" --benchmark "$steps" 2>"$out/share-$share.log")
    ms=$(echo "$line" | sed -nE 's/.* ([0-9.]+) ms\/step.*/\1/p')
    echo "$round,$share,$ms" | tee -a "$out/times.csv"
  done
done
for share in false true; do
  rm -rf "$out/run-$share"
  AUDISTILL_PROFILE=1 "$bin" train --config "$out/share-$share.yaml" --benchmark 3 >/dev/null 2>"$out/profile-$share.log"
  echo "share_encoder $share: $(grep -E '^conv1d audio_tower\.conv1\.weight ' "$out/profile-$share.log" | awk '{print $3}') conv1 calls in the 2 profiled steps (the warm-up left out)"
done
python3 - "$out/times.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
med = {s: statistics.median(float(r["ms_per_step"]) for r in rows if r["share_encoder"] == s) for s in ("false", "true")}
print(f"median ms/step: separate encoders {med['false']:.1f}, shared {med['true']:.1f} "
      f"({100 * (1 - med['true'] / med['false']):.1f}% less)")
PY
