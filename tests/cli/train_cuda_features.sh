#!/usr/bin/env bash
# The training features beside plain distillation with train.device: cuda, against the CPU
# reference on the same weights and data (skips without a CUDA backend or device; the CUDA
# emulator of tests/cuda_emu runs it on the CPU):
# 1. the CTC term on the audio positions (ctc.weight): per-step loss and CTC within 1e-4,
#    final weights within 1e-3 relative L2 per tensor (as train_cuda.sh);
# 2. quantization-aware training of a GPTQ 3-bit student with learned scales: per-step loss
#    within 1e-4, and the exported quantized models run (translate) to the same text;
# 3. teacher-cache with device: cuda: every cached top-k logit within 1e-4 relative of the
#    CPU's (same ids), the teacher's beam-search translations identical, and training from that
#    cache on the GPU matches the CPU run (1e-4);
# 4. train.precision: bf16 (bf16 GEMM operands, bf16 teacher weights): near the CPU's fp32 run
#    (1e-2 per-step loss, 5e-2 final weights) and measurably apart from the fp32 GPU run;
# 5. train.recompute: the fp32 GPU run bit for bit;
# 6. train.student_weights: the student's GEMM weights stored in bf16 (the default under
#    precision bf16; fp32 masters on the host, or on the device with optimizer: device, whose
#    AdamW writes both) give the run that rounds fp32 weights in every GEMM (student_weights:
#    f32) bit for bit: losses and final weights, with either optimizer, with a frozen audio
#    encoder (whose fp32 weights the final model keeps), and across a checkpoint and a resume
#    that switches student_weights; bf16 weights under precision fp32 are refused;
# 7. train.attention: flash, on tiny_a re-headed to one audio-encoder head of 16 (weights
#    unchanged) so that the encoder's attention (teacher and student) takes the flash kernels:
#    per-step losses within 1e-3 relative of attention: gemm's, and not its bits (the key
#    reaches the backend); attention: auto under precision bf16 gives flash's bits.
# 8. train.gemm_tuning: the same losses as untuned on the emulator (1e-3 on a GPU); the choices
#    kept in the output directory are loaded by a run that finds them (the same losses, bit for
#    bit).
# 9. distill.share_encoder under precision bf16: the teacher reuses the student's equal frozen
#    encoder; the same run as without, bit for bit on the emulator (1e-3 on a GPU).
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
py=${PYTHON:-python3}
tmp=$(mktemp -d "${AUDISTILL_TEST_TMP:-/tmp}/train_cuda_features.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$py" -c "import numpy, h5py, safetensors" 2>/dev/null || { echo "SKIP: needs python3 with numpy, h5py and safetensors"; exit 77; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 en || { echo "cannot make the data set"; exit 1; }

job() { # name, device, student, extra top-level YAML
  cat >"$tmp/$1.yaml" <<YAML
student: $3
output: $tmp/$1
data: {train: $tmp/set.h5}
train: {device: $2, steps: 6, batch: 4, micro_batch: 2, lr: 5e-3, warmup: 2, log_every: 1, checkpoint_every: 100, max_len: 64, max_frames: 100}
$4
YAML
  echo "$tmp/$1.yaml"
}
train() { # name -> trains $tmp/$name.yaml
  "$bin" train --config "$tmp/$1.yaml" --quiet 2>"$tmp/$1.err" && ok || { bad "training $1 failed"; cat "$tmp/$1.err"; }
}

# Skip cleanly where there is no CUDA backend or device.
job probe cuda "$fx/tiny_a" "" >/dev/null
sed -i 's/steps: 6/steps: 1/' "$tmp/probe.yaml"
if ! "$bin" train --config "$tmp/probe.yaml" --quiet 2>"$tmp/err"; then
  if grep -qE "built without CUDA|no usable CUDA device|no CUDA device" "$tmp/err"; then
    echo "SKIP: $(grep -m1 -oE "built without CUDA|no usable CUDA device[^(]*|no CUDA device present" "$tmp/err")"
    exit 77
  fi
  bad "a one-step run on the GPU failed"; cat "$tmp/err"
fi

# The memory plan is printed before a GPU run, against the card.
grep -q "^memory plan: " "$tmp/err" && grep -q "this job now (train.device cuda" "$tmp/err" && ok || { bad "no memory plan before the GPU run"; cat "$tmp/err"; }
# On the emulator, a card too small for the plan (32.6 MiB: the backend's 32 MiB cuBLASLt
# workspace fits, the model does not): a warning first, then a clean out-of-memory failure,
# and no final model.
if [[ ${AUDISTILL_TEST_CUDA_EMULATOR:-OFF} == ON ]]; then
  sed -i "s|output: .*|output: $tmp/small|" "$tmp/probe.yaml"
  AUDISTILL_CUDA_EMU_GIB=0.0318 "$bin" train --config "$tmp/probe.yaml" --quiet 2>"$tmp/err"
  rc=$?
  [[ $rc != 0 ]] && grep -q "expect it to run out of memory" "$tmp/err" && grep -qi "out of memory" "$tmp/err" && [ ! -e "$tmp/small/final" ] && ok || { bad "a 32.6 MiB card: rc $rc"; cat "$tmp/err"; }
fi
# An attention path the backend does not know, from the environment: refused when the backend
# is made, naming the variable, before any work.
sed -i "s|output: .*|output: $tmp/badpath|" "$tmp/probe.yaml"
AUDISTILL_CUDA_ATTENTION=fastest "$bin" train --config "$tmp/probe.yaml" --quiet 2>"$tmp/err"
rc=$?
[[ $rc == 1 ]] && grep -q "AUDISTILL_CUDA_ATTENTION=fastest: expected auto, kernel, gemm or flash" "$tmp/err" && [ ! -e "$tmp/badpath/final" ] && ok || { bad "AUDISTILL_CUDA_ATTENTION=fastest: rc $rc"; cat "$tmp/err"; }

# 1. CTC
for dev in cpu cuda; do
  job "ctc_$dev" $dev "$fx/tiny_a" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5, temperature: 2.0}\nctc: {weight: 0.5}' >/dev/null
  train "ctc_$dev"
done

# 2. QAT
cat >"$tmp/ptq.yaml" <<YAML
model: $fx/tiny_a
output: $tmp/ptq
calibration: {data: $tmp/set.h5, segments: 8, batch: 4, max_frames: 100}
quantize:
  decoder_linear: {bits: 3, group_size: 8, method: gptq}
  encoder_linear: {bits: 3, group_size: 8, method: gptq}
YAML
"$bin" quantize --config "$tmp/ptq.yaml" >"$tmp/ptq.log" 2>&1 || { cat "$tmp/ptq.log"; echo "cannot quantize"; exit 1; }
for dev in cpu cuda; do
  job "qat_$dev" $dev "$tmp/ptq" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5}\nqat: {scales: learned}' >/dev/null
  train "qat_$dev"
  "$bin" translate --model "$tmp/qat_$dev/final" --lang de --max-new-tokens 8 "$fx/translate/clip.wav" \
    >"$tmp/qat_$dev.txt" 2>"$tmp/tr_$dev.err" && ok || { bad "translate with the QAT $dev model"; cat "$tmp/tr_$dev.err"; }
done
cmp -s "$tmp/qat_cpu.txt" "$tmp/qat_cuda.txt" && ok || { bad "the QAT models translate differently"; diff "$tmp/qat_cpu.txt" "$tmp/qat_cuda.txt" | head; }

# 3. teacher cache
for dev in cpu cuda; do
  printf 'teacher: %s/tiny_a\ndata: %s/set.h5\noutput: %s/cache_%s.h5\ntop_k: 16\nmax_len: 64\nmax_frames: 100\nbatch: 3\ndevice: %s\ntranslations: beam\nnum_beams: 2\n' \
    "$fx" "$tmp" "$tmp" $dev $dev >"$tmp/cache_$dev.yaml"
  "$bin" teacher-cache --config "$tmp/cache_$dev.yaml" 2>"$tmp/cache_$dev.log" && ok || { bad "teacher-cache on $dev"; cat "$tmp/cache_$dev.log"; }
  job "cached_$dev" $dev "$fx/tiny_a" $'distill: {alpha: 0.7, temperature: 2.0, teacher_cache: '"$tmp/cache_$dev.h5"'}' >/dev/null
  train "cached_$dev"
done

# 4. train.precision: bf16 (bf16 GEMM operands, the teacher's weights in bf16) against the fp32
# runs on both devices: close to the CPU (bf16 rounding: per-step loss within 1e-2 relative,
# final weights within 5e-2 relative L2), and not the fp32 GPU run (the bf16 path is in use).
# Without a teacher (cross-entropy only) only the student's GEMMs can round, so the ce_ pair
# shows that the GEMM operands, not just the teacher's weights, go to bf16.
for run in "prec_cpu cpu fp32 kd" "prec_cuda cuda fp32 kd" "prec_bf16 cuda bf16 kd" \
  "ce_cuda cuda fp32 ce" "ce_bf16 cuda bf16 ce"; do
  set -- $run
  if [[ $4 == kd ]]; then
    job "$1" "$2" "$fx/tiny_a" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
  else
    job "$1" "$2" "$fx/tiny_a" "" >/dev/null
  fi
  sed -i "s|^train: {device: $2,|train: {device: $2, precision: $3,|" "$tmp/$1.yaml"
  train "$1"
done
grep -q "this job now (train.device cuda, bf16 teacher and student GEMM weights" "$tmp/prec_bf16.err" && ok || { bad "no bf16 memory plan"; cat "$tmp/prec_bf16.err"; }
# --benchmark on the GPU reports the step time and the device memory in use
sed "s|output: .*|output: $tmp/bench|" "$tmp/prec_bf16.yaml" >"$tmp/bench.yaml"
"$bin" train --config "$tmp/bench.yaml" --benchmark 2 >"$tmp/bench.out" 2>"$tmp/err" &&
  grep -qE "^benchmark: 2 steps on cuda, median .* device memory in use [0-9.]+ GiB" "$tmp/bench.out" && ok || { bad "--benchmark on the GPU"; cat "$tmp/bench.out" "$tmp/err"; }
# and its MFU against the card's peak, named with the card's own name (the emulator has no peak
# of its own: AUDISTILL_PEAK_TFLOPS gives one; tests/cli/train.sh checks the arithmetic)
AUDISTILL_PEAK_TFLOPS=0.004 "$bin" train --config "$tmp/bench.yaml" --benchmark 2 >"$tmp/bench.out" 2>"$tmp/err" &&
  grep -qE "TFLOP/s, MFU [0-9.]+% of .+ \(0.004 TFLOP/s dense bf16\), device memory" "$tmp/bench.out" &&
  ! grep -q "% of cuda (" "$tmp/bench.out" && ok || { bad "--benchmark MFU on the GPU"; cat "$tmp/bench.out" "$tmp/err"; }
# 5. activation recomputation on the GPU: the fp32 run's weights and losses, bit for bit
job prec_recompute cuda "$fx/tiny_a" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
sed -i "s|^train: {device: cuda,|train: {device: cuda, recompute: true,|" "$tmp/prec_recompute.yaml"
train prec_recompute
cmp -s "$tmp/prec_cuda/final/model.safetensors" "$tmp/prec_recompute/final/model.safetensors" &&
  [ "$(grep -o '"train/loss": [^,]*' "$tmp/prec_cuda/metrics.jsonl")" = "$(grep -o '"train/loss": [^,]*' "$tmp/prec_recompute/metrics.jsonl")" ] && ok || bad "recompute on the GPU changed the weights or losses"
# 6. bf16 student weights against fp32 weights rounded in every GEMM: the same bits
grep -q "the student computes in bf16: its GEMM weights stored as bf16, the [1-9][0-9]* trained ones with fp32 masters on the host" "$tmp/prec_bf16.err" && ok || { bad "precision bf16 did not store the student's GEMM weights in bf16"; cat "$tmp/prec_bf16.err"; }
for run in "w32_host host f32 all" "w16_dev device auto all" \
  "w16_dec device auto decoder" "w32_dec device f32 decoder"; do
  set -- $run
  job "$1" cuda "$fx/tiny_a" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
  sed -i "s|^train: {device: cuda,|train: {device: cuda, precision: bf16, optimizer: $2, student_weights: $3, trainable: $4,|" "$tmp/$1.yaml"
  train "$1"
done
grep -q "the student computes in bf16" "$tmp/w32_host.err" && bad "student_weights: f32 stored bf16 weights" || ok
grep -q "the student computes in bf16: its GEMM weights stored as bf16, the [1-9][0-9]* trained ones with fp32 masters on the device" "$tmp/w16_dev.err" && ok || { bad "optimizer device: no bf16 weights"; cat "$tmp/w16_dev.err"; }
same_run() { # run_a run_b what
  cmp -s "$tmp/$1/final/model.safetensors" "$tmp/$2/final/model.safetensors" &&
    [ "$(grep -o '"train/loss": [^,]*' "$tmp/$1/metrics.jsonl")" = "$(grep -o '"train/loss": [^,]*' "$tmp/$2/metrics.jsonl")" ] && ok || bad "$3: $1 and $2 differ"
}
same_run prec_bf16 w32_host "bf16 weights, host optimizer"
same_run prec_bf16 w16_dev "bf16 weights, device against host optimizer"
# trainable: decoder leaves the audio encoder's and projector's GEMM weights frozen, in bf16 too:
# the same bits, and the final model holds their fp32 values from the file, not rounded ones
same_run w16_dec w32_dec "bf16 weights, frozen encoder"
"$py" - "$fx/tiny_a/model.safetensors" "$tmp/w16_dec/final/model.safetensors" <<'PY' && ok || bad "the frozen weights of a bf16 student changed (above)"
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
frozen = [k for k in a if k.startswith(("audio_tower.", "multi_modal_projector."))]
changed = [k for k in frozen if not np.array_equal(a[k].astype(np.float32), b[k])]
print(f"frozen tensors: {len(frozen)}, changed: {changed[:3]}")
sys.exit(not frozen or bool(changed))
PY
# stopped after 3 steps and resumed with student_weights: f32 (it may change on --resume, as it
# changes no result): the device masters went to the checkpoint, not the bf16 weights, whose
# rounding a resume would carry on
job w_switch cuda "$fx/tiny_a" $'teacher: '"$fx/tiny_a"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
sed -i "s|^train: {device: cuda,|train: {device: cuda, precision: bf16, optimizer: device, student_weights: bf16,|" "$tmp/w_switch.yaml"
"$bin" train --config "$tmp/w_switch.yaml" --quiet --stop-after 3 2>"$tmp/err" &&
  sed -i "s|student_weights: bf16|student_weights: f32|" "$tmp/w_switch.yaml" &&
  "$bin" train --config "$tmp/w_switch.yaml" --quiet --resume auto 2>>"$tmp/err" && ok || { bad "student_weights bf16 -> f32 on --resume failed"; cat "$tmp/err"; }
cmp -s "$tmp/w16_dev/final/model.safetensors" "$tmp/w_switch/final/model.safetensors" && ok || bad "bf16 weights stopped and resumed: the run ends elsewhere"
job w16_fp32 cuda "$fx/tiny_a" "" >/dev/null
sed -i "s|^train: {device: cuda,|train: {device: cuda, student_weights: bf16,|" "$tmp/w16_fp32.yaml"
"$bin" train --config "$tmp/w16_fp32.yaml" --quiet 2>"$tmp/err" && bad "bf16 weights under precision fp32 were accepted" ||
  { grep -q "student_weights: bf16 needs train.precision: bf16" "$tmp/err" && ok || { bad "bf16 weights under fp32: wrong message"; cat "$tmp/err"; }; }

"$py" - "$tmp" <<'PY' && ok || bad "train.precision: bf16 (above)"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp = sys.argv[1]
def losses(run):
    return np.array([r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r])
cpu, f32, b16 = losses("prec_cpu"), losses("prec_cuda"), losses("prec_bf16")
ce32, ce16 = losses("ce_cuda"), losses("ce_bf16")
assert len(cpu) == len(f32) == len(b16) == len(ce32) == len(ce16) == 6
near = np.max(np.abs(b16 - cpu) / np.abs(cpu))
apart = min(np.max(np.abs(b16 - f32) / np.abs(f32)), np.max(np.abs(ce16 - ce32) / np.abs(ce32)))
near = max(near, np.max(np.abs(ce16 - ce32) / np.abs(ce32)))
a = load_file(f"{tmp}/prec_cpu/final/model.safetensors")
b = load_file(f"{tmp}/prec_bf16/final/model.safetensors")
worst = max(np.linalg.norm(b[k] - a[k]) / max(np.linalg.norm(a[k]), 1e-30) for k in a)
print(f"precision bf16: losses within {near:.3g} of fp32 (tolerance 1e-2), at least {apart:.3g} from the fp32 GPU runs, with and without a teacher (must exceed 1e-5); final weights {worst:.3g} (tolerance 5e-2)")
sys.exit(not (near <= 1e-2 and apart > 1e-5 and worst <= 5e-2))
PY

# 7. train.attention: flash against gemm and auto, all precision bf16
cp -r "$fx/tiny_a" "$tmp/enc16"
"$py" - "$tmp/enc16/config.json" <<'PY' || bad "re-heading tiny_a"
import json, sys
c = json.load(open(sys.argv[1]))
c["audio_config"]["encoder_attention_heads"] = 1
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
for run in "att_gemm gemm" "att_flash flash" "att_auto auto"; do
  set -- $run
  job "$1" cuda "$tmp/enc16" $'teacher: '"$tmp/enc16"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
  sed -i "s|^train: {device: cuda, steps: 6,|train: {device: cuda, precision: bf16, attention: $2, steps: 3,|" "$tmp/$1.yaml"
  train "$1"
done
"$py" - "$tmp" <<'PY' && ok || bad "train.attention: flash (above)"
import json, sys
tmp = sys.argv[1]
def losses(run):
    return [r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r]
g, f, a = losses("att_gemm"), losses("att_flash"), losses("att_auto")
assert len(g) == len(f) == 3, (g, f)
worst = max(abs(a - b) / abs(a) for a, b in zip(g, f))
print(f"attention flash: per-step losses within {worst:.2g} of gemm's (tolerance 1e-3, and not 0); "
      f"auto {'equals flash' if a == f else f'differs from flash: {a} against {f}'}")
sys.exit(not (0 < worst <= 1e-3 and a == f))
PY

# 8. train.gemm_tuning: the run of 7's auto with its GEMMs tuned. On the emulator every answer
# computes the same bits, so the losses equal auto's; on a GPU the answers may round apart
# (1e-3). (tests/cli/train.sh: refused on the CPU backend, which has nothing to tune.)
job att_tuned cuda "$tmp/enc16" $'teacher: '"$tmp/enc16"$'\ndistill: {alpha: 0.5, temperature: 2.0}' >/dev/null
sed -i "s|^train: {device: cuda, steps: 6,|train: {device: cuda, precision: bf16, gemm_tuning: true, steps: 3,|" "$tmp/att_tuned.yaml"
train att_tuned
"$py" - "$tmp" "${AUDISTILL_TEST_CUDA_EMULATOR:-OFF}" <<'PY' && ok || bad "train.gemm_tuning (above)"
import json, sys
tmp, emulated = sys.argv[1], sys.argv[2] == "ON"
def losses(run):
    return [r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r]
a, t = losses("att_auto"), losses("att_tuned")
worst = max(abs(x - y) / abs(x) for x, y in zip(a, t))
print(f"gemm_tuning: per-step losses within {worst:.2g} of the untuned run's"
      + (" (emulator: must be 0)" if emulated else " (tolerance 1e-3)"))
sys.exit(not (len(t) == 3 and (worst == 0 if emulated else worst <= 1e-3)))
PY
# The choices are kept in the output directory; a run that finds them there (a resume, or this
# copy) computes with them: the same losses as the run that chose them, bit for bit.
sed "s|output: .*|output: $tmp/att_tuned2|" "$tmp/att_tuned.yaml" >"$tmp/att_tuned2.yaml"
mkdir -p "$tmp/att_tuned2" && cp "$tmp/att_tuned/gemm_tuning.bin" "$tmp/att_tuned2/" 2>/dev/null
"$bin" train --config "$tmp/att_tuned2.yaml" 2>"$tmp/att_tuned2.err" && ok || { bad "training att_tuned2 failed"; cat "$tmp/att_tuned2.err"; }
grep -qE "GEMM tuning: [0-9]+ choices loaded from $tmp/att_tuned2/gemm_tuning.bin" "$tmp/att_tuned2.err" &&
  [[ $(grep -c '"train/loss": ' "$tmp/att_tuned2/metrics.jsonl") == 3 ]] &&
  cmp -s <(grep -o '"train/loss": [^,]*' "$tmp/att_tuned/metrics.jsonl") <(grep -o '"train/loss": [^,]*' "$tmp/att_tuned2/metrics.jsonl") &&
  ok || { bad "the kept GEMM tuning choices: not loaded, or other losses"; grep -i "tuning" "$tmp/att_tuned2.err"; }

# 9. distill.share_encoder under precision bf16: a bf16 teacher (tiny_a stored in bf16) and a
# student pruned from it keep the same frozen audio encoder, though the student holds its
# non-GEMM weights in f32 and the teacher in bf16 (the same values); the teacher takes the
# student's encoder output (half the conv1 calls in the op profile): on the emulator the run
# equals share_encoder: false bit for bit (final weights and losses), on a GPU within 1e-3.
printf 'teacher: %s/tiny_a\noutput: %s/t16\noutput_dtype: bf16\n' "$fx" "$tmp" >"$tmp/t16.yaml"
printf 'teacher: %s/t16\noutput: %s/s16\noutput_dtype: bf16\nprune:\n  drop_decoder_layers: [1]\n' "$tmp" "$tmp" >"$tmp/s16.yaml"
"$bin" prune --config "$tmp/t16.yaml" >/dev/null 2>&1 && "$bin" prune --config "$tmp/s16.yaml" >/dev/null 2>&1 || bad "cannot make the bf16 teacher and student"
for s in true false; do
  job share_$s cuda "$tmp/s16" $'teacher: '"$tmp/t16"$'\ndistill: {alpha: 0.5, temperature: 2.0, share_encoder: '$s'}' >/dev/null
  sed -i "s|^train: {device: cuda, steps: 6,|train: {device: cuda, precision: bf16, trainable: no_audio_encoder, steps: 4,|" "$tmp/share_$s.yaml"
  AUDISTILL_PROFILE=1 "$bin" train --config "$tmp/share_$s.yaml" 2>"$tmp/share_$s.err" >/dev/null && ok || { bad "training share_$s failed"; cat "$tmp/share_$s.err"; }
done
conv1_calls() { grep -E "^conv1d audio_tower\.conv1\.weight " "$1" | awk '{print $3}'; }
grep -q "the teacher reuses the student's audio encoder output" "$tmp/share_true.err" &&
  [ "$(conv1_calls "$tmp/share_true.err")" = 8 ] && [ "$(conv1_calls "$tmp/share_false.err")" = 16 ] &&
  ok || bad "shared encoder under bf16: not shared, or $(conv1_calls "$tmp/share_true.err") conv1 calls against $(conv1_calls "$tmp/share_false.err") (want 8, 16)"
"$py" - "$tmp" "${AUDISTILL_TEST_CUDA_EMULATOR:-OFF}" <<'PY' && ok || bad "distill.share_encoder (above)"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp, emulated = sys.argv[1], sys.argv[2] == "ON"
def losses(run):
    return [r["train/loss"] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if "train/loss" in r]
s, n = losses("share_true"), losses("share_false")
a, b = load_file(f"{tmp}/share_true/final/model.safetensors"), load_file(f"{tmp}/share_false/final/model.safetensors")
loss = max(abs(x - y) / abs(y) for x, y in zip(s, n))
weights = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in b)
print(f"share_encoder: per-step losses within {loss:.2g}, final weights within {weights:.2g} of the unshared run's"
      + (" (emulator: must be 0)" if emulated else " (losses: tolerance 1e-3)"))
sys.exit(not (len(s) == 4 and (loss == 0 and weights == 0 if emulated else loss <= 1e-3)))
PY

"$py" - "$tmp" <<'PY' && ok || bad "the GPU runs differ from the CPU runs (above)"
import json, sys
import h5py
import numpy as np
from safetensors.numpy import load_file
tmp = sys.argv[1]
def series(run, key):
    return np.array([r[key] for r in map(json.loads, open(f"{tmp}/{run}/metrics.jsonl")) if key in r])
status = 0
for name, keys in (("ctc", ("train/loss", "train/ctc")), ("qat", ("train/loss",)), ("cached", ("train/loss",))):
    for key in keys:
        cpu, gpu = series(f"{name}_cpu", key), series(f"{name}_cuda", key)
        assert len(cpu) == 6 and len(gpu) == 6, (name, key, len(cpu), len(gpu))
        err = np.max(np.abs(gpu - cpu) / np.abs(cpu))
        print(f"{name} {key}: worst relative difference {err:.3g} (tolerance 1e-4); cpu {cpu[0]:.5f} -> {cpu[-1]:.5f}")
        status |= not err <= 1e-4
a = load_file(f"{tmp}/ctc_cpu/final/model.safetensors")
b = load_file(f"{tmp}/ctc_cuda/final/model.safetensors")
worst = max(np.linalg.norm(b[k] - a[k]) / max(np.linalg.norm(a[k]), 1e-30) for k in a)
print(f"ctc final weights: worst relative L2 {worst:.3g} over {len(a)} tensors (tolerance 1e-3)")
status |= not worst <= 1e-3
with h5py.File(f"{tmp}/cache_cpu.h5") as c, h5py.File(f"{tmp}/cache_cuda.h5") as g:
    n = 0
    def visit(name, obj):
        global n, status
        if not isinstance(obj, h5py.Dataset):
            return
        x, y = c[name][()], g[name][()]
        if x.dtype.kind == "f":
            err = np.max(np.abs(y - x)) / max(np.max(np.abs(x)), 1e-30) if x.size else 0.0
            if not err <= 1e-4:
                print(f"cache {name}: relative difference {err:.3g} above 1e-4")
                status |= 1
        elif not np.array_equal(x, y):
            # top-k ids may swap where two logits tie to 1e-4; count real disagreements
            print(f"cache {name}: {np.sum(x != y)} of {x.size} entries differ")
            status |= 1
        n += 1
    c.visititems(visit)
    print(f"teacher cache: {n} datasets compared")
sys.exit(status)
PY
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
