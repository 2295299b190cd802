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
# sacreBLEU's corpus scores from the fixture, rounded as the command prints them
read -r want_bleu want_chrf want_chrfpp < <("${PYTHON:-python3}" -c "import json,sys; d=json.load(open(sys.argv[1])); print('%.2f %.2f %.2f' % (d['bleu'], d['chrf'], d['chrf++']))" "$fx/de.scores.json")
grep -q "^BLEU = $want_bleu " "$tmp/out" && grep -q "^chrF2 = $want_chrf\$" "$tmp/out" && grep -q "^chrF2++ = $want_chrfpp\$" "$tmp/out" && ok || { bad "scores (sacreBLEU: $want_bleu $want_chrf $want_chrfpp)"; cat "$tmp/out"; }
grep -q "tok:13a|smooth:exp" "$tmp/out" && ok || bad "signature"
[ "$("$bin" score --hyp "$fx/zh.hyp" --ref "$fx/zh.ref" --lang zh --sentence | grep -c '^line ')" -eq 320 ] && ok || bad "--sentence prints one line per pair"
# Files that are pipes (process substitution, /dev/stdin) are read to their end, not as empty.
[ "$(cat "$fx/de.hyp" | "$bin" score --hyp /dev/stdin --ref "$fx/de.ref" --lang de | head -1)" = "$(head -1 "$tmp/out")" ] && ok || bad "a hypothesis file on a pipe must score as the file does"
head -5 "$fx/de.hyp" >"$tmp/short"
"$bin" score --hyp "$tmp/short" --ref "$fx/de.ref" --lang de 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "has 5 lines but" "$tmp/err" && ok || bad "line-count mismatch: rc $rc"
# COMET: a stand-in comet-score (same arguments and output format as unbabel-comet's) on
# PATH, a file name with a quote and a space, then no comet-score at all.
mkdir -p "$tmp/bin" "$tmp/empty"
cat >"$tmp/bin/comet-score" <<'EOF'
#!/bin/sh
[ "$1" = -s ] && [ "$3" = -t ] && [ "$5" = -r ] && [ "$7" = --quiet ] || exit 3
i=0
while read -r _; do printf '%s\tSegment %d\tscore: 0.5000\n' "$4" "$i"; i=$((i + 1)); done <"$4"
printf '%s\tscore: 0.8123\n' "$4"
EOF
chmod +x "$tmp/bin/comet-score"
cp "$fx/de.hyp" "$tmp/it's a.hyp"
PATH="$tmp/bin:$PATH" "$bin" score --hyp "$tmp/it's a.hyp" --ref "$fx/de.ref" --lang de --comet --src "$fx/de.ref" >"$tmp/out" 2>"$tmp/err" && grep -q "^COMET = 0.8123 " "$tmp/out" && ok || { bad "COMET through comet-score"; cat "$tmp/err"; }
PATH="$tmp/bin:$PATH" "$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de --comet --src "$fx/de.ref" --json | grep -q '"comet": 0.812300' && ok || bad "COMET in JSON"
PATH="$tmp/empty" "$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de --comet --src "$fx/de.ref" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "COMET is not available" "$tmp/err" && grep -q "^BLEU = $want_bleu " "$tmp/out" && ok || bad "missing COMET must be said, other scores kept (rc $rc)"
"$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de --comet 2>/dev/null; [ $? -eq 2 ] && ok || bad "--comet without --src is a usage error"
[ "$("$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang de --sentence --chrf-plus | grep -c 'chrF++ ')" -eq 320 ] && ok || bad "--chrf-plus per sentence"
"$bin" score --hyp "$fx/de.hyp" --ref "$fx/de.ref" --lang xx 2>/dev/null; [ $? -eq 2 ] && ok || bad "unknown language"
# --paired-bs: the fixture's two systems (tests/fixtures/make_significance_fixtures.py) against
# sacreBLEU's own PairedTest at its defaults; audistill draws its own resamples, so p within 0.03.
sig=$AUDISTILL_FIXTURES/significance
head -200 "$fx/de.hyp" >"$tmp/base200"; head -200 "$fx/de.ref" >"$tmp/ref200"
"$bin" score --hyp "$sig/de.system" --ref "$tmp/ref200" --lang de --paired-bs "$tmp/base200" --json >"$tmp/pbs.json" && ok || bad "--paired-bs --json failed"
"${PYTHON:-python3}" - "$tmp/pbs.json" "$sig/de.json" <<'PY' && ok || bad "--paired-bs against sacreBLEU's PairedTest"
import json, sys
got, want = json.load(open(sys.argv[1]))["paired_bs"], json.load(open(sys.argv[2]))
assert got["samples"] == 1000 and got["seed"] == 12345, got
for k in ("bleu", "chrf"):
    w = want[k]
    assert abs(got[k]["baseline"] - w["baseline"]) < 1e-4 and abs(got[k]["system"] - w["system"]) < 1e-4, (k, got[k], w)
    assert abs(got[k]["p"] - w["default_1000"]["p"]) < 0.03, (k, got[k]["p"], w["default_1000"]["p"])
    assert got[k]["delta_lo"] < got[k]["system"] - got[k]["baseline"] < got[k]["delta_hi"], got[k]
PY
"$bin" score --hyp "$sig/de.system" --ref "$tmp/ref200" --lang de --paired-bs "$tmp/base200" | grep -q "^BLEU .*difference +0.9[0-9] .* p = 0\.0" && ok || bad "--paired-bs text output"
"$bin" score --hyp "$sig/de.system" --ref "$tmp/ref200" --lang de --paired-bs "$fx/de.hyp" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "the baseline) has 320 lines but" "$tmp/err" && ok || bad "--paired-bs line-count mismatch: rc $rc"
"$bin" score --hyp "$sig/de.system" --ref "$tmp/ref200" --lang de --paired-bs "$tmp/base200" --bs-samples 0 2>/dev/null; [ $? -eq 2 ] && ok || bad "--bs-samples 0 is a usage error"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
