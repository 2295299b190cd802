#!/usr/bin/env bash
# audistill inspect: the published counts of the real config, transformers' own counts on a
# tiny model it saved (bf16, 3 shards), and clear failures for configs and files that disagree.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/inspect.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
count_of() { awk -v c="$1" '$1 == c {print $2}' "$2"; }

$bin inspect --config "$fx/qwen2_audio_7b/config.json" >"$tmp/real.txt" || bad "inspect --config failed"
for pair in audio_encoder:636968960 projector:5246976 decoder_layers:6476664832 \
            embed_tokens:639107072 lm_head:639107072 total:8397094912; do
  c=${pair%%:*} want=${pair#*:}
  got=$(count_of "$c" "$tmp/real.txt")
  [ "$got" = "$want" ] && ok || bad "real config $c: got '$got', want $want"
done
[ "$(awk '$1 == "total" {print $3}' "$tmp/real.txt")" = 876 ] && ok || bad "real config: not 876 tensors"

$bin inspect "$fx/inspect_tiny" >"$tmp/tiny.txt" || bad "inspect on the tiny model failed"
for c in audio_encoder projector decoder_layers embed_tokens lm_head total; do
  want=$(${PYTHON:-python3} -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" \
         "$fx/inspect_tiny/expected_counts.json" "$c")
  got=$(count_of "$c" "$tmp/tiny.txt")
  [ "$got" = "$want" ] && ok || bad "tiny $c: got '$got', transformers counts $want"
done
grep -q "dtypes: BF16 x78" "$tmp/tiny.txt" && ok || bad "tiny dtypes line"
grep -q "check: ok" "$tmp/tiny.txt" && ok || bad "tiny check line"

# A config that disagrees with the weights: each case must exit 1 and list the problem.
expect_problem() { # name, python edit of the config dict, expected text
  mkdir -p "$tmp/$1" && cp "$fx/inspect_tiny/"* "$tmp/$1/"
  ${PYTHON:-python3} - "$tmp/$1/config.json" "$2" <<'PY'
import json, sys
path, edit = sys.argv[1], sys.argv[2]
cfg = json.load(open(path))
exec(edit)
json.dump(cfg, open(path, "w"))
PY
  $bin inspect "$tmp/$1" >"$tmp/$1.out" 2>"$tmp/$1.err"
  rc=$?
  if [ $rc -eq 1 ] && grep -q "$3" "$tmp/$1.out" && grep -q "does not match" "$tmp/$1.err"; then ok
  else bad "$1: rc $rc, expected '$3'"; cat "$tmp/$1.out" "$tmp/$1.err"; fi
}
expect_problem fewer_layers 'cfg["text_config"]["num_hidden_layers"] = 2' "extra: language_model.model.layers.2"
expect_problem more_layers 'cfg["text_config"]["num_hidden_layers"] = 4' "missing: language_model.model.layers.3"
expect_problem wider_ffn 'cfg["text_config"]["intermediate_size"] = 60' "shape mismatch: language_model.model.layers.0.mlp.gate_proj.weight is \[56, 32\], config implies \[60, 32\]"

# Broken inputs: non-zero exit and a message naming the file; never a crash.
mkdir -p "$tmp/truncated" && cp "$fx/inspect_tiny/"* "$tmp/truncated/"
shard=$(ls "$tmp/truncated/"model-00002-*.safetensors)
head -c 20000 "$shard" >"$shard.cut" && mv "$shard.cut" "$shard"
$bin inspect "$tmp/truncated" >/dev/null 2>"$tmp/trunc.err"; rc=$?
[ $rc -eq 1 ] && grep -q "model-00002-of-00003.safetensors.*truncated" "$tmp/trunc.err" && ok || { bad "truncated shard: rc $rc"; cat "$tmp/trunc.err"; }

echo '{"model_type": "qwen2_audio", "text_config": {"hidden_size": "x"}}' >"$tmp/bad.json"
$bin inspect --config "$tmp/bad.json" 2>"$tmp/bad.err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad.json: text_config.hidden_size must be an integer" "$tmp/bad.err" && ok || bad "bad config: rc $rc"
$bin inspect --config "$tmp/missing.json" 2>/dev/null; [ $? -eq 1 ] && ok || bad "missing config"
$bin inspect 2>/dev/null; [ $? -eq 2 ] && ok || bad "usage error must exit 2"
$bin inspect --help | grep -q "usage" && ok || bad "--help"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
