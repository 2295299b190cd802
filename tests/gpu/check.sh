#!/usr/bin/env bash
# The one prepared GPU check, for a session that has a GPU for a few minutes (budget: ~8 min
# on an H100). It builds the CUDA backend (Release) or unpacks a prebuilt bundle, prints the
# device, runs every CUDA parity test (each op of the CUDA backend against the CPU reference on
# random inputs; the tiny model's forward, every parameter gradient and 20 distillation steps
# against the CPU backend), `audistill train` / `translate` / `teacher-cache` with device cuda
# against the CPU (tests/cli/train_cuda*.sh, translate_cuda.sh), then benchmarks one
# distillation step at real widths against PyTorch + transformers on the same card and prints
# where that step's time goes (the op profile of one more step), and times `audistill train
# --benchmark` on the same models and shapes.
#
# Usage: tests/gpu/check.sh [--prebuilt BUNDLE.tar.xz] [--memcheck] [--no-bench]
#   --prebuilt   use binaries packed by tests/gpu/bundle.sh (for GPU machines without the
#                project's C dependencies and no package registry): no configure/build
#   --memcheck   also run each CUDA test binary under compute-sanitizer (adds minutes)
#   --no-bench   skip the benchmark
# Environment: AUDISTILL_GPU_BUILD (build dir, default build-gpu), CUDA_ARCH (default 90;
# use 80 on an A100), JOBS (default: all cores), OUT (when set, logs are copied there).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${AUDISTILL_GPU_BUILD:-$ROOT/build-gpu}
ARCH=${CUDA_ARCH:-90}
JOBS=${JOBS:-$(nproc)}
MEMCHECK=0 BENCH=1 PREBUILT=
while [[ $# -gt 0 ]]; do
    case $1 in
    --memcheck) MEMCHECK=1 ;;
    --no-bench) BENCH=0 ;;
    --prebuilt)
        PREBUILT=$2
        shift
        ;;
    *)
        echo "usage: tests/gpu/check.sh [--prebuilt BUNDLE.tar.xz] [--memcheck] [--no-bench]" >&2
        exit 2
        ;;
    esac
    shift
done
START=$(date +%s)
status=0
RUN=(env)

section() { printf '\n==== %s (t=%ds)\n' "$1" $(($(date +%s) - START)); }

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
    # The CUDA libraries of the same major version, wherever this image keeps them.
    cublaslt=$(find /usr/local /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
    cudart=$(find /usr/local /usr/lib /opt -name 'libcudart.so.13*' 2>/dev/null | head -1)
    nccl=$(find /usr/local /usr/lib /opt -name 'libnccl.so.2*' 2>/dev/null | head -1)
    echo "cuBLASLt: ${cublaslt:-not found}; cudart: ${cudart:-not found}; NCCL: ${nccl:-not found}"
    # Only the project's binaries see the bundled libraries (PyTorch keeps its own).
    libs=$unpack/lib:$(dirname "${cublaslt:-/x/x}"):$(dirname "${cudart:-/x/x}"):$(dirname "${nccl:-/x/x}")
    RUN=(env "LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
    if "${RUN[@]}" ldd "$BIN/test_cuda_ops" | grep "not found"; then
        echo "FAILED: missing libraries"
        exit 1
    fi
else
    section "configure (Release, CUDA ON, sm_$ARCH)"
    if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DAUDISTILL_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$ARCH" >"$BUILD.configure.log" 2>&1; then
        tail -30 "$BUILD.configure.log"
        echo "FAILED: configure (log: $BUILD.configure.log)"
        exit 1
    fi
    section "build (the CUDA tests, the benchmark and what they link)"
    targets=(--target bench_distill_step --target audistill --target tiny_set)
    for src in "$ROOT"/tests/cuda/test_*.c; do targets+=(--target "$(basename "$src" .c)"); done
    if ! cmake --build "$BUILD" -j "$JOBS" "${targets[@]}" >"$BUILD.build.log" 2>&1; then
        grep -E "error|Error" "$BUILD.build.log" | head -30
        echo "FAILED: build (log: $BUILD.build.log)"
        exit 1
    fi
    BIN=$BUILD/tests
fi

section "CUDA parity tests (each op, then the tiny model)"
LOG=${TMPDIR:-/tmp}/audistill-cuda-tests.log
: >"$LOG"
for src in "$ROOT"/tests/cuda/test_*.c; do
    name=$(basename "$src" .c)
    printf -- '-- %s\n' "$name" | tee -a "$LOG"
    timeout 240 "${RUN[@]}" "$BIN/$name" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    # On a GPU machine a skip (77) is a failure: usually the driver is older than the CUDA
    # runtime the tests were built with (compare nvidia-smi's driver with nvcc's release above).
    if [[ $rc != 0 ]]; then
        echo "FAILED: $name (exit $rc)" | tee -a "$LOG"
        status=1
    fi
done
# `audistill train` on the GPU against the CPU, with the optimizer on host mirrors and on the
# device (train.optimizer: device), and moved between them at a checkpoint.
section "audistill train: GPU against CPU (tests/cli/train_cuda.sh)"
aud=$BIN/audistill
[[ -x $aud ]] || aud=$BUILD/audistill
timeout 300 "${RUN[@]}" AUDISTILL_BIN="$aud" AUDISTILL_FIXTURES="$ROOT/tests/fixtures" \
    AUDISTILL_TINY_SET="$BIN/tiny_set" AUDISTILL_TEST_TMP="${TMPDIR:-/tmp}" \
    bash "$ROOT/tests/cli/train_cuda.sh" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [[ $rc != 0 ]]; then # a skip (77) on a GPU machine is a failure too
    echo "FAILED: train_cuda.sh (exit $rc)" | tee -a "$LOG"
    status=1
fi
# The other GPU-against-CPU scripts (CTC, QAT, teacher cache; translation of f32, bf16 and
# quantized models; 2 ranks where there are 2 GPUs). They passed on the CUDA emulator in CI; a
# skip here (missing h5py, one GPU) is reported, not failed.
for script in train_cuda_features translate_cuda train_cuda_mpi; do
    section "tests/cli/$script.sh"
    timeout 240 "${RUN[@]}" AUDISTILL_BIN="$aud" AUDISTILL_FIXTURES="$ROOT/tests/fixtures" \
        AUDISTILL_TINY_SET="$BIN/tiny_set" AUDISTILL_TEST_TMP="${TMPDIR:-/tmp}" \
        bash "$ROOT/tests/cli/$script.sh" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    if [[ $rc == 77 ]]; then
        echo "skipped: $script.sh (reason above)" | tee -a "$LOG"
    elif [[ $rc != 0 ]]; then
        echo "FAILED: $script.sh (exit $rc)" | tee -a "$LOG"
        status=1
    fi
done
# The NCCL communicator across GPUs (one rank per GPU; the loop above ran it as one rank).
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
if [[ $gpus -ge 2 ]] && command -v mpirun >/dev/null; then
    section "NCCL communicator on $gpus GPUs (mpirun -np $gpus test_comm_nccl)"
    if ! timeout 240 mpirun --allow-run-as-root -np "$gpus" "${RUN[@]}" "$BIN/test_comm_nccl" 2>&1 | tee -a "$LOG"; then
        echo "FAILED: test_comm_nccl on $gpus ranks"
        status=1
    fi
else
    echo "note: the multi-rank NCCL check needs 2+ GPUs and mpirun (found $gpus GPU(s))"
fi
[[ -n "${OUT:-}" ]] && cp "$LOG" "$OUT/cuda-tests.log"

if [[ $MEMCHECK == 1 ]]; then
    section "compute-sanitizer memcheck"
    for src in "$ROOT"/tests/cuda/test_*.c; do
        bin="$BIN/$(basename "$src" .c)"
        "${RUN[@]}" compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" >"$bin.memcheck.log" 2>&1
        rc=$?
        echo "$(basename "$bin"): rc $rc (log $bin.memcheck.log)"
        [[ $rc == 9 ]] && { grep -m 20 -E "Invalid|Error" "$bin.memcheck.log"; status=1; }
    done
fi

if [[ $BENCH == 1 ]]; then
    section "benchmark: one distillation step at real widths, audistill vs PyTorch + transformers"
    # Teacher: Qwen2-Audio-7B's widths (d_model 1280, hidden 4096, FFN 11008, vocab 156032) with
    # 4 encoder and 8 decoder layers; student: 4 decoder layers; 4 clips of 10 s, 40 target tokens
    # each. The layer counts keep model creation and the checkpoint round trip inside the lease.
    benchdir=${TMPDIR:-/tmp}/audistill-bench
    rm -rf "$benchdir" && mkdir -p "$benchdir"
    shape=(--encoder-layers 4 --teacher-layers 8 --student-layers 4 --batch 4 --frames 1000 --targets 40)
    if PYTHONUNBUFFERED=1 timeout 300 python3 "$ROOT/tests/gpu/bench_distill.py" "${shape[@]}" \
        --steps 10 --save "$benchdir" >"$benchdir/pytorch.json" 2>"$benchdir/pytorch.log"; then
        cat "$benchdir/pytorch.json"
    else
        tail -20 "$benchdir/pytorch.log"
        echo "FAILED: PyTorch benchmark"
        status=1
    fi
    if [[ -s "$benchdir/pytorch.json" ]]; then
        for mode in f32 bf16; do
            if timeout 240 "${RUN[@]}" "$BIN/bench_distill_step" "$benchdir/teacher" \
                "$benchdir/student" 4 1000 40 10 $mode >"$benchdir/audistill-$mode.json" \
                2>"$benchdir/audistill-$mode.log"; then
                cat "$benchdir/audistill-$mode.json"
                # Where the step's time goes: every op of one extra step timed (backend/profile.h).
                sed -n '/^op profile/,/^profiled step/p' "$benchdir/audistill-$mode.log" | head -70
            else
                tail -20 "$benchdir/audistill-$mode.log"
                echo "FAILED: audistill benchmark ($mode GEMMs)"
                status=1
            fi
        done
    fi
    # The same shapes through `audistill train` as users run it (precision bf16, the optimizer on
    # the device, decoder + lm_head trained): the loader, the trainer's host work and the f32
    # student weights' conversions included; no checkpoint is written.
    if [[ -s "$benchdir/pytorch.json" ]]; then
        section "audistill train --benchmark at the same shapes"
        "$BIN/tiny_set" "$benchdir/set.h5" 8 128 156032 7 --frames 1000 --targets 40 &&
            cat >"$benchdir/train.yaml" <<YAML
student: $benchdir/student
teacher: $benchdir/teacher
output: $benchdir/train-run
data: {train: $benchdir/set.h5}
train: {device: cuda, precision: bf16, optimizer: device, trainable: decoder, steps: 100, batch: 4, micro_batch: 4, lr: 1e-5, warmup: 0, log_every: 1, max_len: 320, max_frames: 1000}
distill: {alpha: 0.5, temperature: 2.0}
YAML
        if timeout 240 "${RUN[@]}" "$BIN/audistill" train --config "$benchdir/train.yaml" \
            --benchmark 8 >"$benchdir/train-bench.txt" 2>"$benchdir/train-bench.log"; then
            cat "$benchdir/train-bench.txt"
            grep -m1 "this job now" "$benchdir/train-bench.log"
        else
            tail -20 "$benchdir/train-bench.log"
            echo "FAILED: audistill train --benchmark"
            status=1
        fi
        rm -rf "$benchdir/train-run"
    fi
    python3 - "$benchdir/pytorch.json" "$benchdir/audistill-f32.json" \
        "$benchdir/audistill-bf16.json" <<'PY' | tee "$benchdir/table.txt"
import json, subprocess, sys
rows = []
for path in sys.argv[1:]:
    try:
        rows.append(json.load(open(path)))
    except Exception:
        pass
flops = rows[0].get("flops_per_step", 0) if rows else 0
name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                      capture_output=True, text=True).stdout.strip()
peak = 989.4e12 if ("H100" in name or "H200" in name) else 312e12  # dense bf16 (A100 otherwise)
print(f"card: {name}; model FLOPs per step {flops / 1e12:.2f} T; MFU against {peak / 1e12:.0f} TFLOP/s")
print(f"{'impl':15} {'ms/step':>9} {'tokens/s':>10} {'MFU %':>6} {'memory GiB':>11}")
for r in rows:
    mem = r.get("peak_bytes") or r.get("device_bytes_used") or 0
    mfu = 100 * flops / (r["ms_per_step"] / 1e3) / peak if flops else 0
    print(f"{r['impl']:15} {r['ms_per_step']:9.1f} {r['tokens_per_s']:10.0f} {mfu:6.1f} {mem / 2**30:11.1f}")
PY
    [[ -n "${OUT:-}" ]] && cp "$benchdir"/*.json "$benchdir"/audistill-*.log "$benchdir/table.txt" \
        "$benchdir"/train-bench.* "$OUT/" 2>/dev/null
fi

section "done"
if [[ $status == 0 ]]; then echo "GPU CHECK PASSED"; else echo "GPU CHECK FAILED"; fi
exit $status
