#!/usr/bin/env bash
# Training step time with OpenBLAS's idle workers sleeping at once (OPENBLAS_THREAD_TIMEOUT=4,
# what `audistill` sets on start-up) against OpenBLAS's default (28: they spin on sched_yield
# for 2^28 cycles after every call), alternating the two so load changes hit both alike.
#   experiments/cpu_tune/blas_timeout.sh AUDISTILL STUDENT_DIR PREPARED_EN.h5 [TRIALS]
# PREPARED_EN.h5 must hold de, zh and en targets (the job trains with the CTC term, as the demo
# teacher does). Prints each trial's training time (8 steps of 32 examples) and the medians.
set -euo pipefail
bin=$1 student=$2 data=$3 trials=${4:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/job.yaml" <<EOF
student: $student
output: $tmp/run
data: {train: $data, langs: [de, zh]}
ctc: {weight: 0.3}
train: {steps: 8, batch: 32, micro_batch: 32, lr: 1e-3, warmup: 2, log_every: 8,
        checkpoint_every: 1000, max_len: 224, max_frames: 800}
EOF
for i in $(seq "$trials"); do
    for t in 4 28; do
        rm -rf "$tmp/run"
        s=$(OPENBLAS_THREAD_TIMEOUT=$t "$bin" train --config "$tmp/job.yaml" --quiet 2>&1 |
            sed -n 's/^done in \([0-9.]*\) s.*/\1/p')
        echo "timeout $t trial $i: $s s"
        echo "$t $s" >>"$tmp/times"
    done
done
for t in 4 28; do
    printf 'OPENBLAS_THREAD_TIMEOUT=%s: median %s s\n' "$t" \
        "$(awk -v t="$t" '$1 == t {print $2}' "$tmp/times" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
