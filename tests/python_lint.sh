#!/bin/bash
# Lint of the tests' and benchmarks' Python (tests/rcttest and any other *.py
# under tests/, bench/, scripts/): every file must compile (which also catches
# misplaced nonlocal/global) and pass pyflakes (undefined names, unused
# imports and variables, redefinitions). Skipped when /usr/bin/python3 has no
# pyflakes (Debian: python3-pyflakes, installed by scripts/deps).
# Usage: tests/python_lint.sh [SOURCE_ROOT]
set -euo pipefail
root=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cd "$root"
/usr/bin/python3 -c 'import pyflakes' 2>/dev/null ||
    { echo "SKIP: /usr/bin/python3 has no pyflakes module (python3-pyflakes)"; exit 77; }
mapfile -t files < <(find tests bench scripts -name '*.py' -not -path '*/__pycache__/*' | sort)
((${#files[@]} > 0)) || { echo "FAIL: no Python files found under $root"; exit 1; }
echo "python_lint: ${#files[@]} files"
/usr/bin/python3 -c '
import sys
for f in sys.argv[1:]:
    with open(f) as fh:
        compile(fh.read(), f, "exec")
' "${files[@]}"
/usr/bin/python3 -m pyflakes "${files[@]}"
echo "python_lint: clean"
