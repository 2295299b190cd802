#!/usr/bin/env bash
# audistill quantize and size: RTN and GPTQ (with calibration data) write a model directory that
# inspect accepts, translate runs and size weighs at the recipe's bits per weight; a quantized
# model is not quantized again; bad jobs are refused before any output exists.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/quantize.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 8 16 280 3 || { echo "cannot make the data set"; exit 1; }

# tiny_a: every linear and the embeddings at 4 bits by GPTQ (embeddings fall back to RTN).
cat >"$tmp/gptq.yaml" <<EOF
model: $fx/tiny_a
output: $tmp/a4
calibration: {data: $tmp/set.h5, segments: 8, batch: 4, max_frames: 100}
quantize:
  decoder_linear: {bits: 4, group_size: 8, method: gptq}
  encoder_linear: {bits: 4, group_size: 8, method: gptq}
  lm_head: {bits: 4, group_size: 8, method: gptq}
  embed_tokens: {bits: 4, group_size: 8, method: gptq}
EOF
"$bin" quantize --config "$tmp/gptq.yaml" >"$tmp/out" 2>&1 && ok || { bad "gptq quantize"; cat "$tmp/out"; }
"$bin" inspect "$tmp/a4" >"$tmp/inspect" 2>&1 && ok || { bad "inspect of the quantized model"; cat "$tmp/inspect"; }
grep -q "QGROUP x" "$tmp/inspect" && ok || bad "inspect does not list quantized tensors"
# The metadata is a JSON string inside the header: quotes are escaped. Every linear used GPTQ
# (its calibration rows reached it); only the embedding lookup is round-to-nearest.
n_gptq=$(head -c 65536 "$tmp/a4/model.safetensors" | grep -aoF 'method\":\"gptq' | wc -l)
n_rtn=$(head -c 65536 "$tmp/a4/model.safetensors" | grep -aoF 'method\":\"rtn' | wc -l)
[ "$n_gptq" -eq 28 ] && [ "$n_rtn" -eq 1 ] && ok || bad "metadata: $n_gptq gptq, $n_rtn rtn tensors; want 28 and 1"
"$bin" size "$tmp/a4" >"$tmp/size" 2>&1 && ok || { bad "size"; cat "$tmp/size"; }
# 4-bit codes + f16 scale + u8 zero per 8 weights = 7 bits; the decoder also has bf16 norms.
bits=$(awk '$1 == "lm_head" {print $4}' "$tmp/size")
[ "$bits" = "7.000" ] && ok || bad "lm_head at $bits bits per weight, want 7.000"
"$bin" size --json "$tmp/a4" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["params"] == 30096, d' && ok || bad "size --json"
full=$("$bin" size --json "$fx/tiny_a" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensor_bytes"])')
small=$("$bin" size --json "$tmp/a4" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tensor_bytes"])')
[ "$small" -lt $((full / 4)) ] && ok || bad "4-bit tensors $small bytes, fp32 $full"
# Quantizing it again is refused.
sed "s#model: .*#model: $tmp/a4#; s#output: .*#output: $tmp/a4again#" "$tmp/gptq.yaml" >"$tmp/again.yaml"
"$bin" quantize --config "$tmp/again.yaml" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "already quantized" "$tmp/err" && [ ! -e "$tmp/a4again" ] && ok || { bad "double quantization: rc $rc"; cat "$tmp/err"; }

# tiny_b: 8-bit RTN decoder; translate runs on it.
printf 'model: %s/tiny_b\noutput: %s/b8\nquantize:\n  decoder_linear: {bits: 8, group_size: 8}\n  lm_head: {bits: 8, group_size: 8}\n' "$fx" "$tmp" >"$tmp/rtn.yaml"
"$bin" quantize --config "$tmp/rtn.yaml" >"$tmp/out" 2>&1 && ok || { bad "rtn quantize"; cat "$tmp/out"; }
out=$("$bin" translate --model "$tmp/b8" --lang de --max-new-tokens 8 "$fx/translate/clip.wav" 2>"$tmp/err")
[ $? -eq 0 ] && [ -n "$out" ] && ok || { bad "translate on the quantized model"; cat "$tmp/err"; }

# A quantized teacher distils a student (a quantized student trains quantization-aware:
# tests/cli/qat.sh).
train_job() { # student, teacher, output
  printf 'student: %s\nteacher: %s\noutput: %s\ndata: {train: %s, dev: %s}\ntrain: {steps: 2, batch: 4, micro_batch: 2, eval_every: 2, eval_segments: 2, checkpoint_every: 2, max_len: 64, max_frames: 100}\n' \
    "$1" "$2" "$3" "$tmp/set.h5" "$tmp/set.h5" >"$tmp/train.yaml"
}
train_job "$fx/tiny_a" "$tmp/a4" "$tmp/run1"
"$bin" train --config "$tmp/train.yaml" --quiet >"$tmp/out" 2>&1 && [ -d "$tmp/run1/final" ] && ok || { bad "distillation from a quantized teacher"; cat "$tmp/out"; }

refuse() { # job text, expected message
  printf '%b' "$1" >"$tmp/bad.yaml"
  "$bin" quantize --config "$tmp/bad.yaml" >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q "$2" "$tmp/err" && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
}
refuse "model: $fx/tiny_b\noutput: $tmp/x1\nquantize:\n  encoder_linear: {bits: 4, group_size: 8}\n" "does not divide the row width 12"
refuse "model: $fx/tiny_b\noutput: $tmp/x2\nquantize:\n  decoder_linear: {bits: 4, group_size: 8, method: gptq}\n" "needs calibration.data"
refuse "model: $fx/tiny_b\noutput: $tmp/x3\nquantize:\n  decoder_linear: {bits: 5}\n" "bits must be"
refuse "model: $fx/tiny_b\noutput: $tmp/x4\n" "nothing to do"
refuse "model: $fx/tiny_b\noutput: $tmp/b8\nquantize:\n  lm_head: {bits: 8, group_size: 8}\n" "already exists"
refuse "model: $fx/tiny_b\noutput: $tmp/x5\nquantize:\n  lm_head: {bits: 8, group_size: 12}\n" "multiple of 8"
ls "$tmp" | grep -q "^x" && bad "a refused job left an output behind" || ok
"$bin" size "$tmp/nowhere" >/dev/null 2>&1; [ $? -eq 1 ] && ok || bad "size of a missing directory"
"$bin" quantize --help | grep -q "damp_percent" && ok || bad "--help"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
