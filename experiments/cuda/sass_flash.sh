#!/bin/bash
# Registers, spills and the instruction mix of the flash-attention kernels' tensor-core loops.
# usage: bash experiments/cuda/sass_flash.sh [OUT_DIR]     (run from the repository root)
exec bash "$(dirname "$0")/sass_kernels.sh" cuda/attention_flash.cu "${1:-/tmp/sass_flash}"
