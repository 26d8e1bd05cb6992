#!/bin/bash
# rct-backup end to end (docs/backup.md): a full, 5 rounds of random writes,
# zeroes and trims each followed by an incremental (a differential too in
# rounds 3 and 5); kill -9 of rctd between two backups (the chain continues,
# the increment holds every write); kill -9 of rct-backup mid-copy (the
# repository keeps its points, the next run discards the leftovers); a grown
# disk continues the chain, a shrunk one gets a full; a re-created disk gets
# a full, said; every point restored, by rct-backup and by qemu-img convert
# alone, equals the disk at that point; verify names a flipped byte's file;
# a prune killed at each of its steps is finished by the next one, every
# point exact (rcttest/interop/backup_prune.py);
# prune --keep 6 leaves 6 points that restore exactly and verify; a full and
# an inc taken while a writer runs are each the disk after a prefix of its
# writes (a snapshot, not the live disk).
# Logic: tests/rcttest/interop/backup_chain.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${RCT_BACKUP:=$REPO_ROOT/build/tools/rct-backup}"
[[ -x "$RCT_BACKUP" ]] || fail "RCT_BACKUP=$RCT_BACKUP is not an executable (build first: ninja -C build)"
requires qemu-img qemu-nbd nbdcopy cmp
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
export RCTCTL
W=$T/work
mkdir -p "$W"
bc() { py -m rcttest.interop.backup_chain "$1" "$RCT_BACKUP" "$STATE" d "${@:2}"; }

start_rctd
rctctl create d --size 32M >/dev/null
say "full, 5 rounds of inc (diff in rounds 3 and 5)"
bc rounds "$(uri d)" "$W" 5
say "kill -9 rctd between two backups"
bc write "$(uri d)" "$W"
crash_rctd_at "$STATE"
start_rctd
bc inc "$(uri d)" "$W"
say "kill -9 rct-backup mid-copy"
bc kill "$(uri d)" "$W"
say "resize"
rctctl resize d --size 40M >/dev/null
bc grow "$(uri d)" "$W"
rctctl resize d --size 24M --force >/dev/null
bc shrunk "$(uri d)" "$W"
say "a re-created disk"
rctctl delete d >/dev/null
rctctl create d --size 32M >/dev/null
bc recreated "$(uri d)" "$W"
say "backups under write load"
bc underload "$(uri d)" "$W"
say "restore every point"
bc restore "$W"
say "verify"
bc flip "$W"
say "prune killed at each step"
py -m rcttest.interop.backup_prune crash "$RCT_BACKUP" "$STATE" d "$W"
say "prune"
bc prune "$W" 6
say "PASS"
