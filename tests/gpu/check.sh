#!/usr/bin/env bash
# The one prepared GPU check, for a session that has a GPU for a few minutes (budget: ~8 min
# on an H100). It builds the CUDA backend (Release) or unpacks a prebuilt bundle, prints the
# device, runs every CUDA parity test (each op of the CUDA backend against the CPU reference on
# random inputs; the tiny model's forward, every parameter gradient and 20 distillation steps
# against the CPU backend), `audistill train` / `translate` / `teacher-cache` with device cuda
# against the CPU (tests/cli/train_cuda*.sh, translate_cuda.sh), times attention alone at the
# benchmark's shapes against PyTorch's SDPA, then benchmarks one distillation step at real
# widths against PyTorch + transformers on the same card and prints where that step's time goes
# (the op profile of one more step), and times `audistill train --benchmark` on the same models
# and shapes.
#
# Usage: tests/gpu/check.sh [--prebuilt BUNDLE.tar.xz] [--sections LIST] [--modes LIST]
#                           [--batches LIST] [--budget SECONDS] [--memcheck] [--no-bench]
#                           [--rehearse]
#   --prebuilt   use binaries packed by tests/gpu/bundle.sh (for GPU machines without the
#                project's C dependencies and no package registry): no configure/build
#   --sections   what to run, in this order, comma-separated (default tests,bench,cli,attention):
#                tests = the CUDA parity binaries, cli = tests/cli/*cuda*.sh (in parallel),
#                bench = the real-width benchmark, attention = attention alone at the
#                benchmark's shapes against PyTorch's SDPA (about a minute),
#                memcheck = compute-sanitizer over the tests
#   --modes      the benchmark's GEMM precisions (default f32,bf16,bf16-gemm,bf16-f32in,
#                bf16-tuned,bf16-separate): bf16
#                runs as `audistill train` does under precision bf16 (attention as AUTO takes it:
#                the flash kernels; activations that only GEMMs read in bf16), bf16-gemm and
#                bf16-flash force attention through the batched GEMMs or the flash kernels,
#                bf16-f32in keeps those activations in f32 (converted by each GEMM),
#                bf16-tuned is bf16 with GEMM tuning (train.gemm_tuning: cuBLASLt's candidate
#                algorithms timed in the warm-up, the fastest kept), bf16-separate is bf16 with
#                the teacher running its own audio encoder (distill.share_encoder: false; the
#                student keeps the teacher's encoder, so the other modes run it once per step)
#   --batches    the benchmark's batch sizes (clips of 10 s; default 4,16,32): the first with
#                every mode and the op profile, the others the bf16 modes, each against PyTorch
#                at the same batch (MFU grows with the batch: at 4 clips the step is 1,220
#                tokens, at 32 9,760; run 5 measured 34.8 GiB of device memory at 4 clips and
#                43.5 at 16, so 32 needs about 55 GiB, 64 about 78: on an 80 GB card 32 is the
#                largest sure to fit, on an H200 add 64 or 96)
#   --budget     seconds the whole script may take (default 480 on a GPU, the issue's 8 minutes;
#                0 = no limit, the default of a rehearsal). The parity tests, and PyTorch and
#                the bf16 mode at every batch, always run (first, in that order); the other
#                benchmark modes, train --benchmark modes, op profiles, attention shapes and the
#                cli section each run only if the budget still holds them (by the longest unit
#                of the same kind so far), and the end lists what was skipped
#   --memcheck   same as adding memcheck to the sections; --no-bench drops bench
#   --rehearse   a dry run without a GPU, before spending a lease: builds for the CUDA emulator
#                (tests/cuda_emu; default build dir build-cuda-emu), shrinks every shape (models
#                of bench_distill.py --small on the CPU, 2 timed steps, attention over 50 and 30
#                positions) and runs the same sections, tables and comparisons; the numbers mean
#                nothing, the glue between the binaries, the logs and the tables is what it
#                checks (the profile comparisons run at the last batch of --batches). Needs
#                torch + transformers (CPU). E.g. `check.sh --rehearse --sections attention,bench
#                --batches 2,3` (~6 min on 2 cores).
# Environment: AUDISTILL_GPU_BUILD (build dir, default build-gpu), CUDA_ARCH (default 90;
# use 80 on an A100), JOBS (default: all cores), OUT (when set, every log is packed into
# $OUT/check-logs.tar.gz and the benchmark table copied to $OUT/table.txt).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${AUDISTILL_GPU_BUILD:-$ROOT/build-gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
SECTIONS=tests,bench,cli,attention MODES=f32,bf16,bf16-gemm,bf16-f32in,bf16-tuned,bf16-separate BATCHES=4,16,32 PREBUILT=
REHEARSE=0 BUDGET=
usage() {
    echo "usage: tests/gpu/check.sh [--prebuilt BUNDLE.tar.xz] [--sections LIST] [--modes LIST]" \
        "[--batches LIST] [--budget SECONDS] [--memcheck] [--no-bench] [--rehearse]" >&2
    exit 2
}
while [[ $# -gt 0 ]]; do
    case $1 in
    --memcheck) SECTIONS+=,memcheck ;;
    --no-bench) SECTIONS=${SECTIONS//bench/} ;;
    --rehearse) REHEARSE=1 ;;
    --prebuilt | --sections | --modes | --batches | --budget)
        [[ $# -ge 2 ]] || usage
        case $1 in
        --prebuilt) PREBUILT=$2 ;;
        --sections) SECTIONS=$2 ;;
        --modes) MODES=$2 ;;
        --batches) BATCHES=$2 ;;
        --budget) BUDGET=$2 ;;
        esac
        shift
        ;;
    *) usage ;;
    esac
    shift
done
for sec in ${SECTIONS//,/ }; do
    case $sec in tests | cli | bench | attention | memcheck) ;; *) echo "unknown section '$sec'" >&2 && usage ;; esac
done
for mode in ${MODES//,/ }; do
    case $mode in f32 | bf16 | bf16-gemm | bf16-flash | bf16-f32in | bf16-tuned | bf16-separate) ;; *) echo "unknown mode '$mode' (f32, bf16, bf16-gemm, bf16-flash, bf16-f32in, bf16-tuned, bf16-separate)" >&2 && usage ;; esac
done
for batch in ${BATCHES//,/ }; do
    [[ $batch =~ ^[1-9][0-9]*$ ]] || { echo "bad batch '$batch'" >&2 && usage; }
done
# 8 minutes on a GPU (the issue's limit for the whole script); none in a rehearsal (the emulator's
# times mean nothing) unless given
[[ -z $BUDGET ]] && { [[ $REHEARSE == 1 ]] && BUDGET=0 || BUDGET=480; }
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "bad budget '$BUDGET' (seconds; 0 for none)" >&2 && usage; }
FIRST_BATCH=${BATCHES%%,*}
# The shapes: real widths on a GPU (the batch that run 5's profile was taken at compares with
# it); tiny ones in a rehearsal on the emulator, whose last batch stands in for that one.
if [[ $REHEARSE == 1 ]]; then
    [[ -n $PREBUILT ]] && { echo "--rehearse builds for the emulator; it takes no --prebuilt" >&2 && usage; }
    BUILD=${AUDISTILL_GPU_BUILD:-$ROOT/build-cuda-emu}
    FRAMES=100 TARGETS=8 STEPS=2 TRAIN_STEPS=2 ATTENTION_ITERS=2 DIFF_BATCH=${BATCHES##*,}
    BENCH_MODELS=(--encoder-layers 1 --teacher-layers 2 --student-layers 1 --small --device cpu)
    ENCODER_SHAPE="4 4 50 64 bidirectional" DECODER_SHAPE="4 4 30 128 causal"
    DECODE_SHAPE="4 2 60 128 decode"
    TRAIN_LEN=80 VOCAB=4096
else
    FRAMES=1000 TARGETS=40 STEPS=10 TRAIN_STEPS=8 ATTENTION_ITERS=20 DIFF_BATCH=16
    BENCH_MODELS=(--encoder-layers 4 --teacher-layers 8 --student-layers 4)
    ENCODER_SHAPE="20 20 500 64 bidirectional" DECODER_SHAPE="32 32 305 128 causal"
    DECODE_SHAPE="32 32 400 128 decode"
    TRAIN_LEN=320 VOCAB=156032
fi
LOGS=${TMPDIR:-/tmp}/audistill-check-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
START=$(date +%s)
status=0
RUN=(env)

section() { printf '\n==== %s (t=%ds)\n' "$1" $(($(date +%s) - START)); }

# The time budget (--budget): the parity tests, and PyTorch and the bf16 mode at each batch, always
# run; every other unit (a benchmark mode, a train --benchmark mode, an op profile, an attention
# shape, the cli section) runs only when the budget still holds it, by the longest unit of its kind
# so far (or a first guess), and is listed at the end when it does not.
declare -A TOOK=()
SKIPPED=()
UNIT_T0=0
mark() { UNIT_T0=$(date +%s); }
took() {
    local d=$(($(date +%s) - UNIT_T0))
    ((d > ${TOOK[$1]:-0})) && TOOK[$1]=$d
    return 0
}
fits() { # KIND WHAT FIRST_GUESS_S
    local est=${TOOK[$1]:-$3} now=$(($(date +%s) - START))
    ((BUDGET == 0 || now + est <= BUDGET)) && return 0
    SKIPPED+=("$2")
    echo "skipped for the ${BUDGET} s budget: $2 (t=${now}s, ~${est}s more)"
    return 1
}

section "device"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
    echo "nvidia-smi not found"
fi
nvcc --version 2>/dev/null | tail -1

if [[ -n $PREBUILT ]]; then
    section "unpack prebuilt binaries ($PREBUILT)"
    unpack=${TMPDIR:-/tmp}/audistill-prebuilt
    rm -rf "$unpack" && mkdir -p "$unpack" && tar -C "$unpack" -xJf "$PREBUILT" ||
        { echo "FAILED: unpack"; exit 1; }
    BIN=$unpack/bin
    # The tests find their fixtures at the source path they were built from.
    src=$(cat "$unpack/srcdir" 2>/dev/null || true)
    if [[ -n $src && ! -e $src/tests/fixtures ]]; then
        mkdir -p "$(dirname "$src")" && ln -sfn "$ROOT" "$src"
    fi
    # The CUDA libraries of the same major version, wherever this image keeps them: a toolkit,
    # the system's libraries, or the nvidia-* wheels PyTorch installed (last: a toolkit's first).
    wheels=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
    where=(/usr/local /usr/lib /opt $wheels)
    cublaslt=$(find "${where[@]}" -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
    cudart=$(find "${where[@]}" -name 'libcudart.so.13*' 2>/dev/null | head -1)
    nccl=$(find "${where[@]}" -name 'libnccl.so.2*' 2>/dev/null | head -1)
    echo "cuBLASLt: ${cublaslt:-not found}; cudart: ${cudart:-not found}; NCCL: ${nccl:-not found}"
    # Only the project's binaries see the bundled libraries (PyTorch keeps its own).
    libs=$unpack/lib:$(dirname "${cublaslt:-/x/x}"):$(dirname "${cudart:-/x/x}"):$(dirname "${nccl:-/x/x}")
    RUN=(env "LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    if "${RUN[@]}" ldd "$BIN/test_cuda_ops" | grep "not found"; then
        echo "FAILED: missing libraries"
        exit 1
    fi
else
    if [[ $REHEARSE == 1 ]]; then
        section "configure (Release, the CUDA emulator: a rehearsal, no GPU)"
        config=(-DAUDISTILL_CUDA_EMULATOR=ON)
    else
        section "configure (Release, CUDA ON, sm_$ARCH)"
        config=(-DAUDISTILL_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH")
    fi
    if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${config[@]}" \
        >"$BUILD.configure.log" 2>&1; then
        tail -30 "$BUILD.configure.log"
        echo "FAILED: configure (log: $BUILD.configure.log)"
        exit 1
    fi
    section "build (the CUDA tests, the benchmark and what they link)"
    targets=(--target bench_distill_step --target bench_attention --target audistill --target tiny_set)
    for src in "$ROOT"/tests/cuda/test_*.c; do targets+=(--target "$(basename "$src" .c)"); done
    if ! cmake --build "$BUILD" -j "$JOBS" "${targets[@]}" >"$BUILD.build.log" 2>&1; then
        grep -E "error|Error" "$BUILD.build.log" | head -30
        echo "FAILED: build (log: $BUILD.build.log)"
        exit 1
    fi
    BIN=$BUILD/tests
fi

aud=$BIN/audistill
[[ -x $aud ]] || aud=$BUILD/audistill
cli_env=(AUDISTILL_BIN="$aud" AUDISTILL_FIXTURES="$ROOT/tests/fixtures" AUDISTILL_TINY_SET="$BIN/tiny_set"
    AUDISTILL_TEST_TMP="${TMPDIR:-/tmp}")

run_tests() {
    section "CUDA parity tests (each op, then the tiny model)"
    local src name rc
    for src in "$ROOT"/tests/cuda/test_*.c; do
        name=$(basename "$src" .c)
        printf -- '-- %s\n' "$name"
        # fresh random inputs on every run (the seed is printed, AUDISTILL_TEST_SEED replays it)
        timeout 240 "${RUN[@]}" AUDISTILL_TEST_SEED="${AUDISTILL_TEST_SEED:-random}" "$BIN/$name" \
            >"$LOGS/$name.log" 2>&1
        rc=$?
        grep -m1 "^seed" "$LOGS/$name.log"
        tail -3 "$LOGS/$name.log"
        # On a GPU machine a skip (77) is a failure: usually the driver is older than the CUDA
        # runtime the tests were built with (compare nvidia-smi's driver with nvcc's release).
        if [[ $rc != 0 ]]; then
            grep -m 20 -E "FAIL|error" "$LOGS/$name.log"
            echo "FAILED: $name (exit $rc)"
            status=1
        fi
    done
}

# `audistill train` / `translate` on the GPU against the CPU: train_cuda.sh (optimizer on host
# mirrors and on the device, moved between them at a checkpoint), train_cuda_features.sh (CTC,
# QAT, teacher cache, precision bf16, recompute), translate_cuda.sh (f32, bf16 and quantized
# models), train_cuda_mpi.sh (2 ranks over NCCL where there are 2 GPUs). They run side by side
# (each in its own temporary directory; their CPU references use the machine's cores). A skip
# (missing h5py, one GPU) is reported, except for train_cuda.sh, which must run.
run_cli() {
    section "audistill train / translate: GPU against CPU (tests/cli/*cuda*.sh, side by side)"
    fits cli "the cli section (tests/cli/*cuda*.sh)" 150 || return
    local script pids=() rc i=0
    local scripts=(train_cuda train_cuda_features translate_cuda train_cuda_mpi)
    for script in "${scripts[@]}"; do
        timeout 300 "${RUN[@]}" "${cli_env[@]}" bash "$ROOT/tests/cli/$script.sh" \
            >"$LOGS/$script.log" 2>&1 &
        pids+=($!)
    done
    for script in "${scripts[@]}"; do
        wait "${pids[$i]}"
        rc=$?
        i=$((i + 1))
        printf -- '-- %s (exit %d)\n' "$script" "$rc"
        grep -E "^(FAIL|ok|passed|skip)|checks|[0-9]+ passed|relative" "$LOGS/$script.log" | tail -12
        if [[ $rc == 77 && $script != train_cuda ]]; then
            echo "skipped: $script.sh ($(tail -1 "$LOGS/$script.log"))"
        elif [[ $rc != 0 ]]; then
            tail -15 "$LOGS/$script.log"
            echo "FAILED: $script.sh (exit $rc)"
            status=1
        fi
    done
    # The NCCL communicator across GPUs (one rank per GPU; the tests above ran it as one rank).
    local gpus
    gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
    if [[ $gpus -ge 2 ]] && command -v mpirun >/dev/null; then
        section "NCCL communicator on $gpus GPUs (mpirun -np $gpus test_comm_nccl)"
        if ! timeout 240 mpirun --allow-run-as-root -np "$gpus" "${RUN[@]}" "$BIN/test_comm_nccl" \
            >"$LOGS/comm_nccl_ranks.log" 2>&1; then
            tail -20 "$LOGS/comm_nccl_ranks.log"
            echo "FAILED: test_comm_nccl on $gpus ranks"
            status=1
        fi
    else
        echo "note: the multi-rank NCCL check needs 2+ GPUs and mpirun (found $gpus GPU(s))"
    fi
}

# Each CUDA test binary under compute-sanitizer's memcheck (out-of-bounds and misaligned device
# accesses, leaks, API errors), MEMCHECK_TIMEOUT seconds each (default 240). The NCCL test is
# left out: it checks the communicator, not kernels, and NCCL's own kernels are not ours.
run_memcheck() {
    section "compute-sanitizer memcheck"
    local src bin rc
    for src in "$ROOT"/tests/cuda/test_*.c; do
        bin=$(basename "$src" .c)
        [[ $bin == test_comm_nccl ]] && continue
        timeout "${MEMCHECK_TIMEOUT:-240}" "${RUN[@]}" compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/$bin" \
            >"$LOGS/$bin.memcheck.log" 2>&1
        rc=$?
        echo "$bin: rc $rc ($(grep -m1 -E "ERROR SUMMARY" "$LOGS/$bin.memcheck.log"))"
        [[ $rc != 0 ]] && { grep -m 20 -E "Invalid|Error" "$LOGS/$bin.memcheck.log"; status=1; }
    done
}

# PyTorch + transformers' step at one batch size (the models saved for audistill with --save).
bench_pytorch() {
    local batch=$1 out=$LOGS/pytorch-b$1.json
    shift
    local bshape=("${shape[@]}")
    bshape[1]=$batch
    mark
    if PYTHONUNBUFFERED=1 timeout 300 python3 "$ROOT/tests/gpu/bench_distill.py" "${bshape[@]}" \
        --steps "$STEPS" "$@" >"$out" 2>"${out%.json}.log"; then
        took "pytorch-b$batch"
        cat "$out"
        jsons+=("$out")
        return 0
    fi
    tail -20 "${out%.json}.log"
    return 1
}

# audistill's step at one batch size and GEMM mode on the saved models, with its op profile
# (every mode at the first batch, the bf16 mode at the others) and the comparisons made at
# DIFF_BATCH (against run 5's profile; GEMM tuning against the heuristic's first answers).
bench_step() {
    local batch=$1 mode=$2 out=$LOGS/audistill-$2-b$1
    mark
    if ! timeout 240 "${RUN[@]}" "$BIN/bench_distill_step" "$benchdir/teacher" \
        "$benchdir/student" "$batch" "$FRAMES" "$TARGETS" "$STEPS" "$mode" >"$out.json" \
        2>"$out.log"; then
        tail -20 "$out.log"
        echo "FAILED: audistill benchmark at batch $batch ($mode)"
        status=1
        return
    fi
    took "step-b$batch"
    cat "$out.json"
    jsons+=("$out.json")
    # Where the step's time goes: every op of one extra step timed (backend/profile.h).
    if [[ $batch == "$FIRST_BATCH" || $mode == bf16 ]]; then
        sed -n '/^op profile/,/^profiled step/p' "$out.log" | head -45
    fi
    [[ $batch == "$DIFF_BATCH" ]] || return
    # what moved since run 5 (H100, flash attention, the same 4,880 tokens)
    if [[ $mode == bf16 ]]; then
        echo "-- op profile against run 5's (experiments/gpu/2026-11-28-h100-5-*)"
        python3 "$ROOT/tests/gpu/profile_diff.py" \
            "$ROOT/experiments/gpu/2026-11-28-h100-5-profile-4880.log" "$out.log" --top 30
    fi
    [[ $mode == bf16-tuned ]] || return
    # what GEMM tuning moved, op by op (bf16 runs first: the core of each batch)
    if [[ -f $LOGS/audistill-bf16-b$batch.log ]]; then
        echo "-- op profile, GEMM tuning against the heuristic's first answers"
        python3 "$ROOT/tests/gpu/profile_diff.py" "$LOGS/audistill-bf16-b$batch.log" "$out.log" \
            --top 30
    fi
    echo "-- tuning's largest gains, ms per call (GEMMs and flash attention; the debug log)"
    python3 - "$out.log" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1]):
    m = re.search(r"heuristic's first ([0-9.]+) ms, answer \d+ of \d+ ([0-9.]+) ms", line)
    b = re.search(r"epilogue ([0-9.]+) ms, bias first ([0-9.]+) \+ ([0-9.]+) ms", line)
    f = re.search(r"defaults ([0-9.]+) ms, kept .* ([0-9.]+) ms$", line.strip())
    if f:
        rows.append((float(f[1]) - float(f[2]), line.split("attention tuning: ", 1)[-1].strip()))
    elif m:
        rows.append((float(m[1]) - float(m[2]), line.split("GEMM tuning: ", 1)[-1].strip()))
    elif b:
        rows.append((float(b[1]) - float(b[2]) - float(b[3]), line.split("GEMM tuning: ", 1)[-1].strip()))
for gain, what in sorted(rows, reverse=True)[:16]:
    print(f"{gain:8.4f}  {what}")
PY
}

run_bench() {
    section "benchmark: one distillation step at real widths, audistill vs PyTorch + transformers"
    # Teacher: Qwen2-Audio-7B's widths (d_model 1280, hidden 4096, FFN 11008, vocab 156032) with
    # 4 encoder and 8 decoder layers; student: 4 decoder layers; clips of 10 s, 40 target tokens
    # each. The layer counts keep model creation and the checkpoint round trip inside the lease.
    # First what the issue asks for at every batch (PyTorch and the bf16 mode: the table's
    # ms/step, tokens/s, MFU, memory), then the other modes while the time budget lasts: every
    # mode at the first batch, the bf16 modes at the others.
    # (benchdir, shape and jsons are seen by bench_pytorch and bench_step)
    local benchdir=${TMPDIR:-/tmp}/audistill-bench
    rm -rf "$benchdir" && mkdir -p "$benchdir"
    local shape=(--batch "$FIRST_BATCH" --frames "$FRAMES" --targets "$TARGETS" "${BENCH_MODELS[@]}")
    local jsons=()
    if ! bench_pytorch "$FIRST_BATCH" --save "$benchdir"; then
        echo "FAILED: PyTorch benchmark"
        status=1
        return
    fi
    local core=bf16 batch mode
    [[ ,$MODES, == *,bf16,* ]] || core=${MODES%%,*}
    for batch in ${BATCHES//,/ }; do
        if [[ $batch != "$FIRST_BATCH" ]] && ! bench_pytorch "$batch"; then
            echo "note: PyTorch at batch $batch failed (memory?); audistill still runs"
        fi
        bench_step "$batch" "$core"
    done
    for batch in ${BATCHES//,/ }; do
        for mode in ${MODES//,/ }; do
            [[ $mode == "$core" ]] && continue
            [[ $batch == "$FIRST_BATCH" || $mode == bf16* ]] || continue
            fits "step-b$batch" "benchmark, $mode at batch $batch" 20 && bench_step "$batch" "$mode"
        done
    done
    # The same shapes through `audistill train` as users run it (precision bf16, the optimizer on
    # the device, decoder + lm_head trained): the loader and the trainer's host work included; no
    # checkpoint is written. Once per mode in --modes: the student's GEMM weights in bf16 (the
    # default), the same with attention forced through the GEMMs or the flash kernels
    # (AUDISTILL_CUDA_ATTENTION), with GEMM tuning (its first step, which tunes, is left out of
    # the median), and in f32 (student_weights: f32, converted in every GEMM), side by side; then the op profile of the bf16 step, and with GEMM attention when that mode is in.
    section "audistill train --benchmark at the same shapes"
    "$BIN/tiny_set" "$benchdir/set.h5" 8 128 "$VOCAB" 7 --frames "$FRAMES" --targets "$TARGETS" &&
        cat >"$benchdir/train.yaml" <<YAML
student: $benchdir/student
teacher: $benchdir/teacher
output: $benchdir/train-run
data: {train: $benchdir/set.h5}
train: {device: cuda, precision: bf16, optimizer: device, trainable: decoder, steps: 100, batch: 4, micro_batch: 4, lr: 1e-5, warmup: 0, log_every: 1, max_len: $TRAIN_LEN, max_frames: $FRAMES}
distill: {alpha: 0.5, temperature: 2.0}
YAML
    sed 's/^train: {/train: {student_weights: f32, /' "$benchdir/train.yaml" >"$benchdir/train-f32.yaml"
    sed 's/^train: {/train: {gemm_tuning: true, /' "$benchdir/train.yaml" >"$benchdir/train-tuned.yaml"
    sed 's/^distill: {/distill: {share_encoder: false, /' "$benchdir/train.yaml" >"$benchdir/train-separate.yaml"
    for mode in bf16 bf16-gemm bf16-flash bf16-tuned bf16-separate f32; do
        [[ ,$MODES, == *,$mode,* ]] || continue
        fits train "audistill train --benchmark, mode $mode" 30 || continue
        mark
        cfg=$benchdir/train.yaml attention=auto
        [[ $mode == f32 ]] && cfg=$benchdir/train-f32.yaml
        [[ $mode == bf16-tuned ]] && cfg=$benchdir/train-tuned.yaml
        [[ $mode == bf16-separate ]] && cfg=$benchdir/train-separate.yaml
        [[ $mode == bf16-flash ]] && attention=flash
        [[ $mode == bf16-gemm ]] && attention=gemm
        if AUDISTILL_CUDA_ATTENTION=$attention timeout 240 "${RUN[@]}" "$aud" train \
            --config "$cfg" --benchmark "$TRAIN_STEPS" \
            >"$LOGS/train-bench-$mode.txt" 2>"$LOGS/train-bench-$mode.log"; then
            took train
            # (its MFU: the FLOPs the op table counted over the card's dense bf16 peak, which
            # src/backend/device_peak.c knows by the card's name)
            echo "mode $mode: $(cat "$LOGS/train-bench-$mode.txt")"
            grep -m1 "this job now" "$LOGS/train-bench-$mode.log"
            [[ $mode == bf16-tuned ]] && grep -m1 "GEMM tuning: [0-9]* problems" "$LOGS/train-bench-$mode.log"
        else
            tail -20 "$LOGS/train-bench-$mode.log"
            echo "FAILED: audistill train --benchmark (mode $mode)"
            status=1
        fi
    done
    # Where that step goes: every op of 2 steps after the warm-up timed (AUDISTILL_PROFILE; the
    # device drained around each op, so only the table, not the step time, is meaningful here).
    for attention in auto gemm; do
        [[ $attention == gemm && ,$MODES, != *,bf16-gemm,* ]] && continue
        fits profile "audistill train's op profile, attention $attention" 30 || continue
        mark
        echo "-- op profile, attention $attention"
        if AUDISTILL_CUDA_ATTENTION=$attention AUDISTILL_PROFILE=1 timeout 240 "${RUN[@]}" \
            "$aud" train --config "$benchdir/train.yaml" --benchmark 3 >/dev/null \
            2>"$LOGS/train-profile-$attention.log"; then
            took profile
            sed -n '/^op profile/,$p' "$LOGS/train-profile-$attention.log" | head -25
        else
            tail -5 "$LOGS/train-profile-$attention.log"
            echo "note: the profiled audistill train run failed (attention $attention)"
        fi
    done
    rm -rf "$benchdir/train-run"
    python3 - "${jsons[@]}" <<'PY' | tee "$LOGS/table.txt"
import json, sys
rows = []
for path in sys.argv[1:]:
    try:
        rows.append(json.load(open(path)))
    except Exception:
        pass
# PyTorch's row counts the model FLOPs of its shapes; audistill rows of the same token count
# share them, plus one encoder forward where PyTorch shared the encoder and the row did not
# (bf16-separate).
flops = {r["tokens"]: r["flops_per_step"] for r in rows if r.get("flops_per_step")}
encoder = {r["tokens"]: r.get("encoder_flops", 0) if r.get("shared_encoder") else 0
           for r in rows if r.get("flops_per_step")}
# The card and its dense bf16 peak as audistill's rows give them (src/backend/device_peak.c, or
# AUDISTILL_PEAK_TFLOPS); every row ran on the same card.
name = next((r["device"] for r in rows if r.get("device")), "unknown")
peak = 1e12 * max([r.get("peak_tflops", 0) for r in rows] + [0])
if peak:
    print(f"card: {name}; MFU against {peak / 1e12:.4g} TFLOP/s dense bf16")
else:
    print(f"card: {name}; its peak is unknown (set AUDISTILL_PEAK_TFLOPS for an MFU column)")
print(f"{'impl':24} {'tokens':>7} {'TFLOP':>6} {'ms/step':>9} {'tokens/s':>10} {'MFU %':>6} {'memory GiB':>11}")
best = None  # audistill's highest MFU, and PyTorch's step at the same tokens
for r in rows:
    mem = r.get("peak_bytes") or r.get("device_bytes_used") or 0
    f = flops.get(r["tokens"], 0)
    if f and r.get("shared_encoder") is False:
        f += encoder.get(r["tokens"], 0)
    mfu = 100 * f / (r["ms_per_step"] / 1e3) / peak if f and peak else 0
    print(f"{r['impl']:24} {r['tokens']:7d} {f / 1e12:6.2f} {r['ms_per_step']:9.1f} "
          f"{r['tokens_per_s']:10.0f} {mfu:6.1f} {mem / 2**30:11.1f}")
    if r["impl"].startswith("audistill") and mfu and (best is None or mfu > best[0]):
        best = (mfu, r)
by = {(r["impl"], r["tokens"]): r for r in rows}
if best:  # the issue's target: faster than PyTorch and MFU >= 45%
    mfu, r = best
    torch = by.get(("pytorch", r["tokens"]))
    speed = f"{torch['ms_per_step'] / r['ms_per_step']:.2f}x PyTorch's speed" if torch else "no PyTorch row"
    print(f"target (faster than PyTorch, MFU >= 45%): best MFU {mfu:.1f}% ({r['impl']} at "
          f"{r['tokens']} tokens, {speed}): {'met' if mfu >= 45 and torch and torch['ms_per_step'] > r['ms_per_step'] else 'NOT met'}")
def compare(what, a, b, names, tol, digits, flag):
    """Row b against row a at each token count: step times, last losses, a flag past tol."""
    for tokens in sorted({r["tokens"] for r in rows}):
        x, y = a(tokens), b(tokens)
        if not (x and y):
            continue
        d = abs(x["loss_last"] - y["loss_last"])
        print(f"{what} at {tokens} tokens: {names[1]} {y['ms_per_step']:.1f} ms/step against "
              f"{names[0]} {x['ms_per_step']:.1f}; last loss {y['loss_last']:.{digits}f} against "
              f"{x['loss_last']:.{digits}f}"
              + ("" if d <= tol * max(1.0, abs(x["loss_last"])) else "  " + flag))
def flash_row(tokens):
    r = by.get(("audistill-bf16-flash", tokens)) or by.get(("audistill-bf16", tokens))
    return r if r and r.get("attention_flash_calls") else None  # AUTO may not take them
# The flash kernels against the batched GEMMs on the same step: the losses of the 12 steps
# (random init, the same batch) must agree to bf16 rounding, or the flash path is wrong here.
compare("attention", lambda t: by.get(("audistill-bf16-gemm", t)), flash_row, ("GEMMs", "flash"),
        0.02, 4, "FLASH LOSS DISAGREES")
# Activations that only GEMMs (and attention: every layer's q, k, v) read,
# stored in bf16 against converted by each reader: the GEMMs and the flash kernels see the same
# operand bits, so the losses must agree (to the GEMM algorithms cuBLASLt picks). The step times
# show what bf16 storage, and the flash kernels' cp.async pipe it allows, gain.
compare("GEMM inputs", lambda t: by.get(("audistill-bf16-f32in", t)),
        lambda t: by.get(("audistill-bf16", t)), ("f32", "bf16"), 1e-4, 6,
        "GEMM INPUT LOSS DISAGREES")
# GEMM tuning: other cuBLASLt algorithms for the same products (other summation orders), so the
# losses agree to bf16 rounding; the step times show what the timed choices gain.
compare("GEMM tuning", lambda t: by.get(("audistill-bf16", t)),
        lambda t: by.get(("audistill-bf16-tuned", t)), ("heuristic", "tuned"), 0.02, 4,
        "TUNED LOSS DISAGREES")
# The shared audio encoder (distill.share_encoder): the teacher takes the student's encoder
# output instead of running the same encoder again; the same function of the same weights, so
# the losses agree (to the last bits of other GEMM shapes' algorithms), one encoder forward
# cheaper.
compare("shared encoder", lambda t: by.get(("audistill-bf16-separate", t)),
        lambda t: by.get(("audistill-bf16", t)), ("separate", "shared"), 1e-3, 6,
        "SHARED ENCODER LOSS DISAGREES")
for r in rows:
    if r.get("gemm_tuned"):
        print(f"GEMM tuning at {r['tokens']} tokens: {r['gemm_tuned']} problems, "
              f"{r['gemm_tuning_changed']} took another algorithm, {r['gemm_bias_first']} write "
              f"the bias first; one call each {r['gemm_heuristic_ms']:.2f} ms -> "
              f"{r['gemm_tuned_ms']:.2f} ms; flash attention: {r.get('attention_tuned', 0)} "
              f"shapes, {r.get('attention_tuning_changed', 0)} kept other switches")
PY
    grep -q "FLASH LOSS DISAGREES\|GEMM INPUT LOSS DISAGREES\|TUNED LOSS DISAGREES\|SHARED ENCODER LOSS DISAGREES" "$LOGS/table.txt" &&
        status=1
}

# Attention alone at the benchmark's two shapes, per batch in --batches: Whisper's encoder (20
# heads of 64 over the 500 positions of a 10 s clip, bidirectional) and Qwen's decoder (32 heads
# of 128 over the 305 tokens of a row, causal), forward and backward, bf16 q, k, v as the
# training graph stores them: the flash kernels (with their cp.async pipes on and off:
# AUDISTILL_CUDA_FLASH_PIPE=0, the encoder's key tiles and both shapes' dK/dV query tiles; the
# decoder's forward and dQ kernels compiled as by default,
# without the pipe, and for 2 blocks per SM: AUDISTILL_CUDA_FLASH_D128_BLOCKS=2, with the pipe
# and without), the batched GEMMs, and PyTorch's
# scaled_dot_product_attention on the same card (its FlashAttention-2 kernels). The op profile's
# attention rows show what the step pays; this shows what each implementation does with the
# same work, and which setting of each switch should be the default. And one decoding step per
# batch element (a beam: one query row over 400 cached keys of Qwen's decoder, forward only):
# AUTO's choice (the decoding kernel, whose warps split the keys), the flash kernels, the GEMMs
# and SDPA, with the GB/s of K and V read.
run_attention() {
    section "attention alone at the benchmark's shapes: audistill's paths against PyTorch SDPA"
    local batch shape impl json=() out
    for batch in ${BATCHES//,/ }; do
        for shape in "$batch $ENCODER_SHAPE" "$batch $DECODER_SHAPE" "$batch $DECODE_SHAPE"; do
            fits "attention-b$batch" "attention at $shape" 20 || continue
            mark
            for impl in auto flash flash-nopipe flash-2blocks flash-2blocks-nopipe gemm pytorch; do
                [[ $impl == auto && $shape != *decode ]] && continue # auto is flash there
                [[ $impl == flash-?* && $shape == *decode ]] && continue
                [[ $impl == flash-nopipe && $shape == *causal ]] && continue # no pipe at 128
                [[ $impl == flash-2blocks* && $shape != *causal ]] && continue # 128 only
                out=$LOGS/attention-$impl-${shape// /-}.json
                case $impl in
                auto) timeout 120 "${RUN[@]}" "$BIN/bench_attention" $shape $ATTENTION_ITERS auto ;;
                flash) timeout 120 "${RUN[@]}" "$BIN/bench_attention" $shape $ATTENTION_ITERS flash ;;
                flash-nopipe) timeout 120 "${RUN[@]}" AUDISTILL_CUDA_FLASH_PIPE=0 "$BIN/bench_attention" $shape $ATTENTION_ITERS flash ;;
                flash-2blocks) timeout 120 "${RUN[@]}" AUDISTILL_CUDA_FLASH_D128_BLOCKS=2 "$BIN/bench_attention" $shape $ATTENTION_ITERS flash ;;
                flash-2blocks-nopipe) timeout 120 "${RUN[@]}" AUDISTILL_CUDA_FLASH_D128_BLOCKS=2 AUDISTILL_CUDA_FLASH_PIPE=0 "$BIN/bench_attention" $shape $ATTENTION_ITERS flash ;;
                gemm) timeout 120 "${RUN[@]}" "$BIN/bench_attention" $shape $ATTENTION_ITERS gemm ;;
                pytorch) timeout 120 python3 "$ROOT/tests/gpu/bench_attention.py" $shape $ATTENTION_ITERS ;;
                esac >"$out" 2>"$out.err"
                if [[ $? == 0 && -s $out ]]; then
                    [[ $impl == flash-* ]] && sed -i "s/\"audistill-flash\"/\"audistill-$impl\"/" "$out"
                    json+=("$out")
                else
                    tail -5 "$out.err"
                    echo "FAILED: attention benchmark ($impl, $shape)"
                    status=1
                fi
            done
            took "attention-b$batch"
        done
    done
    [[ ${#json[@]} -gt 0 ]] || return
    python3 - "${json[@]}" <<'PY' | tee "$LOGS/attention.txt"
import json, sys
rows = [json.load(open(p)) for p in sys.argv[1:]]
def path(r):  # the kernels that ran, from the backend's counters (PyTorch: its SDPA)
    if "flash_calls" not in r:
        return "SDPA"
    return ("decode" if r.get("decode_calls") else "flash" if r["flash_calls"]
            else "gemm" if r["gemm_calls"] else "tiled")
print(f"{'implementation':<30} {'path':<7} {'shape':<36} {'fwd ms':>8} {'TFLOP/s':>8} {'bwd ms':>8} {'TFLOP/s':>8}")
wrong = 0
for r in rows:
    shape = (f"B{r['batch']} H{r['heads']}/{r['kv_heads']} T{r['seq']} D{r['head_dim']} "
             + ("decode" if r.get("decode") else "causal" if r["causal"] else "bidirectional"))
    if r.get("decode"):  # forward only; memory-bound: K and V's GB/s in the backward columns
        print(f"{r['impl']:<30} {path(r):<7} {shape:<36} {r['forward_ms']:>8.4f} "
              f"{r['forward_tflops']:>8.2f} {'K,V GB/s':>8} {r['forward_gbs']:>8.0f}")
        if r["impl"] == "audistill-auto" and path(r) != "decode":
            print("AUTO DID NOT TAKE THE DECODING KERNEL")
            wrong = 1
        continue
    print(f"{r['impl']:<30} {path(r):<7} {shape:<36} {r['forward_ms']:>8.3f} "
          f"{r['forward_tflops']:>8.1f} {r['backward_ms']:>8.3f} {r['backward_tflops']:>8.1f}")
sys.exit(wrong)
PY
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
}

# The logs go to $OUT after every section, so a lease that ends mid-check still returns them.
save_logs() {
    [[ -n "${OUT:-}" ]] || return 0
    mkdir -p "$OUT" || return 0
    tar -C "$LOGS" -czf "$OUT/check-logs.tar.gz.tmp" . && mv "$OUT/check-logs.tar.gz.tmp" "$OUT/check-logs.tar.gz"
    [[ -f $LOGS/table.txt ]] && cp "$LOGS/table.txt" "$OUT/"
    [[ -f $LOGS/attention.txt ]] && cp "$LOGS/attention.txt" "$OUT/"
    return 0
}
for sec in ${SECTIONS//,/ }; do
    case $sec in
    tests) run_tests ;;
    cli) run_cli ;;
    bench) run_bench ;;
    attention) run_attention ;;
    memcheck) run_memcheck ;;
    esac
    save_logs
done

section "done"
if [[ ${#SKIPPED[@]} -gt 0 ]]; then
    echo "${#SKIPPED[@]} units skipped for the ${BUDGET} s budget (--budget 0 runs them all):"
    printf '  %s\n' "${SKIPPED[@]}"
fi
[[ $BUDGET != 0 ]] && echo "took $(($(date +%s) - START)) s of a ${BUDGET} s budget"
if [[ $status == 0 ]]; then echo "GPU CHECK PASSED"; else echo "GPU CHECK FAILED"; fi
exit $status
