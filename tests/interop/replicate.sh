#!/bin/bash
# rct-backup replicate between two rctd instances: 10 rounds under a writer
# of random writes and zeroes on the source, a stray write to the replica's
# live disk before round 5; both sides then hold the same 10 snapshots, each
# reading the same, and rctctl diff agrees between every two consecutive
# ones. A source that grew grows its replica.
# Logic: tests/rcttest/interop/replicate.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${RCT_BACKUP:=$REPO_ROOT/build/tools/rct-backup}"
[[ -x "$RCT_BACKUP" ]] || fail "RCT_BACKUP=$RCT_BACKUP is not an executable (build first: ninja -C build)"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
DST=$T/replica-state

start_rctd
start_rctd_at "$DST"
rctctl create d --size 32M >/dev/null
say "10 rounds of replicate under writes, a stray write to the replica before round 5"
py -m rcttest.interop.replicate run "$RCT_BACKUP" "$RCTCTL" "$STATE" "$DST" d 10 5

say "one replication per disk at a time"
py -m rcttest.interop.replicate locked "$RCT_BACKUP" "$RCTCTL" "$STATE" "$DST" d

say "a grown source grows its replica"
rctctl resize d --size 48M >/dev/null
"$RCT_BACKUP" --state-dir "$STATE" replicate d --to "$DST/control.sock" >/dev/null ||
    fail "replicate after a grow failed"
size=$("$RCTCTL" --state-dir "$DST" --json info d | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')
((size == 48 << 20)) || fail "the replica is $size bytes after the source grew to 48M"
say "   the replica is 48M too"
say "PASS"
