#!/bin/bash
# rct-backup --group: three disks backed up together (a full, then 3
# increments) while a causal writer (each write issued once the previous
# one, to another disk, completed) and random writers run; every run's
# restored points are a causally closed prefix, share one id and group, and
# chain per disk. --group with one disk, or a disk twice, is a usage error
# that leaves nothing behind.
# Logic: tests/rcttest/interop/backup_group.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${RCT_BACKUP:=$REPO_ROOT/build/tools/rct-backup}"
[[ -x "$RCT_BACKUP" ]] || fail "RCT_BACKUP=$RCT_BACKUP is not an executable (build first: ninja -C build)"
requires qemu-img qemu-nbd
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
mkdir -p "$T/work" "$T/repo"

start_rctd
for d in a b c; do
    rctctl create "$d" --size 64M >/dev/null
done
say "full --group, then 3 inc --group, under a causal writer"
py -m rcttest.interop.backup_group run "$STATE/nbd.sock" "$STATE/control.sock" "$RCT_BACKUP" "$T/repo" "$T/work" 4 a b c
rc=0
out=$("$RCT_BACKUP" --repo "$T/repo" --state-dir "$STATE" inc --group a 2>&1) || rc=$?
((rc == 2)) || fail "inc --group with one disk exited $rc, not 2: $out"
rc=0
out=$("$RCT_BACKUP" --repo "$T/repo" --state-dir "$STATE" inc --group a b a 2>&1) || rc=$?
((rc == 2)) && [[ $out == *"disk a is named twice"* ]] || fail "inc --group a b a exited $rc: $out"
ls "$T/repo"/*/.tmp-*.pending >/dev/null 2>&1 && fail "a refused group run left a pending backup"
say "PASS"
