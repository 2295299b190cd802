#!/usr/bin/env bash
# Quantization-aware training (train/qat.h) on tiny_a quantized by GPTQ to 3-bit linears, a
# 2-bit symmetric lm_head and 4-bit embeddings:
# 1. start = the PTQ model: with lr 0 every per-step loss equals plain training of the same
#    weights dequantized by numpy, and the exported model is the PTQ model tensor for tensor;
# 2. export = training: the final model's codes dequantize bit for bit to numpy's fake
#    quantization of the checkpoint's masters with its learned scales; it runs (translate);
# 3. exact resume; fixed scales stay the PTQ scales; training from an offline teacher cache;
#    a bad qat.scales is refused.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
py=${PYTHON:-python3}
check="$AUDISTILL_SOURCE/tests/cli/qat_check.py"
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/qat.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$py" -c "import numpy, safetensors" 2>/dev/null || { echo "SKIP: needs python3 with numpy and safetensors"; exit 77; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }

cat >"$tmp/ptq.yaml" <<EOF2
model: $fx/tiny_a
output: $tmp/ptq
calibration: {data: $tmp/set.h5, segments: 8, batch: 4, max_frames: 100}
quantize:
  decoder_linear: {bits: 3, group_size: 8, method: gptq}
  encoder_linear: {bits: 3, group_size: 8, method: gptq}
  lm_head: {bits: 2, group_size: 8, symmetric: true, method: gptq}
  embed_tokens: {bits: 4, group_size: 8}
EOF2
"$bin" quantize --config "$tmp/ptq.yaml" >"$tmp/out" 2>&1 || { cat "$tmp/out"; echo "cannot quantize"; exit 1; }

job() { # name, student, steps, lr, scales
  cat >"$tmp/$1.yaml" <<EOF2
student: $2
teacher: $fx/tiny_a
output: $tmp/$1
data: {train: $tmp/set.h5}
train: {steps: $3, batch: 4, micro_batch: 2, lr: $4, warmup: 0, log_every: 1, checkpoint_every: 3, max_len: 64, max_frames: 100}
distill: {alpha: 0.5}
qat: {scales: $5}
EOF2
  echo "$tmp/$1.yaml"
}
losses() { grep -o '"train/loss": [^,]*' "$1/metrics.jsonl" | cut -d' ' -f2; }

# 1. lr 0: the run is the PTQ model throughout.
"$bin" train --config "$(job still "$tmp/ptq" 3 0 learned)" --quiet 2>"$tmp/err" && ok || { bad "lr-0 run"; cat "$tmp/err"; }
grep -q "quantization-aware training: 29 group-quantized weights" "$tmp/err" && ok || { bad "no QAT log line"; cat "$tmp/err"; }
"$py" "$check" same "$tmp/ptq" "$tmp/still/final" >"$tmp/out" 2>&1 && ok || { bad "lr-0 export differs from the PTQ model"; cat "$tmp/out"; }
mkdir -p "$tmp/deq" && cp "$tmp/ptq"/*.json "$tmp/ptq"/merges.txt "$tmp/deq/"
"$py" "$check" dequantize "$tmp/ptq" "$tmp/deq" || bad "numpy dequantization"
sed "s#student: .*#student: $tmp/deq#; s#output: .*#output: $tmp/plain#; /^qat:/d" "$tmp/still.yaml" >"$tmp/plain.yaml"
"$bin" train --config "$tmp/plain.yaml" --quiet 2>"$tmp/err" && ok || { bad "plain run"; cat "$tmp/err"; }
paste <(losses "$tmp/still") <(losses "$tmp/plain") | awk '{d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * $2 || NF != 2) bad = 1; n++} END {exit bad || n != 3}' \
  && ok || { bad "QAT at lr 0 is not the PTQ model: losses"; paste <(losses "$tmp/still") <(losses "$tmp/plain"); }

# 2. training moves codes; the export is exactly what the last step computed with.
"$bin" train --config "$(job learned "$tmp/ptq" 6 2e-2 learned)" --quiet 2>"$tmp/err" && ok || { bad "learned-scale run"; cat "$tmp/err"; }
"$py" "$check" exported "$tmp/learned/checkpoints/step_00000006" "$tmp/ptq" "$tmp/learned/final" >"$tmp/out" 2>&1 && ok || { bad "export is not the trained weights"; cat "$tmp/out"; }
moved=$(grep -o '[0-9]* of' "$tmp/out" | cut -d' ' -f1)
[ "${moved:-0}" -gt 0 ] && ok || { bad "no code moved in 6 steps"; cat "$tmp/out"; }
"$bin" inspect "$tmp/learned/final" 2>&1 | grep -q "QGROUP x" && ok || bad "the exported model does not inspect as quantized"
out=$("$bin" translate --model "$tmp/learned/final" --lang de --max-new-tokens 4 "$fx/translate/clip.wav" 2>"$tmp/err")
[ $? -eq 0 ] && ok || { bad "translate on the QAT model"; cat "$tmp/err"; }
[ "$("$bin" size --json "$tmp/learned/final" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tensor_bytes"])')" = \
  "$("$bin" size --json "$tmp/ptq" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["tensor_bytes"])')" ] && ok || bad "the QAT model is not the PTQ model's size"

# 3. exact resume (masters, learned scales and their moments all restored).
j=$(job resumed "$tmp/ptq" 6 2e-2 learned)
"$bin" train --config "$j" --quiet --stop-after 3 2>/dev/null || bad "first half"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume"; cat "$tmp/err"; }
cmp -s "$tmp/learned/final/model.safetensors" "$tmp/resumed/final/model.safetensors" && ok || bad "resumed QAT model differs"
cmp -s "$tmp/learned/checkpoints/step_00000006/optimizer.safetensors" "$tmp/resumed/checkpoints/step_00000006/optimizer.safetensors" && ok || bad "resumed optimizer state differs"
[ "$(losses "$tmp/learned")" = "$(losses "$tmp/resumed")" ] && ok || bad "resumed losses differ"

# Fixed scales: the scales are the PTQ ones, the codes move.
"$bin" train --config "$(job fixed "$tmp/ptq" 6 2e-2 fixed)" --quiet 2>"$tmp/err" && ok || { bad "fixed-scale run"; cat "$tmp/err"; }
"$py" "$check" exported "$tmp/fixed/checkpoints/step_00000006" "$tmp/ptq" "$tmp/fixed/final" >"$tmp/out" 2>&1 && ok || { bad "fixed: export"; cat "$tmp/out"; }
"$py" "$check" same-scales "$tmp/ptq" "$tmp/fixed/final" >"$tmp/out" 2>&1 && ok || { bad "fixed scales changed"; cat "$tmp/out"; }

# From an offline teacher cache (k = vocabulary) instead of the online teacher: the same start.
printf 'teacher: %s/tiny_a\ndata: %s/set.h5\noutput: %s/cache.h5\ntop_k: 280\nmax_len: 64\nmax_frames: 100\nbatch: 4\n' "$fx" "$tmp" "$tmp" >"$tmp/cache.yaml"
"$bin" teacher-cache --config "$tmp/cache.yaml" 2>"$tmp/err" || { bad "teacher-cache"; cat "$tmp/err"; }
sed -e "s#^teacher: .*##" -e "s#output: .*#output: $tmp/cached#" -e "s#distill: {alpha: 0.5}#distill: {alpha: 0.5, teacher_cache: $tmp/cache.h5}#" "$tmp/learned.yaml" >"$tmp/cached.yaml"
"$bin" train --config "$tmp/cached.yaml" --quiet 2>"$tmp/err" && ok || { bad "QAT from the teacher cache"; cat "$tmp/err"; }
paste <(losses "$tmp/learned" | head -1) <(losses "$tmp/cached" | head -1) | awk '{d = $1 - $2; if (d < 0) d = -d; exit !(NF == 2 && d <= 1e-6 * $1)}' \
  && ok || { bad "QAT from the cache starts elsewhere"; paste <(losses "$tmp/learned") <(losses "$tmp/cached"); }
"$py" "$check" exported "$tmp/cached/checkpoints/step_00000006" "$tmp/ptq" "$tmp/cached/final" >"$tmp/out" 2>&1 && ok || { bad "cached: export"; cat "$tmp/out"; }

sed 's/scales: fixed/scales: sometimes/' "$tmp/fixed.yaml" >"$tmp/bad.yaml"
sed -i "s#output: .*#output: $tmp/bad#" "$tmp/bad.yaml"
"$bin" train --config "$tmp/bad.yaml" --quiet >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -q "learned|fixed\|learned, fixed" "$tmp/err" && [ ! -e "$tmp/bad/final" ] && ok || { bad "bad qat.scales: rc $rc"; cat "$tmp/err"; }

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
