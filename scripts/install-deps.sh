#!/usr/bin/env bash
# Installs what audistill needs to build and test. Idempotent: packages already present are
# skipped, so running it twice costs only the checks.
#   scripts/install-deps.sh            build + test dependencies (Debian packages, small PyPI set)
#   scripts/install-deps.sh --fixtures also torch + transformers (CPU) to regenerate fixtures
set -euo pipefail

DEBIAN_PACKAGES=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev          # libFuzzer and sanitizers
  clang-format                      # tests/cli/format.sh
  libcjson-dev libyaml-dev libhdf5-dev libsndfile1-dev libsoxr-dev
  libpcre2-dev libutf8proc-dev libopenblas-dev libomp-dev
  gnuplot-nox espeak-ng sox
  libopenmpi-dev openmpi-bin        # multi-process training (mpirun)
  python3 python3-pip
)
PYPI_PACKAGES=(numpy safetensors h5py tensorboard)
PYPI_FIXTURE_PACKAGES=(torch transformers)

want_fixtures=0
[ "${1:-}" = "--fixtures" ] && want_fixtures=1

if ! command -v apt-get >/dev/null 2>&1 || [ ! -f /etc/debian_version ]; then
  echo "install-deps: not a Debian-family system; please install the equivalents of:"
  printf '  %s\n' "${DEBIAN_PACKAGES[@]}"
  echo "and from PyPI: ${PYPI_PACKAGES[*]} (fixtures: ${PYPI_FIXTURE_PACKAGES[*]})"
  exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: Debian packages present"
fi

PY=${PYTHON:-python3}
pip_missing=()
for p in "${PYPI_PACKAGES[@]}"; do
  $PY -c "import $p" 2>/dev/null || pip_missing+=("$p")
done
if [ $want_fixtures = 1 ]; then
  $PY -c "import torch" 2>/dev/null || pip_missing+=("torch")
  $PY -c "import transformers" 2>/dev/null || pip_missing+=("transformers")
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "install-deps: pip installing ${pip_missing[*]}"
  $PY -m pip install -q "${pip_missing[@]}" 2>/dev/null ||
    $PY -m pip install -q --break-system-packages "${pip_missing[@]}"
else
  echo "install-deps: Python packages present"
fi
