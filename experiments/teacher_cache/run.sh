#!/usr/bin/env bash
# Wall time of distilling a student with a teacher cache vs with the online teacher, and the
# quality difference at several k (dev loss / CE / KL to the online teacher, greedy dev BLEU
# when the student has a tokenizer), on the demo models:
#   experiments/teacher_cache/run.sh [OUT_DIR]        (from the repository root)
# Environment: AUDISTILL (binary, default build/audistill), DEMO (a directory with teacher-v/,
# pruned/, train.h5, dev.h5 as `audistill run configs/demo.yaml` makes them; default
# out/demo-val), STEPS (student steps of batch 16; default 38 = one epoch of the 300-segment,
# two-language demo set), KS (default "8 32 128"), THREADS (default 2).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${AUDISTILL:-build/audistill}
demo=${DEMO:-out/demo-val}
out=${1:-out/teacher_cache}
steps=${STEPS:-38}
ks=${KS:-"8 32 128"}
threads=${THREADS:-2}
for f in teacher-v/config.json pruned/config.json train.h5 dev.h5; do
  [ -e "$demo/$f" ] || { echo "$demo/$f is missing (set DEMO)"; exit 1; }
done
mkdir -p "$out"
fill() { # template, k, output
  sed -e "s|{demo}|$demo|g" -e "s|{out}|$out|g" -e "s|{k}|$2|g" -e "s|{steps}|$steps|g" \
      -e "s|{threads}|$threads|g" "$here/$1" >"$3"
}
timed() { # log file, command... -> seconds on stdout
  local log=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@" 2>"$log" || { cat "$log" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
echo "run,k,cache_s,train_s" >"$out/times.csv"
fill online.yaml 0 "$out/online.yaml"
rm -rf "$out/online"
t=$(timed "$out/online.log" "$bin" train --config "$out/online.yaml" --quiet)
echo "online,,,$t" >>"$out/times.csv"
for k in $ks; do
  fill cache.yaml "$k" "$out/cache-k$k.yaml"
  fill cached.yaml "$k" "$out/cached-k$k.yaml"
  rm -f "$out/cache-k$k.h5"
  tc=$(timed "$out/cache-k$k.log" "$bin" teacher-cache --config "$out/cache-k$k.yaml")
  rm -rf "$out/cached-k$k"
  t=$(timed "$out/cached-k$k.log" "$bin" train --config "$out/cached-k$k.yaml" --quiet)
  echo "cached,$k,$tc,$t" >>"$out/times.csv"
done
python3 - "$out" "$ks" <<'PY'
import csv, json, os, sys
out, ks = sys.argv[1], sys.argv[2].split()
times = {(r["run"], r["k"]): r for r in csv.DictReader(open(f"{out}/times.csv"))}
def last(run, prefix):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    rows = [r for r in rows if any(k.startswith(prefix) for k in r)]
    return rows[-1] if rows else {}
def mean_tps(run):
    v = [json.loads(l).get("train/tokens_per_s") for l in open(f"{out}/{run}/metrics.jsonl")]
    v = [x for x in v if x is not None][1:]  # the first step includes warm-up
    return sum(v) / len(v) if v else float("nan")
print("| run | k | cache build s | train wall s | tokens/s | final train KL | dev loss | dev CE | dev KL | dev BLEU | cache MB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for run, k in [("online", "")] + [(f"cached-k{k}", k) for k in ks]:
    t = times[("online", "") if run == "online" else ("cached", k)]
    tr, dv = last(run, "train/"), last(run, "dev/")
    size = os.path.getsize(f"{out}/cache-k{k}.h5") / 1e6 if k else float("nan")
    bleu = dv.get("dev/bleu")
    build = f"{float(t['cache_s']):.1f}" if t["cache_s"] else "-"
    print(f"| {run} | {k or '-'} | {build} | {float(t['train_s']):.1f} | {mean_tps(run):.0f} | "
          f"{tr.get('train/kl', float('nan')):.4f} | {dv.get('dev/loss', float('nan')):.4f} | "
          f"{dv.get('dev/ce', float('nan')):.4f} | {dv.get('dev/kl', float('nan')):.4f} | "
          f"{'-' if bleu is None else f'{bleu:.2f}'} | {'-' if not k else f'{size:.1f}'} |")
PY
