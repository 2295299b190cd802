#!/usr/bin/env bash
# audistill report on fake run directories: the Markdown table (order, values, Pareto marks),
# the PNG plots (when gnuplot is installed), the skipped-plot path, and clear failures.
set -uo pipefail
bin=$AUDISTILL_BIN
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

mkdir -p "$tmp"/runs/{teacher,int4,rtn,int2}
cat >"$tmp/runs/teacher/run.json" <<'EOF'
{"name": "teacher", "bytes": 16400000000, "parameters": {"layers": 32, "bits": 16},
 "scores": {"en-de": {"bleu": 25.1, "chrf": 55.0, "comet": 0.83}, "en-zh": {"bleu": 33.0}}}
EOF
cat >"$tmp/runs/int4/run.json" <<'EOF'
{"name": "int4-24l", "bytes": 3100000000, "parameters": {"layers": 24, "bits": 4},
 "scores": {"en-de": {"bleu": 23.0, "chrf": 53.0}, "en-zh": {"bleu": 31.5}}}
EOF
cat >"$tmp/runs/rtn/run.json" <<'EOF'
{"bytes": 3300000000, "parameters": {"method": "rtn"},
 "scores": {"en-de": {"bleu": 22.0}, "en-zh": {"bleu": 31.9}}}
EOF
cat >"$tmp/runs/int2/run.json" <<'EOF'
{"name": "int2-16l", "bytes": 1200000000, "scores": {"en-de": {"bleu": 12.0}}}
EOF

"$bin" report "$tmp"/runs/* -o "$tmp/out" >"$tmp/log" 2>&1 && ok || { bad "report failed"; cat "$tmp/log"; }
md=$tmp/out/report.md
[ -f "$md" ] && ok || bad "no report.md"
# sorted by size: int2 < int4 < rtn < teacher
order=$(grep -oE '^\| (int2-16l|int4-24l|rtn|teacher) ' "$md" | tr -d '| ' | tr '\n' ' ')
[ "$order" = "int2-16l int4-24l rtn teacher " ] && ok || bad "order by size: '$order'"
grep -qF '| Run | Size (MB) | Parameters | en-de BLEU | en-de chrF | en-de COMET | en-zh BLEU | Pareto |' "$md" && ok || bad "header"
grep -qF '| int2-16l | 1200.0 | - | 12.00 | - | - | - | en-de |' "$md" && ok || bad "int2 row"
grep -qF '| int4-24l | 3100.0 | layers=24, bits=4 | 23.00 | 53.00 | - | 31.50 | en-de, en-zh |' "$md" && ok || bad "int4 row"
# rtn: dominated for en-de (int4 smaller and better), on the en-zh frontier (31.9 > 31.5)
grep -qF '| rtn | 3300.0 | method=rtn | 22.00 | - | - | 31.90 | en-zh |' "$md" && ok || bad "rtn row"
grep -qF '| teacher | 16400.0 | layers=32, bits=16 | 25.10 | 55.00 | 0.8300 | 33.00 | en-de, en-zh |' "$md" && ok || bad "teacher row"
[ -f "$tmp/out/pareto-en-de.gp" ] && ok || bad "gnuplot script kept"
if command -v gnuplot >/dev/null; then
  for d in en-de en-zh; do
    png=$tmp/out/pareto-$d.png
    [ -s "$png" ] && [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] && ok || bad "$d PNG"
  done
  grep -qF '![BLEU against size, en-de](pareto-en-de.png)' "$md" && ok || bad "plot linked"
  ls -a "$tmp/out" | grep -q '\.tmp$' && bad "temporary files left" || ok
else
  echo "gnuplot not installed: PNG checks skipped"
fi

# Without gnuplot: table written, plots skipped with a message, exit 0.
AUDISTILL_GNUPLOT=/nonexistent/gnuplot "$bin" report "$tmp"/runs/* -o "$tmp/out2" >"$tmp/log" 2>&1; rc=$?
[ $rc -eq 0 ] && [ -f "$tmp/out2/report.md" ] && [ ! -e "$tmp/out2/pareto-en-de.png" ] && ok || bad "no-gnuplot run (rc $rc)"
grep -q "skipped: gnuplot not found" "$tmp/log" && grep -q "skipped" "$tmp/out2/report.md" && ok || bad "skip message"

# Against a baseline: int4-24l is 3.1/16.4 = 18.9% of the teacher's bytes, 23.0/25.1 = 91.6%
# of its en-de BLEU and 31.5/33.0 = 95.5% of its en-zh BLEU (worked out by hand).
"$bin" report "$tmp"/runs/* -o "$tmp/out4" --baseline teacher >"$tmp/log" 2>&1 && ok || { bad "report --baseline failed"; cat "$tmp/log"; }
grep -q '^## Against teacher' "$tmp/out4/report.md" && ok || bad "no baseline table"
grep -qF '| int4-24l | 18.9 | 91.6 | 95.5 |' "$tmp/out4/report.md" && ok || bad "baseline percentages"
grep -qF '| int2-16l | 7.3 | 47.8 | - |' "$tmp/out4/report.md" && ok || bad "a run without en-zh"
"$bin" report "$tmp"/runs/* -o "$tmp/out5" --baseline nobody 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q '"nobody" is not one of the runs' "$tmp/err" && [ ! -e "$tmp/out5/report.md" ] && ok || bad "unknown baseline (rc $rc)"

# Paired comparisons in run.json become their own table (differences, intervals, p as given);
# a report without any has no such section.
mkdir -p "$tmp/runs_cmp/kd" "$tmp/runs_cmp/ce"
echo '{"bytes": 7, "scores": {"en-de": {"bleu": 30}}}' >"$tmp/runs_cmp/ce/run.json"
cat >"$tmp/runs_cmp/kd/run.json" <<'EOF'
{"bytes": 7, "scores": {"en-de": {"bleu": 31.5}},
 "comparisons": [{"baseline": "ce", "direction": "en-de", "segments": 500, "samples": 1000,
   "bleu": {"baseline": 30.0, "system": 31.5, "delta_lo": 0.25, "delta_hi": 2.75, "p": 0.012},
   "chrf": {"baseline": 60.0, "system": 59.0, "delta_lo": -2.0, "delta_hi": 0.5, "p": 0.31}}]}
EOF
"$bin" report "$tmp"/runs_cmp/* -o "$tmp/out6" >"$tmp/log" 2>&1 && ok || { bad "report with comparisons failed"; cat "$tmp/log"; }
grep -qF '| kd | ce | en-de | 500 | 1000 | +1.50 | +0.25 .. +2.75 | 0.012 | -1.00 | -2.00 .. +0.50 | 0.310 |' "$tmp/out6/report.md" && ok || { bad "comparison row"; cat "$tmp/out6/report.md"; }
! grep -q "Paired comparisons" "$md" && ok || bad "a report without comparisons has no comparison section"
echo '{"bytes": 7, "scores": {}, "comparisons": [{"baseline": "ce", "direction": "en-de", "bleu": {"baseline": 1, "system": 2, "delta_lo": 0, "delta_hi": 1}}]}' >"$tmp/runs_cmp/kd/run.json"
"$bin" report "$tmp"/runs_cmp/* -o "$tmp/out7" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -qF 'kd/run.json: comparisons[0].bleu.p must be a number' "$tmp/err" && ok || bad "comparison without p (rc $rc)"

# Errors: a typo in a metric names the file; a missing run.json; usage.
mkdir -p "$tmp/runs_bad/typo"
echo '{"bytes": 5, "scores": {"en-de": {"blue": 3}}}' >"$tmp/runs_bad/typo/run.json"
"$bin" report "$tmp/runs_bad/typo" -o "$tmp/out3" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q 'typo/run.json: unknown score "blue"' "$tmp/err" && ok || bad "metric typo (rc $rc)"
"$bin" report "$tmp/nowhere" -o "$tmp/out3" 2>"$tmp/err"; rc=$?
[ $rc -eq 1 ] && grep -q "nowhere/run.json" "$tmp/err" && ok || bad "missing run.json (rc $rc)"
"$bin" report "$tmp"/runs/* 2>/dev/null; [ $? -eq 2 ] && ok || bad "missing -o is a usage error"
"$bin" report --help | grep -q '"bytes"' && ok || bad "--help documents the schema"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
