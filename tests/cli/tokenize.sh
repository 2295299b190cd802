#!/usr/bin/env bash
# audistill tokenize: the first 100 fixture sentences give transformers' ids through the
# command line too, and the ids decode back; bad input is refused with the line number.
set -uo pipefail
bin=$AUDISTILL_BIN
vocab=$AUDISTILL_REF/qwen2-tokenizer
[ -d "$vocab" ] || { echo "SKIP: $vocab is absent (shared reference files)"; exit 77; }
fx=$AUDISTILL_FIXTURES/tokenizer/qwen2_sentences.txt
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/tokenize.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
# Sentences with backslashes are left out: the fixture escapes them differently.
awk -v in_file="$tmp/in" -v want_file="$tmp/want" '
  NR % 2 == 1 { text = $0; next }
  index(text, "\\") == 0 && kept < 100 { print text > in_file; print $0 > want_file; kept++ }
' "$fx"
"$bin" tokenize --tokenizer "$vocab" <"$tmp/in" >"$tmp/got" && ok || bad "tokenize failed"
cmp -s "$tmp/got" "$tmp/want" && ok || { bad "ids differ from transformers"; diff "$tmp/got" "$tmp/want" | head -5; }
[ "$(wc -l <"$tmp/got")" -eq "$(wc -l <"$tmp/in")" ] && ok || bad "one output line per input line"
printf '151644 8948 198 151645\n' | "$bin" tokenize --tokenizer "$vocab" --decode >"$tmp/dec"
[ "$(head -1 "$tmp/dec")" = "<|im_start|>system" ] && [ "$(tail -1 "$tmp/dec")" = "<|im_end|>" ] && ok || bad "decode: $(cat "$tmp/dec")"
printf '1 2 x\n' | "$bin" tokenize --tokenizer "$vocab" --decode >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "line 1" "$tmp/err" && ok || bad "bad ids: rc $rc"
printf '\xff\xfe\n' | "$bin" tokenize --tokenizer "$vocab" >/dev/null 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "not valid UTF-8" "$tmp/err" && ok || bad "invalid UTF-8: rc $rc"
"$bin" tokenize --tokenizer "$tmp/none" </dev/null 2>/dev/null; [ $? -eq 1 ] && ok || bad "missing tokenizer dir"
"$bin" tokenize 2>/dev/null; [ $? -eq 2 ] && ok || bad "usage error exits 2"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
