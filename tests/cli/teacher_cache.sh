#!/usr/bin/env bash
# audistill teacher-cache and training from the cache, on the tiny models:
# 1. k = full vocabulary: every per-step loss (total, KL, CE) and the final weights equal the
#    run with the online teacher (relative 1e-5);
# 2. k = 8 < V: the KL differs from the online one but is finite and the run completes;
# 3. refusals, each with a message naming the problem, non-zero exit and no training output:
#    another teacher (a copy of the teacher with one weight changed), another data set, a
#    truncated and a damaged cache, another vocabulary, another window, teacher targets from a
#    cache without translations; bad teacher-cache jobs write no file.
set -uo pipefail
bin=$AUDISTILL_BIN
fx=$AUDISTILL_FIXTURES
tmp=$(mktemp -d "$AUDISTILL_TEST_TMP/teacher_cache.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
"$AUDISTILL_TINY_SET" "$tmp/set.h5" 10 16 280 7 || { echo "cannot make the data set"; exit 1; }
"$AUDISTILL_TINY_SET" "$tmp/other.h5" 10 16 280 8 || { echo "cannot make the data set"; exit 1; }
printf 'teacher: %s/tiny_a\noutput: %s/student\nprune:\n  drop_decoder_layers: [1]\n' "$fx" "$tmp" >"$tmp/prune.yaml"
"$bin" prune --config "$tmp/prune.yaml" >/dev/null 2>&1 || bad "prune for the student"

"$bin" teacher-cache --help | grep -q "top_k" && ok || bad "--help lists the job keys"
cache() { # name, top_k, extra line
  printf 'teacher: %s/tiny_a\ndata: %s/set.h5\noutput: %s/%s.h5\ntop_k: %s\nmax_len: 64\nmax_frames: 100\nbatch: 3\n%b' \
    "$fx" "$tmp" "$tmp" "$1" "$2" "${3:-}" >"$tmp/$1.yaml"
  "$bin" teacher-cache --config "$tmp/$1.yaml" 2>"$tmp/$1.log" || { bad "teacher-cache $1"; cat "$tmp/$1.log"; }
}
cache full 280
cache k8 8

job() { # name, extra distill keys, extra top-level lines
  cat >"$tmp/$1.yaml" <<EOF
student: $tmp/student
output: $tmp/$1
data: {train: $tmp/set.h5}
train: {steps: 6, batch: 4, micro_batch: 2, lr: 5e-3, warmup: 2, log_every: 1, checkpoint_every: 100, max_len: 64, max_frames: 100}
distill: {alpha: 0.7, temperature: 2.0$2}
${3:-}
EOF
  echo "$tmp/$1.yaml"
}
"$bin" train --config "$(job online "" "teacher: $fx/tiny_a")" --quiet 2>"$tmp/err" || { bad "online run"; cat "$tmp/err"; }
"$bin" train --config "$(job cached ", teacher_cache: $tmp/full.h5")" --quiet 2>"$tmp/err" || { bad "cached run"; cat "$tmp/err"; }
"$bin" train --config "$(job k8 ", teacher_cache: $tmp/k8.h5")" --quiet 2>"$tmp/err" || { bad "k=8 run"; cat "$tmp/err"; }
# The cache with the job naming its teacher too: identities checked, results unchanged.
"$bin" train --config "$(job named ", teacher_cache: $tmp/full.h5" "teacher: $fx/tiny_a")" --quiet 2>"$tmp/err" || { bad "cached run naming the teacher"; cat "$tmp/err"; }

"${PYTHON:-python3}" - "$tmp" <<'PY' && ok || bad "cached and online runs differ"
import json, sys
import numpy as np
from safetensors.numpy import load_file
tmp = sys.argv[1]
def metrics(run):
    return [json.loads(l) for l in open(f"{tmp}/{run}/metrics.jsonl") if '"train/loss"' in l]
online, cached, named, k8 = (metrics(r) for r in ("online", "cached", "named", "k8"))
assert len(online) == len(cached) == len(named) == len(k8) == 6
worst = 0.0
for a, b, c in zip(online, cached, named):
    for tag in ("train/loss", "train/kl", "train/ce"):
        for x in (b, c):
            rel = abs(x[tag] - a[tag]) / max(abs(a[tag]), 1e-12)
            assert rel <= 1e-5, (tag, a[tag], x[tag])
            worst = max(worst, rel)
wa, wb = load_file(f"{tmp}/online/final/model.safetensors"), load_file(f"{tmp}/cached/final/model.safetensors")
assert wa.keys() == wb.keys()
werr = max(float(np.max(np.abs(wa[k] - wb[k])) / max(float(np.max(np.abs(wa[k]))), 1e-12)) for k in wa)
assert werr <= 1e-5, werr
kl8 = [m["train/kl"] for m in k8]
assert all(np.isfinite(kl8)) and all(np.isfinite([m["train/loss"] for m in k8]))
diff = max(abs(a - b["train/kl"]) / a for a, b in zip(kl8, online))
assert diff > 1e-4, diff  # the rest bucket changes the KL
print(f"k = V: losses within {worst:.1e}, weights within {werr:.1e}; k = 8: KL differs by up to {diff:.1%}")
PY
[ -f "$tmp/k8/final/model.safetensors" ] && ok || bad "the k = 8 run did not complete"

# 3. refusals
refuse() { # job file, expected message
  rm -rf "$tmp/refused"
  sed -i "s|^output: .*|output: $tmp/refused|" "$1"
  "$bin" train --config "$1" --quiet >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q -- "$2" "$tmp/err" && ok || { bad "expected '$2' (rc $rc)"; cat "$tmp/err"; }
  [ ! -e "$tmp/refused/metrics.jsonl" ] && [ ! -e "$tmp/refused/checkpoints" ] && ok || bad "a refused job wrote output ($2)"
}
cp -r "$fx/tiny_a" "$tmp/tiny_a2"
size=$(stat -c %s "$tmp/tiny_a2/model.safetensors")
printf '\x3f' | dd of="$tmp/tiny_a2/model.safetensors" bs=1 seek=$((size - 3)) conv=notrunc 2>/dev/null
refuse "$(job r1 ", teacher_cache: $tmp/full.h5" "teacher: $tmp/tiny_a2")" "was made by another teacher"
j=$(job r2 ", teacher_cache: $tmp/full.h5")
sed -i "s|train: $tmp/set.h5|train: $tmp/other.h5|" "$j"
refuse "$j" "was made from another data set"
head -c $(($(stat -c %s "$tmp/full.h5") / 2)) "$tmp/full.h5" >"$tmp/truncated.h5"
refuse "$(job r3 ", teacher_cache: $tmp/truncated.h5")" "truncated.h5 .*truncated or damaged"
cp "$tmp/full.h5" "$tmp/damaged.h5"
half=$(($(stat -c %s "$tmp/damaged.h5") / 2))
head -c 4096 /dev/zero | tr '\0' Z | dd of="$tmp/damaged.h5" bs=1 seek=$half conv=notrunc 2>/dev/null
refuse "$(job r4 ", teacher_cache: $tmp/damaged.h5")" "damaged.h5"
j=$(job r5 ", teacher_cache: $tmp/full.h5")
sed -i "s|max_frames: 100|max_frames: 90|" "$j"
refuse "$j" "window of 100 mel frames, this job's is 90"
j=$(job r6 ", teacher_cache: $tmp/full.h5")
sed -i "s|data: {train: $tmp/set.h5}|data: {train: $tmp/set.h5, targets: teacher}|" "$j"
refuse "$j" "holds no teacher positions for language de"
printf 'teacher: %s/tiny_a\noutput: %s/small_vocab\ncalibration:\n  data: %s/set.h5\n  max_frames: 100\nprune:\n  vocab: 270\n' "$fx" "$tmp" "$tmp" >"$tmp/vocab.yaml"
"$bin" prune --config "$tmp/vocab.yaml" >/dev/null 2>&1 || bad "vocabulary pruning for the mismatch test"
j=$(job r7 ", teacher_cache: $tmp/full.h5")
sed -i "s|^student: .*|student: $tmp/small_vocab|" "$j"
refuse "$j" "has a vocabulary of 280, the student .* of 2[0-9]*: distillation needs"
j=$(job r8 "" "")
sed -i "s|data: {train: $tmp/set.h5}|data: {train: $tmp/set.h5, targets: teacher}|" "$j"
refuse "$j" "data.targets: teacher needs distill.teacher_cache"

# Bad teacher-cache jobs fail before writing anything.
cache_refuse() { # top_k, extra, expected message
  printf 'teacher: %s/tiny_a\ndata: %s/set.h5\noutput: %s/nothing.h5\ntop_k: %s\nmax_frames: 100\n%b' \
    "$fx" "$tmp" "$tmp" "$1" "$2" >"$tmp/cbad.yaml"
  "$bin" teacher-cache --config "$tmp/cbad.yaml" >/dev/null 2>"$tmp/err"; rc=$?
  [ $rc -eq 1 ] && grep -q -- "$3" "$tmp/err" && ok || { bad "teacher-cache: expected '$3' (rc $rc)"; cat "$tmp/err"; }
  ls "$tmp"/nothing.h5* >/dev/null 2>&1 && bad "a refused teacher-cache job left a file" || ok
}
cache_refuse 281 "" "top_k 281 exceeds the teacher's vocabulary of 280"
cache_refuse 0 "" "top_k"
cache_refuse 8 "translations: sometimes\n" "translations"
cache_refuse 8 "max_len: 10\n" "max_len is 10 but segment"
"$bin" teacher-cache >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "no --config must be a usage error"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
