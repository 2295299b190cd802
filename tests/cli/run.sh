#!/usr/bin/env bash
# audistill run on configs/demo-smoke.yaml (tiny random teacher, a few synthetic segments):
# the whole path completes and its report and run.json agree with `audistill size`; a rerun
# skips every stage; a deleted output reruns its stage and the stages that read from it, and
# nothing else; a changed stage config reruns that stage; a failing stage stops the run without
# a stamp; an output a stage did not write is named; bad job files are refused by file:line
# before anything runs; --dry-run runs nothing; a run killed (-9) during training takes its
# training process with it and the next run resumes from the checkpoint.
set -uo pipefail
bin=$AUDISTILL_BIN
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng is not installed (scripts/install-deps.sh installs it)"; exit 77; }
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/run.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
cd "$AUDISTILL_SOURCE" || exit 1
job=configs/demo-smoke.yaml
w=$tmp/w
# The stage lines of a log ("[3/9] prune ... running (...)") reduced to "name:state".
states() { grep -oE '^\[[0-9]+/[0-9]+\] [^ ]+ \.\.\. (skipped|running|would run|would be skipped)' "$1" |
  sed -E 's/^\[[0-9]+\/[0-9]+\] ([^ ]+) \.\.\. /\1:/; s/would be skipped/skipped/' | tr '\n' ' '; }
all="synth prepare-train prune distill quantize-int8 eval:teacher:de eval:teacher:zh eval:kd-int8:de eval:kd-int8:zh"
expect() { # log, "stage:state ..." for every stage in order
  [ "$(states "$1")" = "$2 " ] && ok || bad "$3: stage states '$(states "$1")', want '$2'"
}
only_running() { # the listed stages run, every other one is skipped
  local out="" s
  for s in $all; do
    if [[ " $1 " == *" $s "* ]]; then out+="$s:running "; else out+="$s:skipped "; fi
  done
  echo "${out% }"
}

# 1. the whole path
"$bin" run "$job" --work "$w" >"$tmp/log1" 2>&1 && ok || { bad "first run failed"; tail -30 "$tmp/log1"; }
expect "$tmp/log1" "$(only_running "$all")" "first run"
for m in teacher kd-int8; do
  [ -f "$w/eval/$m/hyp.de" ] && [ "$(wc -l <"$w/eval/$m/hyp.de")" -eq 4 ] && ok || bad "$m: 4 German hypotheses"
  [ -f "$w/eval/$m/hyp.zh" ] && [ "$(wc -l <"$w/eval/$m/hyp.zh")" -eq 4 ] && ok || bad "$m: 4 Chinese hypotheses"
done
model_of() { [ "$1" = teacher ] && echo tests/fixtures/tiny_b || echo "$w/kd-int8"; }
for m in teacher kd-int8; do
  "$bin" size --json "$(model_of $m)" >"$tmp/size.$m.json" 2>/dev/null || bad "size of $m"
  python3 - "$w/eval/$m/run.json" "$tmp/size.$m.json" "$w/report/report.md" "$m" "$w/eval/$m" <<'PY' && ok || bad "$m: run.json / report.md disagree with audistill size"
import json, sys
run, size, md, name, d = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), open(sys.argv[3]).read(), sys.argv[4], sys.argv[5]
assert run["name"] == name and run["bytes"] == size["disk_bytes"] > 0, (run, size)
assert run["params"] == size["params"] and run["tensor_bytes"] == size["tensor_bytes"]
assert set(run["scores"]) == {"en-de", "en-zh"}, run["scores"]
for k in ("bleu", "chrf", "chrf++"):
    assert all(0 <= run["scores"][dr][k] <= 100 for dr in run["scores"]), run["scores"]
row = "| %s | %.1f |" % (name, size["disk_bytes"] / 1e6)
assert row in md, (row, md)
PY
done
# evaluate.baseline: the second table's sizes as a percentage of the teacher's
python3 - "$tmp/size.teacher.json" "$tmp/size.kd-int8.json" "$w/report/report.md" <<'PY' && ok || bad "the report's table against the baseline"
import json, sys
t, k, md = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), open(sys.argv[3]).read()
assert "## Against teacher" in md, md
assert "| teacher | 100.0 |" in md and "| kd-int8 | %.1f |" % (100 * k["disk_bytes"] / t["disk_bytes"]) in md, md
PY
# The scores are audistill score's (the command, run on the files run wrote).
"$bin" score --hyp "$w/eval/kd-int8/hyp.de" --ref "$w/eval/ref.de" --lang de --json >"$tmp/score.json" 2>/dev/null || bad "score"
python3 -c '
import json, sys
s, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["scores"]["en-de"]
assert abs(s["chrf"] - r["chrf"]) < 1e-5 and abs(s["bleu"] - r["bleu"]) < 1e-5, (s, r)' "$tmp/score.json" "$w/eval/kd-int8/run.json" && ok || bad "run.json scores differ from audistill score"
# evaluate.compare: kd-int8 against the teacher in run.json and the report, the same figures as
# `audistill score --paired-bs` on the files run wrote (that command is checked against
# sacreBLEU's own paired test in score.sh).
for l in de zh; do
  "$bin" score --hyp "$w/eval/kd-int8/hyp.$l" --ref "$w/eval/ref.$l" --lang $l --paired-bs "$w/eval/teacher/hyp.$l" --json >"$tmp/pbs.$l.json" 2>/dev/null || bad "score --paired-bs $l"
done
python3 - "$w/eval/kd-int8/run.json" "$tmp/pbs.de.json" "$tmp/pbs.zh.json" "$w/report/report.md" <<'PY' && ok || bad "evaluate.compare: run.json / report disagree with score --paired-bs"
import json, sys
run, md = json.load(open(sys.argv[1])), open(sys.argv[4]).read()
comps = {c["direction"]: c for c in run["comparisons"]}
assert set(comps) == {"en-de", "en-zh"}, comps
for d, path in (("en-de", sys.argv[2]), ("en-zh", sys.argv[3])):
    c, want = comps[d], json.load(open(path))["paired_bs"]
    assert c["baseline"] == "teacher" and c["segments"] == 4 and c["samples"] == want["samples"], c
    for m in ("bleu", "chrf"):
        for k in ("baseline", "system", "delta_lo", "delta_hi", "p"):
            assert abs(c[m][k] - want[m][k]) < 1e-5, (d, m, k, c[m][k], want[m][k])
    row = "| kd-int8 | teacher | %s | 4 | %d | %+.2f |" % (d, c["samples"], c["bleu"]["system"] - c["bleu"]["baseline"])
    assert row in md, (row, md)
assert "## Paired comparisons" in md
PY
[ "$(head -1 "$w/eval/ref.de")" = "$(head -1 "$w/synth/eval/text/txt/ACL.6060.eval.en-xx.de.txt")" ] && ok || bad "references are not the synth eval split's"

# 2. a rerun skips everything and is fast
start=$(date +%s.%N)
"$bin" run "$job" --work "$w" >"$tmp/log2" 2>&1 && ok || { bad "second run failed"; tail -20 "$tmp/log2"; }
secs=$(echo "$(date +%s.%N) - $start" | bc)
expect "$tmp/log2" "$(only_running "")" "second run"
grep -q "0 stages ran, 9 skipped" "$tmp/log2" && ok || bad "second run summary"
awk -v s="$secs" 'BEGIN {exit !(s < 10)}' && ok || bad "a run with nothing to do took $secs s"
echo "second run (all skipped): $secs s"

# 3. --dry-run after deleting the pruned student: names what would run, runs nothing
rm -rf "$w/pruned"
"$bin" run "$job" --work "$w" --dry-run >"$tmp/log3" 2>&1 && ok || bad "dry run failed"
want=$(only_running "prune distill quantize-int8 eval:kd-int8:de eval:kd-int8:zh" | sed 's/running/would run/g')
expect "$tmp/log3" "$want" "dry run"
[ ! -e "$w/pruned" ] && ok || bad "--dry-run ran prune"
before=$(cat "$w/.stages/distill.done")
# ... then the real run reruns exactly those
"$bin" run "$job" --work "$w" >"$tmp/log4" 2>&1 && ok || { bad "run after deleting an output failed"; tail -20 "$tmp/log4"; }
expect "$tmp/log4" "$(only_running "prune distill quantize-int8 eval:kd-int8:de eval:kd-int8:zh")" "deleted output"
grep -q "prune ... running (output $w/pruned is missing)" "$tmp/log4" && ok || bad "the reason for rerunning prune"
[ "$before" != "$(cat "$w/.stages/distill.done")" ] && ok || bad "distill's stamp was not renewed"

# 4. a changed stage config reruns that stage (and what reads from it)
sed 's/steps: 20,/steps: 22,/' "$job" >"$tmp/changed.yaml"
grep -q "steps: 22," "$tmp/changed.yaml" || bad "test setup: could not change the steps"
"$bin" run "$tmp/changed.yaml" --work "$w" >"$tmp/log5" 2>&1 && ok || { bad "run with a changed stage failed"; tail -20 "$tmp/log5"; }
expect "$tmp/log5" "$(only_running "distill quantize-int8 eval:kd-int8:de eval:kd-int8:zh")" "changed config"
grep -q "distill ... running (command changed)" "$tmp/log5" && ok || bad "the reason for rerunning distill"
grep -q '"step": 22' "$w/kd/metrics.jsonl" && ! grep -q '"step": 23' "$w/kd/metrics.jsonl" && ok || bad "the changed job did not train 22 steps"

# 5. a failing stage stops the run: non-zero exit, no stamp, later stages untouched
sed 's/decoder_ffn: 16/decoder_ffn: 999/' "$job" >"$tmp/fail.yaml"
"$bin" run "$tmp/fail.yaml" --work "$w" >"$tmp/log6" 2>&1; rc=$?
[ $rc -eq 1 ] && ok || bad "failing stage: exit $rc, want 1"
grep -q "stage prune failed (exit status 1)" "$tmp/log6" && grep -q "stopped at stage prune ($tmp/fail.yaml:" "$tmp/log6" && ok || { bad "failing stage message"; tail -5 "$tmp/log6"; }
[ ! -e "$w/.stages/prune.done" ] && ok || bad "a failed stage left a stamp"
grep -q "distill ... running" "$tmp/log6" && bad "the run went on after a failed stage" || ok
# the original job then reruns prune and everything after it
"$bin" run "$job" --work "$w" >"$tmp/log7" 2>&1 && ok || { bad "recovery run failed"; tail -20 "$tmp/log7"; }
expect "$tmp/log7" "$(only_running "prune distill quantize-int8 eval:kd-int8:de eval:kd-int8:zh")" "after a failure"

# 6. a stage that exits 0 without writing its output; --only; bad job files
cat >"$tmp/noout.yaml" <<EOF
work_dir: $tmp/n
stages:
  - name: weigh
    command: [size, tests/fixtures/tiny_b]
    outputs: ["{work}/weights.txt"]
EOF
"$bin" run "$tmp/noout.yaml" >"$tmp/log8" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "$tmp/noout.yaml:3: stage weigh exited 0 but did not write $tmp/n/weights.txt" "$tmp/log8" && ok || { bad "missing output: rc $rc"; cat "$tmp/log8"; }
[ ! -e "$tmp/n/.stages/weigh.done" ] && ok || bad "stamp written although an output is missing"
"$bin" run "$job" --work "$w" --only prune >"$tmp/log9" 2>&1 && ok || bad "--only prune"
[ "$(states "$tmp/log9")" = "prune:running " ] && ok || bad "--only prune ran: $(states "$tmp/log9")"
# The shipped demo job parses and plans (its full run is scripts/demo.sh, minutes long).
"$bin" run configs/demo.yaml --dry-run --work "$tmp/demo-dry" >"$tmp/dry" 2>&1 && grep -q "25 stages would run" "$tmp/dry" && [ ! -e "$tmp/demo-dry/eval" ] && ok || { bad "configs/demo.yaml --dry-run"; tail -5 "$tmp/dry"; }
[ "$(grep -c "audistill translate .* --device cpu > " "$tmp/dry")" -eq 14 ] && ok || bad "the demo's 14 translation stages do not run on the CPU"
# evaluate.device: cuda translates on the GPU (audistill translate --device cuda).
sed 's/^evaluate:/evaluate:\n  device: cuda/' configs/demo.yaml >"$tmp/demo-cuda.yaml"
"$bin" run "$tmp/demo-cuda.yaml" --dry-run --work "$tmp/demo-dry" >"$tmp/dry" 2>&1 && [ "$(grep -c "audistill translate .* --device cuda > " "$tmp/dry")" -eq 14 ] && ok || { bad "evaluate.device: cuda"; grep translate "$tmp/dry" | head -3; }
refuse() { # job text, expected message
  printf '%b' "$1" >"$tmp/bad.yaml"
  "$bin" run "$tmp/bad.yaml" >"$tmp/err" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -qF "$2" "$tmp/err" && [ ! -e "$tmp/b" ] && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
}
refuse "work_dir: $tmp/b\nstagez: []\n" "bad.yaml:2: unknown key 'stagez' (expected one of: work_dir"
refuse "work_dir: $tmp/b\nstages:\n  - name: a\n    command: []\n" "bad.yaml:3: stage 'a' has no command"
refuse "work_dir: $tmp/b\nstages:\n  - name: a\n    command: [prnue, --config, x.yaml]\n" "bad.yaml:3: stage 'a': unknown command 'prnue'"
refuse "work_dir: $tmp/b\nstages:\n  - name: a\n    command: [size, x]\n    output: [y]\n" "bad.yaml:5: unknown key 'output' in stage"
refuse "work_dir: $tmp/b\nstages:\n  - name: a\n    command: [size, \"{wrok}/x\"]\n" "bad.yaml:3: unknown placeholder '{wrok}'"
refuse "work_dir: $tmp/b\nstages:\n  - {name: a, command: [size, x]}\n  - {name: a, command: [size, y]}\n" "stage name 'a' is used twice"
refuse "work_dir: $tmp/b\nevaluate:\n  synth_split: x\n  models: [{name: a, path: y}]\n  baseline: teachr\n" "bad.yaml:3: evaluate.baseline 'teachr' is not one of evaluate.models' names"
refuse "work_dir: $tmp/b\nevaluate:\n  synth_split: x\n  models: [{name: a, path: y}]\n  compare:\n    - {system: a, baseline: b}\n" "bad.yaml:6: evaluate.compare: 'b' is not one of evaluate.models' names"
refuse "work_dir: $tmp/b\nevaluate:\n  synth_split: x\n  models: [{name: a, path: y}]\n  compare:\n    - {system: a}\n" "baseline"
"$bin" run "$job" --work "$w" --only nosuch >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "--only with an unknown stage must be a usage error"

# Starts `run JOB --work DIR`, waits for a checkpoint of this run's training stage, kills the
# runner with -9.
kill_in_training() {
  local job=$1 dir=$2 log=$3 pid
  touch "$tmp/mark"
  sleep 0.01
  "$bin" run "$job" --work "$dir" >"$log" 2>&1 &
  pid=$!
  # `latest` is written last, after the checkpoint directory is complete.
  for _ in $(seq 1200); do
    [ "$dir/kd/checkpoints/latest" -nt "$tmp/mark" ] && break
    sleep 0.05
  done
  [ "$dir/kd/checkpoints/latest" -nt "$tmp/mark" ] && ok || bad "no checkpoint appeared during the training stage ($log)"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  sleep 0.5
}

# 7. killed (-9) during training: the training child dies with it; the rerun resumes
k=$tmp/k
sed 's/steps: 20,/steps: 150,/' "$job" >"$tmp/long.yaml"
kill_in_training "$tmp/long.yaml" "$k" "$tmp/log10"
pgrep -f "$k/.stages/distill.yaml" >/dev/null && bad "the training stage outlived the killed run" || ok
[ ! -e "$k/.stages/distill.done" ] && [ ! -e "$k/kd/final" ] && ok || bad "the kill came after the training stage finished"
"$bin" run "$tmp/long.yaml" --work "$k" >"$tmp/log11" 2>&1 && ok || { bad "run after the kill failed"; tail -20 "$tmp/log11"; }
expect "$tmp/log11" "$(only_running "distill quantize-int8 eval:teacher:de eval:teacher:zh eval:kd-int8:de eval:kd-int8:zh")" "after the kill"
grep -q "distill ... running (not completed; resuming in $k/kd)" "$tmp/log11" && ok || bad "the rerun did not say it resumes"
grep -qi "resum" "$tmp/log11" && grep -q "step_0000" "$tmp/log11" && ok || { bad "training did not resume from its checkpoint"; grep -i "step\|resum" "$tmp/log11" | head; }
grep -q '"step": 150' "$k/kd/metrics.jsonl" && [ -f "$k/report/report.md" ] && ok || bad "the resumed run did not complete"

# 8. an interrupted training stage resumes only with the command and inputs it began with:
# a re-pruned student, then an edited schedule, start over instead of training on the old
# checkpoint
k2=$tmp/k2
kill_in_training "$tmp/long.yaml" "$k2" "$tmp/log12"
sed 's/decoder_ffn: 16/decoder_ffn: 8/' "$tmp/long.yaml" >"$tmp/long-ffn.yaml"
kill_in_training "$tmp/long-ffn.yaml" "$k2" "$tmp/log13"
grep -q "distill ... running (its input stage prune runs before it)" "$tmp/log13" &&
  grep -q "removing $k2/kd (left by a different command or input)" "$tmp/log13" &&
  ! grep -q "resuming from" "$tmp/log13" && ok || { bad "the re-pruned student resumed the old checkpoint"; grep -i "distill\|resum\|remov" "$tmp/log13" | head; }
sed 's/steps: 150,/steps: 40,/' "$tmp/long-ffn.yaml" >"$tmp/short-ffn.yaml"
"$bin" run "$tmp/short-ffn.yaml" --work "$k2" >"$tmp/log14" 2>&1 && ok || { bad "run after the edit failed"; tail -20 "$tmp/log14"; }
grep -q "distill ... running (command changed since it was interrupted)" "$tmp/log14" &&
  grep -q "removing $k2/kd" "$tmp/log14" && ! grep -q "resuming from" "$tmp/log14" && ok || { bad "the edited schedule resumed the old checkpoint"; grep -i "distill\|resum\|remov" "$tmp/log14" | head; }
grep -q '"step": 40' "$k2/kd/metrics.jsonl" && ! grep -q '"step": 45' "$k2/kd/metrics.jsonl" && ok || bad "the edited schedule did not run 40 steps"

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
