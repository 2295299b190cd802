#!/bin/bash
# Registers and the instruction mix of the distillation loss kernels' loops (double-precision
# ops, special-function ops, conversions): the loss has no tensor-core loops.
# usage: bash experiments/cuda/sass_loss.sh [OUT_DIR]      (run from the repository root)
exec bash "$(dirname "$0")/sass_kernels.sh" cuda/loss.cu "${1:-/tmp/sass_loss}" --all
