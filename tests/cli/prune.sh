#!/usr/bin/env bash
# audistill prune from a job file: explicit layer drops write a loadable student whose report
# counts match the smaller config; bad jobs are refused before any work.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/prune.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

printf 'teacher: %s/tiny_a\noutput: %s/student\nprune:\n  drop_decoder_layers: [1]\n' "$fx" "$tmp" >"$tmp/job.yaml"
"$bin" prune --config "$tmp/job.yaml" >"$tmp/out.txt" 2>&1 || { bad "prune failed"; cat "$tmp/out.txt"; }
grep -q "uniform shapes" "$tmp/out.txt" && ok || bad "report does not say the student is uniform"
"$bin" inspect "$tmp/student" >"$tmp/inspect.txt" 2>&1 && ok || { bad "student does not pass inspect"; cat "$tmp/inspect.txt"; }
grep -q "decoder: 1 layers" "$tmp/inspect.txt" && ok || bad "student has not 1 decoder layer"
want=$(awk '$1 == "total" {print $3}' "$tmp/out.txt")
got=$(awk '$1 == "total" {print $2}' "$tmp/inspect.txt")
[ -n "$want" ] && [ "$want" = "$got" ] && ok || bad "report says $want parameters, inspect counts $got"
for f in vocab.json merges.txt tokenizer_config.json preprocessor_config.json; do
  [ -f "$tmp/student/$f" ] && ok || bad "student lacks $f"
done
# Running it again must not overwrite the student.
"$bin" prune --config "$tmp/job.yaml" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "already exists" "$tmp/err" && ok || bad "rerun: rc $rc"

# A uniform student is a plain Hugging Face directory: the fixture generator loaded exactly
# these weights with transformers' from_pretrained and got the reference logits (and
# tests/unit/test_prune.c checks audistill's logits on the same recipe against them).
printf 'teacher: %s/tiny_a\noutput: %s/export\nprune:\n  drop_decoder_layers: [1]\n  drop_encoder_layers: [0]\n' "$fx" "$tmp" >"$tmp/export.yaml"
"$bin" prune --config "$tmp/export.yaml" >/dev/null 2>&1 || bad "prune for export"
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"]["model.safetensors"])' "$fx/prune/tiny_a_export.json")
got=$(sha256sum "$tmp/export/model.safetensors" | cut -d' ' -f1)
[ "$want" = "$got" ] && ok || bad "the exported student's weights differ from those transformers loaded (regenerate with make_prune_fixtures.py if intended)"

# output_dtype: bf16 writes the same student rounded to bf16 (checked against the f32 export).
printf 'teacher: %s/tiny_a\noutput: %s/export16\noutput_dtype: bf16\nprune:\n  drop_decoder_layers: [1]\n  drop_encoder_layers: [0]\n' "$fx" "$tmp" >"$tmp/export16.yaml"
"$bin" prune --config "$tmp/export16.yaml" >/dev/null 2>&1 || bad "prune with output_dtype bf16"
python3 "$AUDISTILL_SOURCE/tests/cli/bf16_rounding.py" "$tmp/export/model.safetensors" "$tmp/export16/model.safetensors" >/dev/null && ok || bad "output_dtype bf16: not the f32 student rounded to bf16"
"$bin" inspect "$tmp/export16" >/dev/null 2>&1 && ok || bad "the bf16 student does not load"

refuse() { # job text, expected message
  printf '%b' "$1" >"$tmp/bad.yaml"
  "$bin" prune --config "$tmp/bad.yaml" >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q "$2" "$tmp/err" && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
}
refuse "teacher: $fx/tiny_a\noutput: $tmp/s2\nprune:\n  decoder_ffn: 16\n" "needs calibration.data"
refuse "teacher: $fx/tiny_a\noutput: $tmp/s3\nprune:\n  drop_decoder_layers: [7]\n" "names layer 7, but the model has 2"
refuse "teacher: $fx/tiny_a\nprune:\n  decoder_layers: 1\n" "required key 'output'"
refuse "teacher: $tmp/nowhere\noutput: $tmp/s4\n" "nowhere"
[ ! -e "$tmp/s3" ] && [ ! -e "$tmp/s4" ] && ok || bad "a failed prune left an output behind"
"$bin" prune --help | grep -q "drop_decoder_layers" && ok || bad "--help"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
