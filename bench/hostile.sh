#!/bin/bash
# Hostile clients against rctd builds side by side (issue 14): for each
# build dir given (default: build), a fresh rctd (2 workers) on a private
# state dir runs the measuring parts of tests/rcttest/interop/hostile_memory.py:
#   flood      3 raw clients × 8 unread 32 MiB READs while a libnbd client
#              does verified 256K I/O: rctd's peak RSS
#   bursts     (a fresh rctd) 3 rounds of 48 large reads that complete: RSS
#              before, at the peak, 0.2 s and 3 s after
#   metaflood  200 checkpoints, two clients flooding LIST_META_CONTEXT (64 KiB
#              options, and 256-query ones): another client's 4K read p99/max
#              before and during
# A build without --memory-budget (older than issue 14) runs without it; its
# failed assertions are expected and only its numbers matter. About 40 s per
# build. Usage: bench/hostile.sh [BUILD_DIR...]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUDGET=$((256 << 20))
(($#)) || set -- "$ROOT/build"

start() {  # start BUILD: a fresh rctd with disks d and m; sets PID, S
    local b=$1
    S=$(mktemp -d "${TMPDIR:-/tmp}/rct-hostile.XXXXXX")
    local args=(--state-dir "$S" --workers 2)
    if "$b/daemon/rctd" --help 2>&1 | grep -q -- --memory-budget; then
        args+=(--memory-budget 256M --connection-memory 32M)
    fi
    "$b/daemon/rctd" "${args[@]}" </dev/null >"$S.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do "$b/tools/rctctl" --state-dir "$S" list >/dev/null 2>&1 && break; sleep 0.1; done
    "$b/tools/rctctl" --state-dir "$S" create d --size 128M >/dev/null
    "$b/tools/rctctl" --state-dir "$S" create m --size 16M >/dev/null
}

stop() {
    kill "$PID"
    wait "$PID"
    rm -rf "$S" "$S.log"
}

m() { (cd "$ROOT/tests" && /usr/bin/python3 -m rcttest.interop.hostile_memory "$@" 2>&1 | grep -v '^ \|^Traceback'); }

for b in "$@"; do
    echo "== $b ($(git -C "$b/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
    start "$b"
    m flood "$S/nbd.sock" d "$PID" $BUDGET
    m metaflood "$S/nbd.sock" m "$S/control.sock" 200
    stop
    start "$b"
    m bursts "$S/nbd.sock" d "$PID" $((48 << 20))
    stop
done
