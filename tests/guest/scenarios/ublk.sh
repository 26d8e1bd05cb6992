#!/bin/bash
# Guest scenario: rctd's ublk frontend.
# requires-rctctl: attach
#
#  - without ublk_drv loaded, `rctctl attach d --ublk` fails (non-zero) with
#    a message naming ublk_drv;
#  - with it: attach prints /dev/ublkbN; cut_workload (lib.sh) on it: files
#    A, checkpoint c1, files B, fsfreeze + snapshot s1, files C; changes
#    --since c1 covers B and C;
#  - clone d@s1 -> d2 attached as a second ublk device, and the snapshot
#    export d@s1 over NBD (/dev/nbd0, read-only), both hold exactly A+B;
#  - detach removes both devices;
#  - `rctd --ublk d` attaches d at start; detach of it while mounted is
#    refused ("in use") and the filesystem keeps working; --force returns at
#    once and the filesystem gets errors; re-attached, d holds what was
#    synced before and passes e2fsck.
# shellcheck source=../lib.sh
source /rct/lib.sh

SIZE=$((256 << 20))

has_attach || skip "rctd has no ublk frontend yet (rctctl --help lists no attach command)"
load_module nbd nbds_max=4
[[ ! -e /dev/ublk-control ]] || fail "/dev/ublk-control exists before ublk_drv is loaded"
start_rctd
rctctl create d --size 256M >/dev/null

rc=0
out=$(rctctl attach d --ublk 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/   | /'
((rc != 0)) || fail "rctctl attach d --ublk succeeded without ublk_drv loaded"
grep -q ublk_drv <<<"$out" || fail "rctctl attach d --ublk failed (exit $rc) without naming ublk_drv"
if ls /dev/ublkb* >/dev/null 2>&1; then fail "a ublk device exists after the failed attach"; fi
step "without ublk_drv: rctctl attach d --ublk exits $rc and names ublk_drv"

# A fresh daemon after the module is loaded, so that the test does not
# depend on whether rctd opens /dev/ublk-control at start or per attach.
stop_rctd
load_module ublk_drv
[[ -c /dev/ublk-control ]] || fail "no /dev/ublk-control after insmod ublk_drv"
start_rctd
DEV=$(ublk_attach d)
[[ $(blockdev --getsize64 "$DEV") == "$SIZE" ]] || fail "$DEV is not 256 MiB"
step "rctctl attach d --ublk -> $DEV, 256 MiB"

cut_workload "$DEV" /mnt/d d "$SIZE"

indent rctctl clone d@s1 d2
DEV2=$(ublk_attach d2)
[[ "$DEV2" != "$DEV" ]] || fail "d2 was attached as $DEV, which d already uses"
check_cut "$DEV2" "clone d@s1 -> d2 (ublk)"

nbd_connect /dev/nbd0 d@s1 -readonly
check_cut /dev/nbd0 "export d@s1 over NBD (read-only)" ro
nbd_disconnect /dev/nbd0

ublk_detach d2 "$DEV2"
ublk_detach d "$DEV"
step "rctctl detach d2, d: $DEV2 and $DEV are gone"

stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT on SIGTERM"
start_rctd --ublk d
wait_for 10 eval 'ls /dev/ublkb* >/dev/null 2>&1' || fail "rctd --ublk d made no /dev/ublkbN"
devs=(/dev/ublkb*)
((${#devs[@]} == 1)) || fail "rctd --ublk d made ${#devs[@]} devices: ${devs[*]}"
DEV=${devs[0]}
wait_for 10 has_size "$DEV" || fail "$DEV (rctd --ublk d) has no size"
[[ $(blockdev --getsize64 "$DEV") == "$SIZE" ]] || fail "$DEV (rctd --ublk d) is not 256 MiB"
# d's filesystem was unmounted cleanly after the workload.
indent e2fsck -fn "$DEV" || fail "e2fsck -fn on d through $DEV (rctd --ublk d) found errors"
step "rctd --ublk d attaches d at start as $DEV; e2fsck -fn clean"

# Detach refuses a mounted device (the filesystem would lose its disk);
# forced, it returns at once and the filesystem gets I/O errors.
mount "$DEV" /mnt/d || fail "mount $DEV failed"
rc=0
out=$(timeout 20 rctctl --state-dir "$STATE" detach d 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/   | /'
((rc != 0 && rc != 124)) || fail "rctctl detach d of a mounted $DEV exited $rc, not a refusal"
grep -q "in use" <<<"$out" || fail "rctctl detach d of a mounted $DEV did not say it is in use"
[[ -b "$DEV" ]] || fail "$DEV is gone after a refused detach"
echo refused >/mnt/d/after-refusal && sync -f /mnt/d/after-refusal || fail "writing to d after a refused detach failed"
step "rctctl detach d while $DEV is mounted: refused (exit $rc, 'in use'), the filesystem still works"
timeout 20 rctctl --state-dir "$STATE" detach d --force >/dev/null || fail "rctctl detach d --force of a mounted $DEV exited $? (124: hung)"
wait_for 10 eval '[[ ! -e "$DEV" ]]' || fail "$DEV still exists after rctctl detach d --force"
if (echo lost >/mnt/d/after-force && sync -f /mnt/d/after-force) 2>/dev/null; then
    fail "writes to d's filesystem still succeed after rctctl detach d --force"
fi
timeout 20 umount /mnt/d || fail "umount after a forced detach exited $?"
step "rctctl detach d --force while mounted: returns, $DEV is gone, the filesystem gets errors, umount works"

DEV=$(ublk_attach d)
mount "$DEV" /mnt/d || fail "mount $DEV (journal replay) after a forced detach failed"
[[ $(cat /mnt/d/after-refusal) == refused ]] || fail "d lost a file synced before the forced detach"
umount /mnt/d
indent e2fsck -fn "$DEV" || fail "e2fsck -fn on d after a forced detach found errors"
ublk_detach d "$DEV"
step "rctctl detach d: $DEV is gone"

pass
