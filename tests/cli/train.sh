#!/usr/bin/env bash
# audistill train on the tiny models (random prepared sets, no espeak needed):
# 1. exact resume: 6 steps straight == 3 steps, stop, resume, 3 steps (weights, optimizer state
#    and every per-step loss bit-identical); the optimizer as backend ops (optimizer: device)
#    takes the same steps bit for bit, straight, resumed and moved between host and backend
#    at a checkpoint, with clipping active; a bf16 final model is the f32 one rounded to bf16;
#    activation recomputation (recompute: true) takes the same steps bit for bit;
# 2. crash safety: killed (SIGKILL) at every point of a checkpoint write, the previous
#    checkpoint still loads and resuming reaches the same result;
# 3. learning: a pruned student distilled from the tiny teacher cuts its KL by >= 90%; its
#    frozen audio encoder, equal to the teacher's, is run once for both (distill.share_encoder);
# 4. bad jobs fail before any work; TensorBoard reads the event file (when installed).
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/train.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }

job() { # output dir, steps -> job file path
  cat >"$tmp/$1.yaml" <<EOF
student: $fx/tiny_a
output: $tmp/$1
data:
  train: $tmp/set.h5
  dev: $tmp/set.h5
train:
  steps: $2
  batch: 4
  micro_batch: 2
  lr: 5e-3
  warmup: 2
  log_every: 1
  eval_every: 3
  eval_segments: 2
  checkpoint_every: 3
  max_len: 64
  max_frames: 100
EOF
  echo "$tmp/$1.yaml"
}
losses() { grep -o '"train/loss": [^,]*' "$1/metrics.jsonl"; }

# 1. exact resume
"$bin" train --config "$(job straight 6)" --quiet 2>"$tmp/err" || { bad "straight run failed"; cat "$tmp/err"; }
j=$(job resumed 6)
sed -i "s|output: .*|output: $tmp/resumed|" "$j"
"$bin" train --config "$j" --quiet --stop-after 3 2>"$tmp/err" || { bad "first half failed"; cat "$tmp/err"; }
[ ! -d "$tmp/resumed/final" ] && ok || bad "a stopped run must not write final/"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume failed"; cat "$tmp/err"; }
cmp -s "$tmp/straight/final/model.safetensors" "$tmp/resumed/final/model.safetensors" && ok || bad "resumed weights differ"
cmp -s "$tmp/straight/checkpoints/step_00000006/optimizer.safetensors" "$tmp/resumed/checkpoints/step_00000006/optimizer.safetensors" && ok || bad "resumed optimizer state differs"
grep -q "dev/bleu" "$tmp/straight/metrics.jsonl" && ok || bad "dev evaluation has no greedy BLEU"
[ "$(losses "$tmp/straight")" = "$(losses "$tmp/resumed")" ] && [ "$(losses "$tmp/straight" | wc -l)" -eq 6 ] && ok || bad "per-step losses differ"
# AUDISTILL_PROFILE=1: the op table printed at the end, the run's results unchanged.
AUDISTILL_PROFILE=1 "$bin" train --config "$(job profiled 6)" --quiet 2>"$tmp/profile6.err" || { bad "profiled run failed"; cat "$tmp/profile6.err"; }
grep -q "^op profile (cpu backend)" "$tmp/profile6.err" && grep -qE "^linear_backward language_model\.model\.layers\.#\.mlp\.down_proj\.weight +[0-9]+" "$tmp/profile6.err" && ok || { bad "no op profile"; cat "$tmp/profile6.err"; }
# attention timed per kind: the encoder's (bidirectional) apart from the decoder's (causal)
hd=$(python3 -c "import json; c = json.load(open('$fx/tiny_a/config.json')); t = c['text_config']; print(t.get('head_dim', t['hidden_size'] // t['num_attention_heads']), c['audio_config']['d_model'] // c['audio_config']['encoder_attention_heads'])")
grep -qE "^attention \(causal, head dim ${hd% *}\) +[0-9]+" "$tmp/profile6.err" && grep -qE "^attention_backward \(head dim ${hd#* }\) +[0-9]+" "$tmp/profile6.err" && ok || { bad "attention rows per kind ($hd)"; grep attention "$tmp/profile6.err"; }
cmp -s "$tmp/straight/final/model.safetensors" "$tmp/profiled/final/model.safetensors" && ok || bad "profiling changed the weights"
# --benchmark N: N timed steps, a summary line, no checkpoint, no final model, no dev evaluation
"$bin" train --config "$(job bench 6)" --benchmark 3 >"$tmp/bench.out" 2>"$tmp/err" || { bad "--benchmark failed"; cat "$tmp/err"; }
grep -qE "^benchmark: 3 steps on cpu, median [0-9.]+ ms/step after the first \([0-9.]+ ms\), [0-9]+ supervised tokens/s, [0-9.e+-]+ GFLOP per step in the table's ops, [0-9.e+-]+ TFLOP/s" "$tmp/bench.out" &&
  [ ! -e "$tmp/bench/checkpoints" ] && [ ! -e "$tmp/bench/final" ] && ! grep -q dev/loss "$tmp/bench/metrics.jsonl" && ok || { bad "--benchmark output"; cat "$tmp/bench.out"; ls "$tmp/bench"; }
# profiled, the benchmark's warm-up step stays out of the table: 2 steps' backward GEMMs of 6
calls() { sed -nE 's/^linear_backward language_model\.model\.layers\.#\.mlp\.down_proj\.weight +([0-9]+) .*/\1/p' "$1"; }
AUDISTILL_PROFILE=1 "$bin" train --config "$(job bench3 6)" --benchmark 3 >/dev/null 2>"$tmp/err" || { bad "profiled --benchmark failed"; cat "$tmp/err"; }
[ -n "$(calls "$tmp/err")" ] && [ $(($(calls "$tmp/err") * 3)) -eq "$(calls "$tmp/profile6.err")" ] && ok || bad "profiled --benchmark 3: $(calls "$tmp/err") backward calls, 6 steps made $(calls "$tmp/profile6.err")"
# mfu_ok FILE PEAK: the summary's MFU is 100 x its TFLOP/s / PEAK (to the printed digits)
mfu_ok() {
  awk -v p="$2" '{for (i = 1; i < NF; i++) { if ($(i + 1) == "TFLOP/s," && $i ~ /^[0-9.e+-]+$/) t = $i; if ($i == "MFU") m = $(i + 1) }}
    END { sub("%", "", m); d = m - 100 * t / p; exit !(t > 0 && m > 0 && d * d <= (0.006 * m + 0.06) ^ 2) }' "$1"
}
# the MFU over a peak given by AUDISTILL_PEAK_TFLOPS (the CPU has none of its own: no MFU above)
! grep -q MFU "$tmp/bench.out" && AUDISTILL_PEAK_TFLOPS=0.004 "$bin" train --config "$(job bench 6)" --benchmark 3 >"$tmp/mfu.out" 2>"$tmp/err" &&
  grep -q "MFU [0-9.]*% of cpu (0.004 TFLOP/s dense bf16)" "$tmp/mfu.out" && mfu_ok "$tmp/mfu.out" 0.004 && ok || { bad "--benchmark MFU"; cat "$tmp/bench.out" "$tmp/mfu.out" "$tmp/err"; }
AUDISTILL_PEAK_TFLOPS=fast "$bin" train --config "$(job bench 6)" --benchmark 3 >/dev/null 2>"$tmp/err"
[ $? -ne 0 ] && grep -q "AUDISTILL_PEAK_TFLOPS=fast: expected" "$tmp/err" && ! grep -q "^step" "$tmp/err" && ok || { bad "a malformed AUDISTILL_PEAK_TFLOPS must fail before the steps"; cat "$tmp/err"; }
"$bin" train --config "$(job bench 6)" --benchmark 3 --resume auto >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "not with --resume" "$tmp/err" && ok || bad "--benchmark with --resume must be refused"
# Activation recomputation: the same run bit for bit, and the memory plan counts less
j=$(job recompute 6)
sed -i "s|^train:|train:\n  recompute: true|" "$j"
"$bin" train --config "$j" --quiet 2>"$tmp/err" || { bad "recompute run failed"; cat "$tmp/err"; }
cmp -s "$tmp/straight/final/model.safetensors" "$tmp/recompute/final/model.safetensors" && [ "$(losses "$tmp/straight")" = "$(losses "$tmp/recompute")" ] && ok || bad "recompute changed the weights or losses"

# 1b. the optimizer as backend ops == the host optimizer, bit for bit (clip 0.5: the gradient
# norms of these steps are above it, so the scale op runs too)
for name in host device; do
  j=$(job "opt_$name" 6)
  sed -i "s|^train:|train:\n  clip: 0.5\n  optimizer: $name|" "$j"
  "$bin" train --config "$j" --quiet 2>"$tmp/err" || { bad "optimizer $name run failed"; cat "$tmp/err"; }
done
j=$(job opt_device_resumed 6)
sed -i "s|^train:|train:\n  clip: 0.5\n  optimizer: device|" "$j"
"$bin" train --config "$j" --quiet --stop-after 3 2>"$tmp/err" && "$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "device optimizer resume failed"; cat "$tmp/err"; }
awk -F'"train/grad_norm": ' 'NF > 1 { split($2, a, ","); if (a[1] + 0 > 0.5) n++ } END { exit !(n >= 3) }' "$tmp/opt_host/metrics.jsonl" && ok || bad "the gradient norms do not exceed clip 0.5: clipping untested"
# The optimizer may move at a checkpoint (host for steps 1-3, device after): same bits.
j=$(job opt_moved 6)
sed -i "s|^train:|train:\n  clip: 0.5\n  optimizer: host|" "$j"
"$bin" train --config "$j" --quiet --stop-after 3 2>"$tmp/err" || { bad "host optimizer first half failed"; cat "$tmp/err"; }
sed -i "s|optimizer: host|optimizer: device|" "$j"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume with the optimizer moved to the backend failed"; cat "$tmp/err"; }
for run in opt_device opt_device_resumed opt_moved; do
  cmp -s "$tmp/opt_host/final/model.safetensors" "$tmp/$run/final/model.safetensors" && ok || bad "$run: weights differ from the host optimizer's"
  for s in 3 6; do
    cmp -s "$tmp/opt_host/checkpoints/step_0000000$s/optimizer.safetensors" "$tmp/$run/checkpoints/step_0000000$s/optimizer.safetensors" && ok || bad "$run: step-$s moments differ from the host optimizer's"
  done
  [ "$(losses "$tmp/opt_host")" = "$(losses "$tmp/$run")" ] && ok || bad "$run: per-step losses differ from the host optimizer's"
done
cmp -s "$tmp/straight/final/model.safetensors" "$tmp/opt_host/final/model.safetensors" && bad "clip 0.5 changed nothing" || ok

# 1c. output_dtype: bf16 stores the same final weights rounded to bf16 (nearest even, computed
# here independently from the f32 run's final model); checkpoints stay f32.
j=$(job half 6)
sed -i "s|^output: .*|output: $tmp/half\noutput_dtype: bf16|" "$j"
"$bin" train --config "$j" --quiet 2>"$tmp/err" || { bad "output_dtype bf16 run failed"; cat "$tmp/err"; }
python3 "$AUDISTILL_SOURCE/tests/cli/bf16_rounding.py" "$tmp/straight/final/model.safetensors" "$tmp/half/final/model.safetensors" "$tmp/half/checkpoints/step_00000006/model.safetensors" >/dev/null && ok || bad "output_dtype bf16: not the f32 weights rounded to bf16 (or checkpoints not f32)"

# 2. crash safety at every fault point of the step-6 checkpoint write
for point in after_model after_optimizer after_state before_rename after_rename after_latest; do
  j=$(job "crash_$point" 6)
  "$bin" train --config "$j" --quiet --stop-after 3 2>/dev/null || bad "$point: first half"
  AUDISTILL_FAULT_AT=$point "$bin" train --config "$j" --quiet --resume auto 2>/dev/null
  rc=$?
  [ $rc -eq 137 ] && ok || bad "$point: expected the process to be killed (rc $rc)"
  "$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "$point: resume after the crash failed"; cat "$tmp/err"; }
  cmp -s "$tmp/straight/final/model.safetensors" "$tmp/crash_$point/final/model.safetensors" && ok || bad "$point: result differs"
done

# A damaged checkpoint is refused by name, and auto-resume falls back to an intact one.
j=$(job damaged 6)
"$bin" train --config "$j" --quiet 2>/dev/null
printf 'X' | dd of="$tmp/damaged/checkpoints/step_00000006/model.safetensors" bs=1 seek=200 conv=notrunc 2>/dev/null
"$bin" train --config "$j" --quiet --resume "$tmp/damaged/checkpoints/step_00000006" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "CRC-32" "$tmp/err" && ok || { bad "corrupt checkpoint: rc $rc"; cat "$tmp/err"; }
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" && grep -q "step_00000003" "$tmp/err" && ok || { bad "auto-resume did not fall back to step 3"; cat "$tmp/err"; }
sed -i 's/lr: 5e-3/lr: 1e-3/' "$j"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "train.lr (checkpoint: 5e-3, job: 1e-3)" "$tmp/err" && ok || { bad "changed config must be refused (rc $rc)"; cat "$tmp/err"; }

# 3. learning: KL of a pruned student to its teacher falls by >= 90%
"$AUDISTILL_TINY_SET" "$tmp/set4.h5" 4 16 280 2
printf 'teacher: %s/tiny_a\noutput: %s/student\nprune:\n  drop_decoder_layers: [1]\n' "$fx" "$tmp" >"$tmp/prune.yaml"
"$bin" prune --config "$tmp/prune.yaml" >/dev/null 2>&1 || bad "prune for the student"
cat >"$tmp/kd.yaml" <<EOF
student: $tmp/student
teacher: $fx/tiny_a
output: $tmp/kd
data: {train: $tmp/set4.h5}
train: {steps: 150, batch: 8, micro_batch: 8, lr: 3e-3, warmup: 5, weight_decay: 0, log_every: 1, checkpoint_every: 1000, max_len: 64, max_frames: 100}
distill: {alpha: 1.0, temperature: 1.0}
EOF
"$bin" train --config "$tmp/kd.yaml" --quiet 2>"$tmp/err" || { bad "distillation failed"; cat "$tmp/err"; }
first=$(grep -o '"train/kl": [^,]*' "$tmp/kd/metrics.jsonl" | head -1 | awk '{print $2}')
last=$(grep -o '"train/kl": [^,]*' "$tmp/kd/metrics.jsonl" | tail -1 | awk '{print $2}')
awk -v a="$first" -v b="$last" 'BEGIN {exit !(b <= 0.1 * a)}' && ok || bad "KL went from $first to $last (not cut by 90%)"
echo "distillation: KL $first -> $last"

# The teacher reuses the pruned student's frozen audio encoder (equal to its own): the same run
# bit for bit as with distill.share_encoder false, with half the encoder forwards (the op
# profile's conv1 calls: 12 against 24 for 6 steps of 2 micro-batches).
share_job() { # name, trainable, share_encoder, student -> job file
  cat >"$tmp/$1.yaml" <<EOF
student: $4
teacher: $fx/tiny_a
output: $tmp/$1
data: {train: $tmp/set4.h5}
train: {steps: 6, batch: 4, micro_batch: 2, lr: 3e-3, warmup: 2, log_every: 1, checkpoint_every: 1000, max_len: 64, max_frames: 100, trainable: $2}
distill: {alpha: 0.5, temperature: 2.0, share_encoder: $3}
EOF
  echo "$tmp/$1.yaml"
}
conv1_calls() { grep -E "^conv1d audio_tower\.conv1\.weight " "$1" | awk '{print $3}'; }
for s in true false; do
  AUDISTILL_PROFILE=1 "$bin" train --config "$(share_job share_$s no_audio_encoder $s "$tmp/student")" 2>"$tmp/share_$s.err" >/dev/null || { bad "distillation with share_encoder $s failed"; cat "$tmp/share_$s.err"; }
done
grep -qE "the teacher reuses the student's audio encoder output \(every audio encoder weight is equal; distill.share_encoder\): [0-9.]+ MiB fewer teacher activations" "$tmp/share_true.err" &&
  ! grep -q ": 0.0 MiB fewer teacher activations" "$tmp/share_true.err" && ok || { bad "the equal frozen encoder was not shared (or the teacher kept its encoder activations)"; cat "$tmp/share_true.err"; }
! grep -q "reuses the student's audio encoder" "$tmp/share_false.err" && ok || bad "share_encoder: false still shared"
cmp -s "$tmp/share_true/final/model.safetensors" "$tmp/share_false/final/model.safetensors" && [ "$(grep -o '"train/[a-z]*": [^,]*' "$tmp/share_true/metrics.jsonl")" = "$(grep -o '"train/[a-z]*": [^,]*' "$tmp/share_false/metrics.jsonl")" ] && ok || bad "a shared encoder changed the run (final weights or per-step losses differ)"
[ "$(conv1_calls "$tmp/share_true.err")" = 12 ] && [ "$(conv1_calls "$tmp/share_false.err")" = 24 ] && ok || bad "encoder forwards: $(conv1_calls "$tmp/share_true.err") shared, $(conv1_calls "$tmp/share_false.err") not (want 12, 24)"
# not shared: the student's encoder trains, or one of its weights differs in one bit
"$bin" train --config "$(share_job share_trains all true "$tmp/student")" --quiet 2>"$tmp/err" >/dev/null
grep -q "the teacher runs its own audio encoder: the student's trains" "$tmp/err" && ok || { bad "a training encoder must not be shared"; cat "$tmp/err"; }
cp -r "$tmp/student" "$tmp/student_enc"
python3 - "$tmp/student_enc/model.safetensors" <<'PY' || bad "cannot edit the student's encoder"
import json, struct, sys
with open(sys.argv[1], "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    start = json.loads(f.read(n))["audio_tower.layers.0.fc2.bias"]["data_offsets"][0]
    f.seek(8 + n + start)
    b = f.read(1)
    f.seek(8 + n + start)
    f.write(bytes([b[0] ^ 1]))
PY
"$bin" train --config "$(share_job share_differs no_audio_encoder true "$tmp/student_enc")" --quiet 2>"$tmp/err" >/dev/null
grep -q "the teacher runs its own audio encoder: the student's is not the same (audio_tower.layers.0.fc2.bias differs)" "$tmp/err" && ok || { bad "an encoder differing in one weight must not be shared"; cat "$tmp/err"; }
printf 'teacher: %s/tiny_a\noutput: %s/student_enc_pruned\nprune:\n  drop_decoder_layers: [1]\n  drop_encoder_layers: [1]\n' "$fx" "$tmp" >"$tmp/prune_enc.yaml"
"$bin" prune --config "$tmp/prune_enc.yaml" >/dev/null 2>&1 || bad "prune of an encoder layer"
"$bin" train --config "$(share_job share_pruned no_audio_encoder true "$tmp/student_enc_pruned")" --quiet 2>"$tmp/err" >/dev/null
grep -q "the teacher runs its own audio encoder: the student's is not the same (the audio encoders' configs differ)" "$tmp/err" && ok || { bad "a pruned encoder must not be shared"; cat "$tmp/err"; }

# 4. bad jobs fail clearly before work
refuse() { # job text, expected message
  printf '%b' "$1" >"$tmp/bad.yaml"
  "$bin" train --config "$tmp/bad.yaml" --quiet >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q "$2" "$tmp/err" && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
}
base="student: $fx/tiny_a\noutput: $tmp/bad\ndata:\n  train: $tmp/set.h5\n"
refuse "${base}train:\n  stpes: 3\n" "unknown key 'stpes' in train"
refuse "${base}train:\n  steps: three\n" "train.steps: expected an integer"
refuse "student: $fx/tiny_a\noutput: $tmp/bad\ndata:\n  train: $tmp/missing.h5\n" "missing.h5 does not exist"
refuse "${base}teacher: $fx/tiny_b_missing\n" "is not a model directory"
refuse "${base}train:\n  batch: 3\n  micro_batch: 2\n" "not a multiple of train.micro_batch"
refuse "${base}train:\n  max_len: 10\n  max_frames: 100\n" "train.max_len is 10 but segment"
refuse "${base}train:\n  optimizer: gpu\n" "train.optimizer"
refuse "${base}train:\n  precision: bf16\n  max_len: 64\n  max_frames: 100\n" "train.precision: bf16 needs bf16 GEMMs, which the cpu backend does not have"
refuse "${base}train:\n  attention: flash\n  max_len: 64\n  max_frames: 100\n" "train.attention: flash needs train.device: cuda"
refuse "${base}train:\n  attention: fast\n" "train.attention"
refuse "${base}train:\n  gemm_tuning: true\n  max_len: 64\n  max_frames: 100\n" "train.gemm_tuning: true needs train.device: cuda"
# A student with a trimmed vocabulary cannot be distilled from the full-vocabulary teacher.
printf 'teacher: %s/tiny_a\noutput: %s/small_vocab\ncalibration:\n  data: %s/set.h5\n  max_frames: 100\nprune:\n  vocab: 270\n' "$fx" "$tmp" "$tmp" >"$tmp/vocab.yaml"
"$bin" prune --config "$tmp/vocab.yaml" >/dev/null 2>&1 || bad "vocabulary pruning for the mismatch test"
refuse "student: $tmp/small_vocab\nteacher: $fx/tiny_a\noutput: $tmp/bad\ndata:\n  train: $tmp/set.h5\n" "distillation needs the same vocabulary"
[ ! -d "$tmp/bad/checkpoints" ] && ok || bad "a refused job wrote checkpoints"

# The memory plan needs only config.json files: the real 7B teacher's published parameter count,
# and a 24-layer student's (32 layers of 202.4 M parameters each minus 8).
src=${AUDISTILL_SOURCE:-$(dirname "$0")/../..}
(cd "$src" && "$bin" train --config experiments/memory_plan/job.yaml --plan-memory --gpu-gib 79) >"$tmp/plan" 2>&1 || { bad "--plan-memory failed"; cat "$tmp/plan"; }
grep -q "teacher tests/fixtures/qwen2_audio_7b (8.397 B parameters)" "$tmp/plan" && grep -q "student-24l (6.778 B" "$tmp/plan" && grep -q "does not fit a 79 GiB GPU" "$tmp/plan" && ok || { bad "memory plan"; cat "$tmp/plan"; }
# The frozen student encoder has the teacher's shape: the plan also gives the teacher's
# activations when it takes the student's encoder output (distill.share_encoder), less by its
# encoder's buffers at fp32: features, time-major features and conv1 input (3 x C x 128 x T),
# conv1's output and conv2's input (2 x C x T x d), conv2's output and the stream (2 x C x n1 x
# d), pooled and encoder output (2 x C x n1/2 x d), and one layer's record (C x n1 x (4 d + 4 A
# + 2 F)): C 8 clips, T 1000 frames, n1 500, d = A 1280, F 5120.
python3 - "$tmp/plan" <<'PY' && ok || { bad "the plan's teacher activations with a shared encoder"; cat "$tmp/plan"; }
import re, sys
text = open(sys.argv[1]).read()
own = float(re.search(r"teacher activations \(one layer reused\) +([0-9.]+) GiB", text)[1])
shared = float(re.search(r"with the student's encoder output +([0-9.]+) GiB", text)[1])
C, T, n1, d, F = 8, 1000, 500, 1280, 5120
floats = 3 * C * 128 * T + 2 * C * T * d + 2 * C * n1 * d + 2 * C * (n1 // 2) * d + C * n1 * (8 * d + 2 * F)
want = 4 * floats / 2**30
print(f"plan: teacher activations {own:.2f} GiB, {shared:.2f} with the student's encoder output (want -{want:.3f})")
sys.exit(not abs(own - shared - want) <= 0.011)
PY

# ZeRO-1 over 8 ranks with the optimizer on the GPUs and precision: bf16 (the teacher in bf16),
# the 7B teacher and a 24-layer student: the moments divide by 8; at micro-batch 10 the job as it
# runs does not fit a 79 GiB GPU, with activation recomputation it does (at micro-batch 8 its
# activations under a third); the bf16 design fits at micro-batch 4
plan() { # file, extra train keys, micro-batch
  sed "s/^train:/train:\n  zero: 1\n  optimizer: device\n  precision: bf16$2/; s/micro_batch: 8/micro_batch: $3/" "$src/experiments/memory_plan/job.yaml" >"$tmp/plan.yaml"
  (cd "$src" && "$bin" train --config "$tmp/plan.yaml" --plan-memory --gpu-gib 79 --ranks 8) >"$1" 2>&1 || { bad "--plan-memory --ranks 8 failed"; cat "$1"; }
}
plan "$tmp/plan8" "" 8
plan "$tmp/plan8r" "\\n  recompute: true" 8
plan "$tmp/plan10" "" 10
plan "$tmp/plan10r" "\\n  recompute: true" 10
plan "$tmp/plan4" "" 4
grep -q "40.95 GiB (ZeRO-1 over 8 ranks: 5.12 GiB each)" "$tmp/plan8" && grep -q "this job now (train.device cuda, bf16 teacher.* does not fit a 79 GiB GPU" "$tmp/plan10" && ok || { bad "memory plan with ZeRO-1 over 8 ranks"; cat "$tmp/plan10"; }
grep -q "this job now (train.device cuda, bf16 teacher.* fits a 79 GiB GPU" "$tmp/plan10r" && ok || { bad "memory plan with recompute"; cat "$tmp/plan10r"; }
# Under precision bf16 the activations only GEMMs (and attention) read are planned in bf16:
# each layer's two norm outputs, silu * up or gelu, and its q, k, v (the decoder's q and k as
# rope's output). 2 bytes less per element for every decoder record of the
# student (24, micro-batch 8 x 320 tokens) and the teacher's one shared record, and for one
# encoder record each (the frozen encoders share one: 8 clips x 500 frames).
sed "s/^train:/train:\n  precision: fp32/" "$src/experiments/memory_plan/job.yaml" >"$tmp/planfp32.yaml"
sed "s/^train:/train:\n  precision: bf16/" "$src/experiments/memory_plan/job.yaml" >"$tmp/planbf16.yaml"
(cd "$src" && "$bin" train --config "$tmp/planfp32.yaml" --plan-memory && "$bin" train --config "$tmp/planbf16.yaml" --plan-memory) >"$tmp/planprec" 2>&1 || { bad "--plan-memory fp32 / bf16"; cat "$tmp/planprec"; }
python3 - "$src/experiments/memory_plan/student-24l/config.json" "$src/tests/fixtures/qwen2_audio_7b/config.json" "$tmp/planprec" <<'PY' && ok || { bad "bf16 GEMM inputs in the plan (above)"; cat "$tmp/planprec"; }
import json, re, sys
def widths(path):
    c = json.load(open(path))
    t, a = c["text_config"], c["audio_config"]
    # transformers' defaults where a config leaves a width out
    H, heads = t.get("hidden_size", 4096), t.get("num_attention_heads", 32)
    kv = t.get("num_key_value_heads", heads) * H // heads
    return (t.get("num_hidden_layers", 32), H, t.get("intermediate_size", 11008), H, kv,
            a.get("d_model", 1280), a.get("encoder_ffn_dim", 5120))
text = open(sys.argv[3]).read()
num = lambda what: [float(x) for x in re.findall(what + r" activations \([^)]*\) +([0-9.]+) GiB", text)]
N, clips, frames = 8 * 320, 8, 500
saved = []
for path, records in ((sys.argv[1], None), (sys.argv[2], 1)):
    L, H, F, Q, KV, d, Fe = widths(path)
    dec = (records or L) * N * (2 * H + F + Q + 2 * KV) * 2
    enc = clips * frames * (2 * d + Fe + 3 * d) * 2
    saved.append((dec + enc) / 2**30)
(s32, s16), (t32, t16) = num("student"), num("teacher")
print(f"bf16 GEMM inputs: student activations {s32:.2f} -> {s16:.2f} GiB (want -{saved[0]:.3f}), teacher {t32:.2f} -> {t16:.2f} (want -{saved[1]:.3f})")
sys.exit(not (abs(s32 - s16 - saved[0]) < 0.011 and abs(t32 - t16 - saved[1]) < 0.011))
PY
grep -q "master and moments sharded): GPU .* fits a 79 GiB GPU" "$tmp/plan4" && ok || { bad "the bf16 design at micro-batch 4"; cat "$tmp/plan4"; }
# One GPU: the optimizer on the host (moments and the update offloaded), precision bf16 and
# recompute: the 7B teacher and the 24-layer student fit one 79 GiB card at micro-batch 8
sed "s/^train:/train:\n  precision: bf16\n  recompute: true/" "$src/experiments/memory_plan/job.yaml" >"$tmp/plan1.yaml"
(cd "$src" && "$bin" train --config "$tmp/plan1.yaml" --plan-memory --gpu-gib 79) >"$tmp/plan1" 2>&1 || { bad "--plan-memory on one GPU failed"; cat "$tmp/plan1"; }
grep -q "this job now (train.device cuda, bf16 teacher and student GEMM weights, optimizer on the host), per rank: GPU [5-7][0-9].[0-9]* GiB, host .* fits a 79 GiB GPU" "$tmp/plan1" && ok || { bad "one GPU with the optimizer offloaded"; cat "$tmp/plan1"; }
# The largest micro-batch it names: the job planned at it fits the card, one clip more does not
largest=$(sed -nE 's/^  largest micro-batch \(of clips of 1000 frames x 320 tokens\) that fits, as this job runs now: ([0-9]+)$/\1/p' "$tmp/plan1")
fits_at() { # MICRO_BATCH: the plan's verdict on a 79 GiB card for this job at that micro-batch
  sed -E "s/^  (micro_)?batch: .*/  \1batch: $1/" "$tmp/plan1.yaml" >"$tmp/plan_mb.yaml"
  (cd "$src" && "$bin" train --config "$tmp/plan_mb.yaml" --plan-memory --gpu-gib 79) | grep -oE "^  this job now .* -> (fits|does not fit)"
}
[ -n "$largest" ] && [ "$largest" -ge 8 ] && fits_at "$largest" | grep -q "> fits$" &&
  fits_at $((largest + 1)) | grep -q "does not fit$" && ok || { bad "largest micro-batch '$largest'"; cat "$tmp/plan1"; }
(cd "$src" && "$bin" train --config "$tmp/plan1.yaml" --plan-memory --gpu-gib 20) | grep -q "that fits, as this job runs now: 0 (not one clip)$" && ok || bad "a card too small for one clip"
# Attention through the flash kernels (head dims 64 and 128 here) needs no score buffers and no
# bf16 copies of q, k, v (only of dO, for its dK/dV pipe): the same job plans less scratch and
# less GPU memory than through the GEMMs. Under precision bf16, auto takes the flash kernels unless the environment says
# otherwise (AUDISTILL_CUDA_ATTENTION=gemm); train.attention: gemm or flash overrides the
# environment.
sed "s/^train:/train:\n  attention: flash/" "$tmp/plan1.yaml" >"$tmp/plan1flash.yaml"
sed "s/^train:/train:\n  attention: gemm/" "$tmp/plan1.yaml" >"$tmp/plan1gemm.yaml"
(cd "$src" && AUDISTILL_CUDA_ATTENTION=gemm "$bin" train --config "$tmp/plan1flash.yaml" --plan-memory --gpu-gib 79) >"$tmp/plan1flash" 2>&1 || { bad "--plan-memory with flash attention failed"; cat "$tmp/plan1flash"; }
(cd "$src" && AUDISTILL_CUDA_ATTENTION=gemm "$bin" train --config "$tmp/plan1.yaml" --plan-memory --gpu-gib 79) >"$tmp/plan1env" 2>&1 || { bad "--plan-memory with AUDISTILL_CUDA_ATTENTION=gemm failed"; cat "$tmp/plan1env"; }
(cd "$src" && AUDISTILL_CUDA_ATTENTION=flash "$bin" train --config "$tmp/plan1gemm.yaml" --plan-memory --gpu-gib 79) >"$tmp/plan1gemm" 2>&1 || { bad "--plan-memory with attention: gemm failed"; cat "$tmp/plan1gemm"; }
python3 - "$tmp/plan1" "$tmp/plan1flash" "$tmp/plan1env" "$tmp/plan1gemm" <<'PY' && ok || { bad "the plan with flash attention"; cat "$tmp/plan1flash"; }
import re, sys
auto, flash, env, gemm = (open(p).read() for p in sys.argv[1:])
assert auto == flash and env == gemm, "auto under bf16, the environment and train.attention disagree"
num = lambda text, pat: float(re.search(pat, text).group(1))
scratch = r"CUDA scratch \(GEMM copies, attention\) +([0-9.]+) GiB"
gpu = r"this job now .* GPU ([0-9.]+) GiB"
assert "attention: the flash kernels" in flash and "flash kernels" not in gemm
saved = num(gemm, scratch) - num(flash, scratch)
assert saved > 0.05 and abs(num(gemm, gpu) - num(flash, gpu) - saved) < 0.015, saved
PY
# The student's GEMM weights in bf16 (the default under precision bf16) save 2 bytes per
# parameter of them against student_weights: f32, trained (the decoder's, lm_head) or frozen (the
# audio encoder's, the projector); with the optimizer on the device the trained ones' fp32
# masters cost 4 more, of which ZeRO-1 over 8 ranks keeps an eighth per rank. The counts come
# from config.json here (Qwen2Config's defaults for what the student's file leaves out), not
# from the plan.
plan "$tmp/plan8rf" "\\n  recompute: true\\n  student_weights: f32" 8
sed "s/^train:/train:\n  student_weights: f32/" "$tmp/plan1.yaml" >"$tmp/plan1f.yaml"
sed "s/^train:/train:\n  optimizer: device/" "$tmp/plan1.yaml" >"$tmp/plan1d.yaml"
(cd "$src" && "$bin" train --config "$tmp/plan1f.yaml" --plan-memory && "$bin" train --config "$tmp/plan1d.yaml" --plan-memory) >"$tmp/plan1fd" 2>&1 || { bad "--plan-memory with student_weights"; cat "$tmp/plan1fd"; }
python3 - "$src/experiments/memory_plan/student-24l/config.json" "$tmp/plan1" "$tmp/plan1fd" "$tmp/plan8r" "$tmp/plan8rf" <<'PY' && ok || bad "the plan's bf16 student weights (above)"
import json, re, sys
c = json.load(open(sys.argv[1]))
t, a = c["text_config"], c["audio_config"]
h, heads = t.get("hidden_size", 4096), t.get("num_attention_heads", 32)
kv = t.get("num_key_value_heads", heads) * (h // heads)
gemm = t["num_hidden_layers"] * (2 * h * h + 2 * h * kv + 3 * h * t["intermediate_size"])
gemm += 0 if t.get("tie_word_embeddings") else h * t.get("vocab_size", 151936)
d = a["d_model"]
frozen = a["encoder_layers"] * (4 * d * d + 2 * d * a["encoder_ffn_dim"]) + d * h
gpu = lambda text: [float(x) for x in re.findall(r"this job now .* GPU ([0-9.]+) GiB", text)]
bf16, = gpu(open(sys.argv[2]).read())
f32, dev = gpu(open(sys.argv[3]).read())
z16, = gpu(open(sys.argv[4]).read())
z32, = gpu(open(sys.argv[5]).read())
want, want8 = 2 * (gemm + frozen) / 2**30, (1.5 * gemm + 2 * frozen) / 2**30
print(f"GEMM weights {gemm / 1e9:.3f} B trained, {frozen / 1e9:.3f} B frozen: GPU {f32:.2f} GiB in f32, {bf16:.2f} in bf16 (saves {f32 - bf16:.2f}, want {want:.2f}); device optimizer {dev:.2f}; ZeRO-1 over 8 ranks {z32:.2f} -> {z16:.2f} (saves {z32 - z16:.2f}, want {want8:.2f})")
sys.exit(not (abs(f32 - bf16 - want) < 0.02 and dev > f32 and abs(z32 - z16 - want8) < 0.02))
PY
acts() { sed -nE 's/.*student activations \(kept for backward\) +([0-9.]+) GiB.*/\1/p' "$1"; }
awk -v a="$(acts "$tmp/plan8")" -v b="$(acts "$tmp/plan8r")" 'BEGIN {printf "student activations at micro-batch 8: %s GiB, %s GiB with recompute\n", a, b; exit !(b > 0 && b < a / 3)}' && ok || { bad "recompute does not shrink the planned activations"; cat "$tmp/plan8r"; }

# TensorBoard / tbparse read the event file (skipped when neither is installed)
python3 - "$tmp/straight/tensorboard" <<'PY' && ok || bad "TensorBoard could not read the event file"
import sys
try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
except ImportError:
    print("note: tensorboard not installed; event file not checked"); sys.exit(0)
acc = EventAccumulator(sys.argv[1]); acc.Reload()
tags = acc.Tags()["scalars"]
assert "train/loss" in tags and "dev/loss" in tags, tags
steps = [e.step for e in acc.Scalars("train/loss")]
assert steps == [1, 2, 3, 4, 5, 6], steps
PY
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
