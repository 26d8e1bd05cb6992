#!/bin/bash
# Guest scenario: ublk user recovery across rctd crashes.
# requires-rctctl: attach
#
# fio writes 64 MiB of 4 KiB random blocks through /dev/ublkbN (io_uring,
# O_DIRECT, QD16) and then verifies them (crc32c). rctd is killed with
# SIGKILL once during the write phase and once during the verify phase,
# and restarted on the same state dir each time with no arguments: it must
# find the attached device in its state dir and recover it (UBLK user
# recovery). fio must finish without an error, and the device node (same
# major:minor) must exist throughout. Then an ext4 mounted on the device
# across a crash (writes issued while rctd is dead complete after the
# restart), and the watchdog: with no rctd back within
# --ublk-recovery-window seconds, the device is removed.
# shellcheck source=../lib.sh
source /rct/lib.sh

BLOCKS=$((64 << 20 >> 12))  # 4 KiB blocks fio writes, then reads

has_attach || skip "rctd has no ublk frontend yet (rctctl --help lists no attach command)"
load_module ublk_drv
start_rctd
rctctl create d --size 256M >/dev/null
DEV=$(ublk_attach d)
NODE=$(stat -c %t:%T "$DEV")
step "rctctl attach d --ublk -> $DEV ($NODE)"

fio --name=v --filename="$DEV" --rw=randwrite --bs=4k --iodepth=16 \
    --ioengine=io_uring --direct=1 --size=64M --verify=crc32c --do_verify=1 \
    --verify_fatal=1 --time_based=0 >/tmp/fio.log 2>&1 &
FIO=$!

# wait_counter FIELD MIN: wait (up to 120 s) until DEV's FIELD counter
# reaches MIN while fio runs; fail if fio ends first.
wait_counter() {
    local field=$1 min=$2 i
    for ((i = 0; i < 1200; i++)); do
        if (($(block_stat "$DEV" "$field") >= min)); then return 0; fi
        if ! kill -0 "$FIO" 2>/dev/null; then
            cat /tmp/fio.log >&2
            fail "fio ended before $DEV's stat field $field reached $min"
        fi
        sleep 0.1
    done
    fail "$DEV's stat field $field stayed below $min for 120 s"
}

# crash_and_recover PHASE: SIGKILL rctd with fio's I/O in flight, check the
# device node stayed, restart rctd with no arguments.
crash_and_recover() {
    local phase=$1
    kill -0 "$FIO" 2>/dev/null || fail "fio is not running at the $phase crash"
    kill_rctd
    [[ -b "$DEV" && $(stat -c %t:%T "$DEV") == "$NODE" ]] ||
        fail "$DEV ($NODE) is gone right after rctd was killed ($phase)"
    start_rctd
    [[ -b "$DEV" && $(stat -c %t:%T "$DEV") == "$NODE" ]] ||
        fail "$DEV ($NODE) is gone after rctd restarted ($phase)"
    step "rctd killed -9 during fio's $phase phase and restarted; $DEV still $NODE"
}

# The write phase: kill after a quarter of the blocks are written.
wait_counter 5 $((BLOCKS / 4))
crash_and_recover write
# The verify phase: fio reads back only after writing all blocks.
reads0=$(block_stat "$DEV" 1)
wait_counter 1 $((reads0 + BLOCKS / 16))
crash_and_recover verify

rc=0
for ((i = 0; i < 3000; i++)); do
    kill -0 "$FIO" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$FIO" 2>/dev/null; then
    kill -KILL "$FIO"
    cat /tmp/fio.log >&2
    fail "fio did not finish within 300 s after the recoveries"
fi
wait "$FIO" || rc=$?
grep -E 'err=|IOPS|issued rwts|verify|error' /tmp/fio.log | sed 's/^/   | /' >&2
((rc == 0)) || fail "fio exited $rc (verify errors or I/O errors across the recoveries)"
grep -qE 'err= *0' /tmp/fio.log || fail "fio reports an error"
if grep -qiE 'verify: bad|bad magic|crc32c: verify failed' /tmp/fio.log; then
    fail "fio reports verify failures"
fi
step "fio wrote and verified 64 MiB across two rctd crashes with no error"

[[ -b "$DEV" && $(stat -c %t:%T "$DEV") == "$NODE" ]] || fail "$DEV changed after the recoveries"

# A mounted filesystem across a crash: writes issued while rctd is dead are
# held by the kernel and completed by the next rctd.
indent mkfs.ext4 -q -b 4096 -E nodiscard "$DEV"
mkdir -p /mnt/d
mount -t ext4 "$DEV" /mnt/d
kill_rctd
dd if=/dev/urandom of=/tmp/held bs=1M count=8 status=none
(cp /tmp/held /mnt/d/held && sync) &
WRITER=$!
sleep 2
kill -0 "$WRITER" 2>/dev/null || info "the copy finished while rctd was dead (all in the page cache before sync?)"
start_rctd
rc=0
wait "$WRITER" || rc=$?
((rc == 0)) || fail "cp + sync onto the mounted $DEV across the crash exited $rc"
umount /mnt/d
indent e2fsck -fn "$DEV" || fail "e2fsck -fn after writing across the crash found errors"
mount -t ext4 "$DEV" /mnt/d
cmp -s /tmp/held /mnt/d/held || fail "the file written across the crash differs"
umount /mnt/d
step "ext4 mounted on $DEV across kill -9 + restart: cp + sync issued while rctd was dead completed; e2fsck clean, file intact"

ublk_detach d "$DEV"
step "rctctl detach d after recovery: $DEV is gone"

# A clean stop keeps the device too (README: it survives rctd restarts);
# the next rctd takes it back.
DEV=$(ublk_attach d)
NODE=$(stat -c %t:%T "$DEV")
stop_rctd
[[ -b "$DEV" && $(stat -c %t:%T "$DEV") == "$NODE" ]] || fail "$DEV is gone after rctd's clean stop"
start_rctd --ublk-recovery-window 3
dd if="$DEV" of=/dev/null bs=4096 count=16 iflag=direct status=none || fail "reading $DEV after a clean restart failed"
step "$DEV ($NODE) stays across a clean stop and serves again after the restart"

# No rctd comes back: after --ublk-recovery-window seconds the watchdog
# removes the device, so held I/O fails instead of hanging for ever.
kill_rctd
[[ -b "$DEV" ]] || fail "$DEV vanished at once when rctd was killed"
wait_for 30 eval '[[ ! -e "$DEV" ]]' || fail "$DEV still exists 30 s after rctd died with --ublk-recovery-window 3"
step "with no rctd back within --ublk-recovery-window 3, the watchdog removed $DEV"
pass
