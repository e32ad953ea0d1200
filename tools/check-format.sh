#!/usr/bin/env bash
# Fails when a tracked C++ source differs from .clang-format's layout; `--fix` rewrites them.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h' '*.cu' 2>/dev/null || find src include tests -name '*.cpp' -o -name '*.h')
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/uel-format.$$; then
  head -40 /tmp/uel-format.$$ >&2
  rm -f /tmp/uel-format.$$
  echo "check-format: run 'bash tools/check-format.sh --fix'" >&2
  exit 1
fi
rm -f /tmp/uel-format.$$
echo "check-format: ${#files[@]} files formatted"
