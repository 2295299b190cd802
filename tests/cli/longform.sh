#!/usr/bin/env bash
# Long-form evaluation end to end, with a stand-in translator so no model is needed:
# a synthetic talk -> audistill segment -> "translate" each found segment (the stand-in
# returns the English text of the reference sentences whose midpoints fall inside it) ->
# audistill resegment onto the reference segments -> audistill score. A correct chain gives
# BLEU 100; a broken link (segments lost, misaligned, resegmentation off) does not.
set -uo pipefail
bin=$AUDISTILL_BIN
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed (scripts/install-deps.sh installs it)"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/longform.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$bin" synth --out "$tmp/syn" --train 2 --dev 2 --eval 12 --talks 1 --seed 7 >/dev/null 2>&1 || { echo "synth failed"; exit 1; }
ev=$tmp/syn/eval
ref_yaml=$ev/text/txt/ACL.6060.eval.en-xx.yaml
"$bin" segment "$ev/full_wavs/talk_1.wav" --max-seconds 8 -o "$tmp/found.yaml" >/dev/null 2>&1 && ok || bad "segment failed"
n_found=$(grep -c '^- ' "$tmp/found.yaml")
[ "$n_found" -ge 1 ] && ok || bad "no segments found"
# offset/duration pairs of a segmentation YAML, one "start end" per line
spans() { sed -n 's/.*duration: *\([0-9.]*\), *offset: *\([0-9.]*\).*/\2 \1/p' "$1" | awk '{print $1, $1 + $2}'; }
spans "$ref_yaml" >"$tmp/ref.spans"
spans "$tmp/found.yaml" >"$tmp/found.spans"
# The stand-in translator: a found segment's text is the reference sentences centred in it.
awk 'NR == FNR {mid[NR] = ($1 + $2) / 2; n = NR; next}
     FILENAME == ARGV[2] {text[FNR] = $0; next}
     {line = ""; for (i = 1; i <= n; i++) if (mid[i] >= $1 && mid[i] < $2) line = line (line ? " " : "") text[i]; print line}' \
    "$tmp/ref.spans" "$ev/text/txt/ACL.6060.eval.en-xx.en.txt" "$tmp/found.spans" >"$tmp/stream.en"
[ "$(wc -l <"$tmp/stream.en")" -eq "$n_found" ] && ok || bad "one output line per found segment"
"$bin" resegment --hyp "$tmp/stream.en" --ref "$ev/text/txt/ACL.6060.eval.en-xx.en.txt" --lang en -o "$tmp/reseg.en" >/dev/null 2>&1 && ok || bad "resegment failed"
[ "$(wc -l <"$tmp/reseg.en")" -eq 12 ] && ok || bad "resegmented output has not one line per reference ($(wc -l <"$tmp/reseg.en"))"
"$bin" score --hyp "$tmp/reseg.en" --ref "$ev/text/txt/ACL.6060.eval.en-xx.en.txt" --lang en --json >"$tmp/score.json" && ok || bad "score failed"
bleu=$(sed -n 's/.*"bleu": \([0-9.]*\).*/\1/p' "$tmp/score.json")
awk -v b="$bleu" 'BEGIN {exit !(b > 99.9)}' && ok || { bad "long-form chain BLEU $bleu, expected 100"; cat "$tmp/found.yaml"; }
echo "long-form: $n_found segments found for 12 sentences, BLEU after resegmentation $bleu"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
