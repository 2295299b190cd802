#!/bin/bash
# Registers, spills and the instruction mix of the flash-attention kernels' tensor-core loops
# for sm_90, without a GPU: nvcc compiles cuda/attention_flash.cu to a cubin (ptxas -v gives
# registers and spills), cuobjdump disassembles it and sass_loop_mix.py counts each loop.
#
# usage: bash experiments/cuda/sass_flash.sh [OUT_DIR]     (run from the repository root)
# cuobjdump and nvdisasm are not in the CUDA packages here; `pip install nvidia-cuda-cuobjdump
# nvidia-cuda-nvdisasm` brings them.
set -euo pipefail
out=${1:-/tmp/sass_flash}
mkdir -p "$out"
cuobjdump=$(command -v cuobjdump || true)
if [ -z "$cuobjdump" ]; then
    site=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    for c in "$site"/cu*/bin/cuobjdump; do [ -x "$c" ] && cuobjdump=$c; done
fi
if [ -z "$cuobjdump" ]; then
    echo "sass_flash.sh: cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)" >&2
    exit 1
fi
nvcc -std=c++17 -O3 -arch=sm_90 -Xptxas -v -cubin -o "$out/attention_flash.cubin" \
    cuda/attention_flash.cu -I src -I cuda 2> "$out/ptxas.txt"
echo "registers / spill stores (bytes) per kernel:"
awk '/Compiling entry function/ {match($0, /_Z[^'"'"']*/); name=substr($0, RSTART, RLENGTH)}
     /spill stores/ {split($0, a, ","); sub(/ bytes spill stores/, "", a[2]); spill=a[2]}
     /Used [0-9]+ registers/ {match($0, /Used [0-9]+/);
                              printf "  %-50s %4s %4s\n", name, substr($0, RSTART + 5, RLENGTH - 5), spill}' \
    "$out/ptxas.txt" | sort
PATH="$(dirname "$cuobjdump"):$PATH" "$cuobjdump" -sass "$out/attention_flash.cubin" > "$out/attention_flash.sass"
python3 "$(dirname "$0")/sass_loop_mix.py" < "$out/attention_flash.sass"
