#!/bin/bash
# Registers, spills and the instruction mix of one CUDA source's kernel loops for sm_90, without
# a GPU: nvcc compiles the source to a cubin (ptxas -v gives registers and spills), cuobjdump
# disassembles it and sass_loop_mix.py counts each loop (MIX_ARGS: its options, e.g. --all for
# loops without tensor-core instructions).
#
# usage: bash experiments/cuda/sass_kernels.sh SOURCE.cu [OUT_DIR] [MIX_ARGS...]
#        (run from the repository root; sass_flash.sh and sass_loss.sh name the usual sources)
# cuobjdump and nvdisasm are not in the CUDA packages here; `pip install nvidia-cuda-cuobjdump
# nvidia-cuda-nvdisasm` brings them.
set -euo pipefail
src=${1:?usage: sass_kernels.sh SOURCE.cu [OUT_DIR] [MIX_ARGS...]}
name=$(basename "$src" .cu)
out=${2:-/tmp/sass_$name}
shift $(($# < 2 ? $# : 2))
mkdir -p "$out"
cuobjdump=$(command -v cuobjdump || true)
if [ -z "$cuobjdump" ]; then
    site=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    for c in "$site"/cu*/bin/cuobjdump; do [ -x "$c" ] && cuobjdump=$c; done
fi
if [ -z "$cuobjdump" ]; then
    echo "sass_kernels.sh: cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)" >&2
    exit 1
fi
nvcc -std=c++17 -O3 -arch=sm_90 -Xptxas -v -cubin -o "$out/$name.cubin" "$src" -I src -I cuda \
    2> "$out/ptxas.txt"
echo "registers / spill stores (bytes) per kernel:"
awk '/Compiling entry function/ {match($0, /_Z[^'"'"']*/); name=substr($0, RSTART, RLENGTH)}
     /spill stores/ {split($0, a, ","); sub(/ bytes spill stores/, "", a[2]); spill=a[2]}
     /Used [0-9]+ registers/ {match($0, /Used [0-9]+/);
                              printf "  %-50s %4s %4s\n", name, substr($0, RSTART + 5, RLENGTH - 5), spill}' \
    "$out/ptxas.txt" | sort
PATH="$(dirname "$cuobjdump"):$PATH" "$cuobjdump" -sass "$out/$name.cubin" > "$out/$name.sass"
python3 "$(dirname "$0")/sass_loop_mix.py" "$@" < "$out/$name.sass"
