#!/bin/bash
# Hostile clients get bounded memory and bounded handshake work (issue 14):
# unread 32 MiB READs from several raw connections keep rctd's RSS within
# its memory budget while a libnbd client's verified I/O goes on; when such
# clients spend a worker's whole budget, another's READ waits for it and is
# served as soon as one of them goes; RSS comes
# back near its base after bursts of large reads; LIST_META_CONTEXT floods
# against 200 checkpoints are answered (the other client's latency is
# printed) and duplicate or too many queries are handled; a WRITE over the
# payload limit is drained and refused, not a disconnect.
# Logic: tests/rcttest/interop/hostile_memory.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
M=hostile_memory
BUDGET=$((256 << 20))

start_rctd --workers 2 --memory-budget 256M --connection-memory 32M
rctctl create d --size 128M >/dev/null
say "unread large reads"
py -m rcttest.interop.$M flood "$STATE/nbd.sock" d "$RCTD_PID" $BUDGET
say "bursts of large reads"
# From a fresh start, so the base is rctd's own. Idle pools give their
# cache back; 48 MiB for the rest.
# The flooders have gone, so their readers, stopped for memory, must have
# woken and ended: a clean SIGTERM.
stop_rctd
[[ $RCTD_EXIT == 0 ]] || fail "rctd exited $RCTD_EXIT after the flood (not a clean stop)"
start_rctd --workers 2 --memory-budget 256M --connection-memory 32M
py -m rcttest.interop.$M bursts "$STATE/nbd.sock" d "$RCTD_PID" $((48 << 20))
say "oversized write"
py -m rcttest.interop.$M oversized "$STATE/nbd.sock" d
say "budget spent"
stop_rctd
# With an idle deadline shorter than the wait: a READ waiting for memory is
# not idleness (it would be dropped unanswered).
start_rctd --workers 1 --memory-budget 64M --connection-memory 32M --idle-timeout 3
py -m rcttest.interop.$M spent "$STATE/nbd.sock" d
rctctl create m --size 16M >/dev/null
say "LIST_META_CONTEXT flood"
py -m rcttest.interop.$M metaflood "$STATE/nbd.sock" m "$STATE/control.sock" 200
say "meta context caps"
py -m rcttest.interop.$M metacap "$STATE/nbd.sock" m 200
say "PASS"
