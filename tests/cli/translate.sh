#!/usr/bin/env bash
# audistill translate end to end (audio file -> log-mel -> encoder -> prompt -> generate ->
# text) equals transformers' processor + generate() on the tiny_b model, greedy and beam 4,
# both languages (fixture tests/fixtures/translate); bad input fails clearly.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/translate.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
while IFS=$'\t' read -r lang beams want; do
  got=$("$bin" translate --model "$fx/tiny_b" --lang "$lang" --beam "$beams" --max-new-tokens 12 "$fx/translate/clip.wav")
  [ "$got" = "$want" ] && ok || bad "$lang beam $beams: got '$got', transformers '$want'"
done <"$fx/translate/expected.tsv"
printf '%s\n%s\n' "$fx/translate/clip.wav" "$fx/translate/clip.wav" >"$tmp/list"
[ "$("$bin" translate --model "$fx/tiny_b" --lang de --max-new-tokens 12 --list "$tmp/list" | wc -l)" -eq 2 ] && ok || bad "--list: one line per clip"
printf 'not audio' >"$tmp/bad.wav"
"$bin" translate --model "$fx/tiny_b" --lang de "$tmp/bad.wav" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "bad.wav" "$tmp/err" && ok || { bad "unreadable audio: rc $rc"; cat "$tmp/err"; }
a=$("$bin" translate --model "$fx/tiny_b" --lang en --max-new-tokens 12 "$fx/translate/clip.wav")
b=$("$bin" translate --model "$fx/tiny_b" --prompt "Transcribe the English speech:" --lang de --max-new-tokens 12 "$fx/translate/clip.wav")
[ -n "$a" ] && [ "$a" = "$b" ] && ok || bad "--lang en is not the transcription prompt ('$a' vs '$b')"
"$bin" translate --model "$fx/tiny_b" --lang xx "$fx/translate/clip.wav" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "unknown language must be a usage error"
"$bin" translate --model "$tmp/none" --lang de "$fx/translate/clip.wav" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && ok || bad "missing model"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
