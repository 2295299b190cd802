#!/usr/bin/env bash
# Files audistill writes load in Python's safetensors package, and files it writes load here.
set -euo pipefail
PY=${PYTHON:-python3}
if ! $PY -c "import safetensors, numpy" 2>/dev/null; then
  echo "SKIP: Python packages safetensors and numpy are not installed (scripts/install-deps.sh installs them)"
  exit 77
fi
exec $PY "$(dirname "$0")/safetensors_python.py"
