#!/usr/bin/env bash
# audistill train with the CTC term on the audio positions (ctc.weight), on the tiny model and a
# random prepared set with English transcripts (tiny_set ... en):
# 1. the CTC loss per transcript token is logged and falls by >= 50% in 30 steps;
# 2. exact resume: 6 steps straight == 3 + 3 (per-step cross-entropy and CTC losses, weights);
# 3. ctc.weight 0 trains exactly as a job without the section;
# 4. refusals: no English targets in the set, an unknown transcript language, a teacher cache.
# (The gradient itself is checked against torch in tests/unit/test_train_graph.c.)
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/train_ctc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 12 16 280 7 en || { echo "cannot make the data set"; exit 1; }
"$AUDISTILL_TINY_SET" "$tmp/no_en.h5" 12 16 280 7 || { echo "cannot make the data set"; exit 1; }

job() { # name, steps, ctc section (may be empty), set -> job file path
  cat >"$tmp/$1.yaml" <<EOF
student: $fx/tiny_a
output: $tmp/$1
data:
  train: ${4:-$tmp/set.h5}
  dev: ${4:-$tmp/set.h5}
$3
train:
  steps: $2
  batch: 4
  micro_batch: 2
  lr: 5e-3
  warmup: 2
  log_every: 1
  checkpoint_every: 3
  max_len: 64
  max_frames: 100
EOF
  echo "$tmp/$1.yaml"
}
field() { grep -o "\"train/$2\": [^,}]*" "$1/metrics.jsonl" | sed 's/.*: //'; }

# 1. learning
"$bin" train --config "$(job learn 30 $'ctc:\n  weight: 1.0')" --quiet 2>"$tmp/err" || { bad "CTC run failed"; cat "$tmp/err"; }
first=$(field "$tmp/learn" ctc | head -1) last=$(field "$tmp/learn" ctc | tail -1)
[ "$(field "$tmp/learn" ctc | wc -l)" -eq 30 ] && ok || bad "expected 30 train/ctc values"
python3 -c "import sys; a, b = float('$first'), float('$last'); sys.exit(0 if b <= 0.5 * a else 1)" && ok || bad "CTC loss $first -> $last did not halve"
[ "$(field "$tmp/learn" ctc_infeasible | sort -u)" = "0" ] && ok || bad "no transcript should be infeasible"

# 2. exact resume
"$bin" train --config "$(job straight 6 $'ctc:\n  weight: 0.5')" --quiet 2>/dev/null || bad "straight run failed"
j=$(job resumed 6 $'ctc:\n  weight: 0.5')
"$bin" train --config "$j" --quiet --stop-after 3 2>/dev/null || bad "first half failed"
"$bin" train --config "$j" --quiet --resume auto 2>"$tmp/err" || { bad "resume failed"; cat "$tmp/err"; }
[ "$(field "$tmp/straight" ctc)" = "$(field "$tmp/resumed" ctc)" ] && [ "$(field "$tmp/straight" loss)" = "$(field "$tmp/resumed" loss)" ] && ok || bad "resumed per-step losses differ"
cmp -s "$tmp/straight/final/model.safetensors" "$tmp/resumed/final/model.safetensors" && ok || bad "resumed weights differ"

# 3. weight 0 is the plain job (and the CTC term does change training when on)
"$bin" train --config "$(job plain 4 '')" --quiet 2>/dev/null || bad "plain run failed"
"$bin" train --config "$(job zero 4 $'ctc:\n  weight: 0')" --quiet 2>/dev/null || bad "weight-0 run failed"
cmp -s "$tmp/plain/final/model.safetensors" "$tmp/zero/final/model.safetensors" && ok || bad "ctc.weight 0 changed training"
[ -z "$(field "$tmp/zero" ctc)" ] && ok || bad "ctc.weight 0 logged a CTC loss"
"$bin" train --config "$(job on 4 $'ctc:\n  weight: 0.5')" --quiet 2>/dev/null || bad "weight-0.5 run failed"
cmp -s "$tmp/plain/final/model.safetensors" "$tmp/on/final/model.safetensors" && bad "the CTC term changed nothing" || ok

# 4. refusals, before any step
"$bin" train --config "$(job no_en 4 $'ctc:\n  weight: 1' "$tmp/no_en.h5")" --quiet 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q 'need "en" targets in the prepared set' "$tmp/err" && [ ! -d "$tmp/no_en/final" ] && ok || { bad "set without English: rc $rc"; cat "$tmp/err"; }
"$bin" train --config "$(job fr 4 $'ctc:\n  weight: 1\n  transcript: fr')" --quiet 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q '"fr" targets' "$tmp/err" && ok || { bad "unknown transcript language: rc $rc"; cat "$tmp/err"; }
j=$(job cached 4 $'ctc:\n  weight: 1\ndistill:\n  alpha: 0.5\n  teacher_cache: '"$tmp/none.h5")
"$bin" train --config "$j" --quiet 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "teacher cache does not hold" "$tmp/err" && ok || { bad "CTC with a teacher cache: rc $rc"; cat "$tmp/err"; }
"$bin" train --config "$(job neg 4 $'ctc:\n  weight: -1')" --quiet 2>"$tmp/err"; rc=$?
[ $rc -ne 0 ] && grep -qi "weight" "$tmp/err" && ok || { bad "negative weight: rc $rc"; cat "$tmp/err"; }

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
