#!/usr/bin/env bash
# audistill score: sacreBLEU's numbers on the fixture through the command line, per-sentence
# output, and clear failures (line counts, COMET not installed, bad language).
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES/scoring
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/score.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de >"$tmp/out" && ok || bad "score failed"
grep -q "^BLEU = 73.83 " "$tmp/out" && grep -q "^chrF2 = 82.30" "$tmp/out" && grep -q "^chrF2++ = 82.27" "$tmp/out" && ok || { bad "scores"; cat "$tmp/out"; }
grep -q "tok:13a|smooth:exp" "$tmp/out" && ok || bad "signature"
[ "$("$bin" score --hyp "$fx/zh.hyp" --ref "$fx/zh.ref" --lang zh --sentence | grep -c '^line ')" -eq 320 ] && ok || bad "--sentence prints one line per pair"
head -5 "$fx/de.hyp" >"$tmp/short"
"$bin" score --hyp "$tmp/short" --ref "$fx/de.ref" --lang de 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "has 5 lines but" "$tmp/err" && ok || bad "line-count mismatch: rc $rc"
if ! command -v comet-score >/dev/null; then
  "$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de --comet --src "$fx/de.ref" >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q "COMET is not available" "$tmp/err" && ok || bad "missing COMET must be said (rc $rc)"
fi
"$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang xx 2>/dev/null; [ $? -eq 2 ] && ok || bad "unknown language"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
