#!/bin/bash
# The lock rules of rct/thread_annotations.hh, checked: every engine source
# (lib/src) and the daemon's is compiled with clang's -Wthread-safety as an
# error (syntax only: nothing is built). The default gcc build ignores the
# attributes, so this is where a broken rule fails. Skipped when clang++ is
# missing (scripts/deps installs clang).
# Usage: tests/thread_safety.sh SOURCE_ROOT BUILD_ROOT
set -euo pipefail
root=$1 build=$2
command -v clang++ >/dev/null || { echo "SKIP: clang++ is not installed"; exit 77; }
cd "$root"
mapfile -t files < <(find lib/src daemon -name '*.cc' | sort)
flags=(-std=c++20 -fsyntax-only -Wthread-safety -Werror=thread-safety -D_GNU_SOURCE '-DRCT_VERSION="check"'
       -Ilib/include -Ilib/src -Idaemon -I"$build" -I"$build/lib")
failed=0
for f in "${files[@]}"; do
    clang++ "${flags[@]}" "$f" || { echo "FAIL: $f"; failed=1; }
done
((failed == 0)) || exit 1
echo "thread_safety: ${#files[@]} files clean"
