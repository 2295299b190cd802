#!/usr/bin/env bash
# Every C, C++ and CUDA source git tracks is clang-formatted (.clang-format), with the
# clang-format that Debian 12 ships (14): other major versions lay some constructs out
# differently, so they skip rather than fail.
set -uo pipefail
src=${AUDISTILL_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v clang-format >/dev/null || { echo "SKIP: clang-format is not installed (scripts/install-deps.sh installs it)"; exit 77; }
major=$(clang-format --version | grep -oE 'version [0-9]+' | grep -oE '[0-9]+')
[[ $major == 14 ]] || { echo "SKIP: clang-format $major (the layout is checked with 14)"; exit 77; }
git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || { echo "SKIP: $src is not a git checkout"; exit 77; }
mapfile -t files < <(git -C "$src" ls-files '*.c' '*.h' '*.cu' '*.cpp')
[[ ${#files[@]} -gt 100 ]] || { echo "FAIL: only ${#files[@]} sources found in $src"; exit 1; }
cd "$src" || exit 1
out=$(clang-format --dry-run -Werror "${files[@]}" 2>&1)
if [[ -n $out ]]; then
  echo "FAIL: not clang-formatted (run clang-format -i on these):"
  grep -oE '^[^:]+:[0-9]+' <<<"$out" | cut -d: -f1 | sort | uniq -c
  exit 1
fi
echo "${#files[@]} sources clang-formatted"
