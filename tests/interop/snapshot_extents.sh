#!/bin/bash
# A snapshot export's block status never calls the snapshot's data a hole
# while the live disk's chunks are zeroed (copied, then punched) under it:
# 4 snapshots of an all-data disk, each asked block status in a loop while
# every chunk of the live disk is trimmed. Found by the replicate test
# (a replica with zeroes where its source's snapshot had data).
# Logic: tests/rcttest/interop/snapshot_extents.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
start_rctd
rctctl create d --size 64M >/dev/null
say "block status of snapshots under trimming first writes"
py -m rcttest.interop.snapshot_extents run "$STATE/control.sock" "$(uri d)" d 4 || fail "a snapshot reported a hole"
daemon_alive
say "PASS"
