#!/usr/bin/env bash
# Packs what tests/gpu/check.sh --prebuilt needs on a GPU machine that lacks the project's C
# dependencies (no package registry there): the CUDA test binaries and the benchmark built here
# (CUDA ON, sm_90), and the shared libraries they load that a CUDA/PyTorch image may not have
# (OpenBLAS, HDF5, cJSON, ... but not glibc, libstdc++ or the CUDA libraries, which the GPU
# machine's toolkit provides in the same major version).
# With --espeak, espeak-ng (binary, libraries and its English data) goes in too, so that
# `audistill synth` runs there (experiments/demo_teacher/gpu_train.sh).
#   tests/gpu/bundle.sh [--espeak] BUILD_DIR OUT.tar.xz
set -euo pipefail
espeak=0
if [[ ${1:-} == --espeak ]]; then espeak=1; shift; fi
build=$1 out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bins=("$build/tests/bench_distill_step" "$build/tests/bench_attention" "$build/tests/tiny_set" "$build/audistill")
for src in "$root"/tests/cuda/test_*.c; do bins+=("$build/tests/$(basename "$src" .c)"); done
if [[ $espeak == 1 ]]; then
    bins+=("$(command -v espeak-ng)")
    data=$(espeak-ng --version | sed -n 's/.*Data at: //p')
    mkdir -p "$stage/espeak/espeak-ng-data"
    (cd "$data" && cp -r phondata phonindex phontab intonations en_dict voices lang "$stage/espeak/espeak-ng-data/")
fi
cp "${bins[@]}" "$stage/bin/"
skip='^(linux-vdso|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux|libstdc\+\+|libgcc_s|libresolv|libcudart|libcublas|libcuda\.so|libnvidia|libnccl)'
for b in "${bins[@]}"; do ldd "$b"; done | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r name path; do
        [[ $name =~ $skip ]] && continue
        cp -L "$path" "$stage/lib/$name"
    done
sed -n "s/^CMAKE_HOME_DIRECTORY:INTERNAL=//p" "$build/CMakeCache.txt" >"$stage/srcdir"
tar -C "$stage" -cJf "$out" $(cd "$stage" && ls)
ls -la "$out"
