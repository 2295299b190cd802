#!/usr/bin/env bash
# Packs what tests/gpu/check.sh --prebuilt needs on a GPU machine that lacks the project's C
# dependencies (no package registry there): the CUDA test binaries and the benchmark built here
# (CUDA ON, sm_90), and the shared libraries they load that a CUDA/PyTorch image may not have
# (OpenBLAS, HDF5, cJSON, ... but not glibc, libstdc++ or the CUDA libraries, which the GPU
# machine's toolkit provides in the same major version).
#   tests/gpu/bundle.sh BUILD_DIR OUT.tar.xz
set -euo pipefail
build=$1 out=$2
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
bins=("$build"/tests/test_cuda_* "$build/tests/bench_distill_step")
cp "${bins[@]}" "$stage/bin/"
skip='^(linux-vdso|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|ld-linux|libstdc\+\+|libgcc_s|libresolv|libcudart|libcublas|libcuda\.so|libnvidia)'
for b in "${bins[@]}"; do ldd "$b"; done | awk '$3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r name path; do
        [[ $name =~ $skip ]] && continue
        cp -L "$path" "$stage/lib/$name"
    done
sed -n "s/^CMAKE_HOME_DIRECTORY:INTERNAL=//p" "$build/CMakeCache.txt" >"$stage/srcdir"
tar -C "$stage" -cJf "$out" bin lib srcdir
ls -la "$out"
