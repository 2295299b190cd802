#!/usr/bin/env bash
# tests/gpu/profile_diff.py (which check.sh runs against run 5's profile) on the two tables of
# run 5's committed log: flash attention (table 0) against GEMM attention (table 1). The
# differences are the logs' own numbers subtracted by hand; a row only one table has, and a
# table the file does not have, are covered too.
set -uo pipefail
src=${AUDISTILL_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
py=${PYTHON:-python3}
log=$src/experiments/gpu/2026-11-28-h100-5-profile-4880.log
tmp=$(mktemp -d "${AUDISTILL_TEST_TMP:-/tmp}/profile_diff.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
[ -f "$log" ] || { echo "FAIL: $log is missing"; exit 1; }

"$py" "$src/tests/gpu/profile_diff.py" "$log" "$log" --before-table 1 >"$tmp/out" 2>&1 && ok ||
    { bad "profile_diff failed"; cat "$tmp/out"; }
# attention 22.284 -> 14.845 ms, attention_backward 10.837 -> 7.407, table ops 148.7 -> 137.9
# (the headers' 0.149 and 0.138 s), and the largest change first
row() { grep -E "^$1 " "$tmp/out" | head -1 | awk '{print $(NF-2), $(NF-1), $NF}'; }
[ "$(row attention)" == "22.284 14.845 -7.439" ] && ok || bad "attention row: $(row attention)"
[ "$(row attention_backward)" == "10.837 7.407 -3.430" ] && ok ||
    bad "attention_backward row: $(row attention_backward)"
[ "$(sed -n 2p "$tmp/out" | awk '{print $1}')" == attention ] && ok || bad "largest change not first"
[ "$(grep '^in table ops' "$tmp/out" | awk '{print $(NF-2), $(NF-1), $NF}')" == "149.0 138.0 -11.0" ] &&
    ok || bad "totals: $(grep '^in table ops' "$tmp/out")"
# a row only the after-table has: calls 0 -> N, before 0
sed '0,/^attention_backward /{/^attention_backward /d}' "$log" >"$tmp/fewer.log"
"$py" "$src/tests/gpu/profile_diff.py" "$tmp/fewer.log" "$log" >"$tmp/out2" 2>&1 && ok ||
    { bad "profile_diff (a missing row) failed"; cat "$tmp/out2"; }
[ "$(grep -E '^attention_backward ' "$tmp/out2" | awk '{print $(NF-3), $(NF-2), $(NF-1), $NF}')" == \
    "0->4 0.000 7.407 +7.407" ] && ok || bad "one-sided row: $(grep -E '^attention_backward ' "$tmp/out2")"
# a table the file does not have, and a file without tables: a clear failure
if "$py" "$src/tests/gpu/profile_diff.py" "$log" "$log" --after-table 5 >"$tmp/out3" 2>&1; then
    bad "table 5 accepted"
else
    grep -q "has 2 tables, no table 5" "$tmp/out3" && ok || { bad "table 5 message"; cat "$tmp/out3"; }
fi
# per kind of work: the sums of the log's own rows by their first word (awk over each table)
sum_kind() { # TABLE(0|1) REGEX: the ms column summed over that table's rows whose op matches
    awk -v want="$1" -v re="$2" '/^op profile/ {t++} /^profiled step/ {next}
        t == want + 1 && $1 ~ re && $1 != "op" {s += $(NF-4)} END {printf "%.3f", s}' "$log"
}
gemm='^(linear|linear_residual|linear_backward|matmul|conv1d)$' attn='^attention(_backward)?$'
kind_row() { grep -E "^  all $1 " "$tmp/out" | awk '{print $(NF-2), $(NF-1)}'; }
[ "$(kind_row GEMMs)" == "$(sum_kind 1 "$gemm") $(sum_kind 0 "$gemm")" ] && ok ||
    bad "GEMM totals: $(kind_row GEMMs), the rows sum to $(sum_kind 1 "$gemm") $(sum_kind 0 "$gemm")"
[ "$(kind_row attention)" == "33.121 22.252" ] && ok || bad "attention totals: $(kind_row attention)"
other_re='^(linear|linear_residual|linear_backward|matmul|conv1d|attention|attention_backward)$'
other_sum() {
    awk -v want="$1" -v re="$other_re" '/^op profile/ {t++} /^profiled step/ {next}
        t == want + 1 && NF > 6 && $1 !~ re && $1 != "op" {s += $(NF-4)} END {printf "%.3f", s}' "$log"
}
[ "$(kind_row other)" == "$(other_sum 1) $(other_sum 0)" ] && ok ||
    bad "other totals: $(kind_row other), the rows sum to $(other_sum 1) $(other_sum 0)"
# --top N: the N largest changes, then the kinds and the table total all the same
"$py" "$src/tests/gpu/profile_diff.py" "$log" "$log" --before-table 1 --top 2 >"$tmp/top" 2>&1 && ok ||
    { bad "profile_diff --top failed"; cat "$tmp/top"; }
[ "$(grep -cvE '^(op \[weight\]|  all |in table ops)' "$tmp/top")" == 2 ] && ok ||
    { bad "--top 2 printed other rows"; cat "$tmp/top"; }
[ "$(sed -n 3p "$tmp/top" | awk '{print $1}')" == attention_backward ] &&
    [ "$(grep -c '^  all \|^in table ops' "$tmp/top")" == 4 ] && ok || { bad "--top 2 rows"; cat "$tmp/top"; }
echo "no table here" >"$tmp/none.log"
if "$py" "$src/tests/gpu/profile_diff.py" "$tmp/none.log" "$log" >"$tmp/out4" 2>&1; then
    bad "a file without tables accepted"
else
    grep -q "no op profile table in" "$tmp/out4" && ok || { bad "no-table message"; cat "$tmp/out4"; }
fi
echo "profile_diff: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
