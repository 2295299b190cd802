#!/usr/bin/env bash
# audistill translate --device cuda against the CPU (skips without a CUDA backend or device;
# the CUDA emulator of tests/cuda_emu runs it on the CPU): the tiny model with f32 weights, with
# bf16 weights, and group-quantized (2/3/4-bit linears, a quantized embedding and lm_head, as
# compressed models are stored; their parts go to the device), greedy and beam 3, give the same
# text on both; a bad --device is refused.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "${AUDISTILL_TEST_TMP:-/tmp}/translate_cuda.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
clip=$fx/translate/clip.wav

if ! "$bin" translate --model "$fx/tiny_a" --lang de --max-new-tokens 2 --device cuda "$clip" >/dev/null 2>"$tmp/err"; then
  if grep -qE "built without CUDA|no usable CUDA device|no CUDA device" "$tmp/err"; then
    echo "SKIP: $(grep -m1 -oE "built without CUDA|no usable CUDA device[^(]*|no CUDA device present" "$tmp/err")"
    exit 77
  fi
  bad "translate --device cuda failed"; cat "$tmp/err"
fi
"$bin" translate --model "$fx/tiny_a" --lang de --device gpu "$clip" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "device must be cpu or cuda" "$tmp/err" && ok || { bad "--device gpu accepted"; cat "$tmp/err"; }

"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }
printf 'teacher: %s/tiny_a\noutput: %s/bf16\noutput_dtype: bf16\nprune:\n  drop_decoder_layers: []\n' "$fx" "$tmp" >"$tmp/bf16.yaml"
"$bin" prune --config "$tmp/bf16.yaml" >"$tmp/bf16.log" 2>&1 || { cat "$tmp/bf16.log"; echo "cannot write the bf16 model"; exit 1; }
cat >"$tmp/q.yaml" <<YAML
model: $fx/tiny_a
output: $tmp/quant
calibration: {data: $tmp/set.h5, segments: 8, batch: 4, max_frames: 100}
quantize:
  decoder_linear: {bits: 2, group_size: 8, method: rtn}
  encoder_linear: {bits: 3, group_size: 8, method: gptq}
  lm_head: {bits: 3, group_size: 8, symmetric: true}
  embed_tokens: {bits: 4, group_size: 8}
YAML
"$bin" quantize --config "$tmp/q.yaml" >"$tmp/q.log" 2>&1 || { cat "$tmp/q.log"; echo "cannot quantize"; exit 1; }
"$bin" inspect "$tmp/quant" 2>&1 | grep -q "QGROUP x29" && ok || bad "the quantized model does not hold 29 quantized tensors"

for model in "$fx/tiny_a" "$tmp/bf16" "$tmp/quant"; do
  for beam in 1 3; do
    for dev in cpu cuda; do
      "$bin" translate --model "$model" --lang de --max-new-tokens 16 --beam $beam --device $dev \
        "$clip" "$clip" >"$tmp/$dev.txt" 2>"$tmp/$dev.err" || { bad "$model beam $beam on $dev"; cat "$tmp/$dev.err"; }
    done
    [ -s "$tmp/cpu.txt" ] && cmp -s "$tmp/cpu.txt" "$tmp/cuda.txt" && ok || { bad "$(basename "$model") beam $beam: the GPU translates differently"; diff <(od -c "$tmp/cpu.txt") <(od -c "$tmp/cuda.txt") | head -6; }
  done
done
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
