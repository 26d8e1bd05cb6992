#!/bin/bash
# Guest scenario: power cuts, the way filesystem developers test them
# (xfstests' dm-log-writes replay, generic/455 and friends).
# requires-rctctl: attach
#
# rctd's state dir lives on an ext4 over a dm-log-writes target (brd RAM
# disks: /dev/ram0 data, /dev/ram1 the log), which records every write
# with its FLUSH/FUA flags. A workload through /dev/ublkbN writes 4 KiB
# blocks tagged (block, generation) with every kind of flush (O_DIRECT +
# fdatasync, buffered + fsync, O_DSYNC, buffered + `sync DEV`), takes
# checkpoints and snapshots in between, and records in a model on the
# guest's tmpfs what must be durable after each acknowledged flush, with a
# log mark (dmsetup message ... mark mN) after each such step. rctd is then
# killed with SIGKILL while writes are in flight. rct-powercut (powercut.cc)
# replays the log to a sample of its FLUSH/FUA entries (and its end) onto
# /dev/ram2, one after the other; each state is copied to /dev/ram3,
# mounted (ext4 journal recovery) and opened by an rctd, and must have:
#   - the disk served, nothing quarantined;
#   - every block at least as new as its last write acknowledged before the
#     newest mark, and only ever a generation that was written to it;
#   - every checkpoint acknowledged present, and `changes --since` each
#     checkpoint present (by its token) covering every block whose content
#     differs from the cut (exit 6, "full backup required", is a failure);
#   - every snapshot acknowledged listed valid, and every valid snapshot
#     reading back over NBD exactly the disk at its cut.
#
# Environment (from the host: run.sh passes RCT_POWERCUT_*):
#   RCT_POWERCUT_POINTS  replay points, spread over the log (default 8;
#                        0 = every FLUSH/FUA entry), plus the log's end
#   RCT_POWERCUT_ROUNDS  workload rounds (default 12)
#   RCT_POWERCUT_VERBOSE=1  report each stage of each point
# shellcheck source=../lib.sh
source /rct/lib.sh

POINTS=${RCT_POWERCUT_POINTS:-8}
ROUNDS=${RCT_POWERCUT_ROUNDS:-12}
MODEL=/tmp/model
FS_SECTORS=$((128 << 11))  # the logged ext4: 128 MiB
DISK_BLOCKS=$((64 << 8))   # disk d: 64 MiB of 4 KiB blocks
export DM_DISABLE_UDEV=1   # no udev in the guest: libdevmapper makes /dev/mapper nodes

has_attach || skip "rctd has no ublk frontend yet (rctctl --help lists no attach command)"
command -v rct-powercut >/dev/null || skip "no rct-powercut in the guest (build tests/guest/rct-powercut; RCT_POWERCUT)"
command -v dmsetup >/dev/null || skip "no dmsetup in the guest (install dmsetup on the host)"
for m in brd dm_mod dm_log_writes ublk_drv nbd; do
    [[ -f /rct/modules/$m.ko ]] || skip "the guest kernel cache has no $m module (RCT_GUEST_REFRESH=1 or remove the cache to unpack it)"
done
load_module brd rd_nr=4 rd_size=$((256 << 10))
load_module dm_mod
load_module dm_log_writes
load_module ublk_drv
load_module nbd nbds_max=2

# unmount MNT DEV: umount MNT and wait until nothing holds DEV: an rctd ran
# in a mount namespace of its own (lib.sh), whose copy of the mount is
# dropped only some time after rctd exits; until then the filesystem lives
# on and would write to (and be mounted again over) DEV.
unmount() {
    umount "$1" || fail "umount $1 failed"
    wait_for 30 rct-powercut unused "$2" || fail "$2 is still in use 30 s after umount $1"
}

# stall_reporter: in the background, once the heartbeat (beat, at each step
# of the replay loop) has not moved for 60 s, print what every process waits
# on: a hang then shows where it is before run.sh's timeout.
beat() { echo $((++BEATS)) >/tmp/heartbeat; }
stall_reporter() {
    local last='' same=0 p
    while sleep 5; do
        if [[ $(cat /tmp/heartbeat) != "$last" ]]; then
            last=$(cat /tmp/heartbeat)
            same=0
            continue
        fi
        ((++same < 12)) && continue
        same=0
        echo "RCT-INFO stalled for 60 s; processes:" >&2
        for p in /proc/[0-9]*; do
            [[ -n $(tr -d '\0' <"$p/cmdline" 2>/dev/null) ]] || continue
            echo "   | $(cut -d' ' -f1-4 "$p/stat" 2>/dev/null) $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80)"
            sed 's/^/   |     /' "$p/task/"*/stack 2>/dev/null | grep -v 'do_syscall_64\|entry_SYSCALL'
        done >&2
        dmesg | tail -8 | sed 's/^/   | dmesg: /' >&2
    done
}

# watchdog_running: an rctd's ublk watchdog is still alive. Every rctd that
# finds a ublk record starts one, even without the driver; after rctd exits
# it waits --ublk-recovery-window, then removes the records from the state
# dir, and keeps rctd's mount namespace (and so the state's filesystem)
# alive until it exits.
watchdog_running() { grep -qs -- --ublk-watchdog /proc/[0-9]*/cmdline; }

# mark NAME: log mark NAME, after the model's line saying so.
mark() {
    echo "M $1" >>"$MODEL"
    dmsetup message pc 0 mark "$1"
}

# ---- the logged filesystem ------------------------------------------------
dmsetup create pc --noudevsync --table "0 $FS_SECTORS log-writes /dev/ram0 /dev/ram1" ||
    fail "dmsetup create of the log-writes target failed"
[[ -b /dev/mapper/pc ]] || fail "no /dev/mapper/pc after dmsetup create"
# Everything written up front (no lazy init, no discard): the log then holds
# only what the workload does after mkfs.
indent mkfs.ext4 -q -b 4096 -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/pc
dmsetup message pc 0 mark mkfs
mkdir -p /mnt/pc
mount -t ext4 /dev/mapper/pc /mnt/pc
STATE=/mnt/pc/state
RCTD_ARGS=(--intent-region 1M --persist-interval 200)
start_rctd "${RCTD_ARGS[@]}" --ublk-recovery-window 2
rctctl create d --size 64M --granularity 4K >/dev/null
DEV=$(ublk_attach d)
: >"$MODEL"
mark m0
step "ext4 on dm-log-writes (/dev/ram0, log /dev/ram1); rctd state on it; disk d (64 MiB, 4 KiB chunks) on $DEV"

# ---- the workload ---------------------------------------------------------
# Round r writes generation r: 24 blocks in one 1 MiB intent region and 8
# rewrites anywhere earlier rounds wrote, flushed by the round's method.
RANDOM=4242
MODES=(direct buffered dsync nosync)
written=()
nmark=0
cps=0
snaps=0
for ((r = 1; r <= ROUNDS; r++)); do
    region=$(((r * 7) % (DISK_BLOCKS / 256)))
    blocks=()
    for ((i = 0; i < 24; i++)); do blocks+=($((region * 256 + RANDOM % 256))); done
    for ((i = 0; i < 8 && ${#written[@]} > 0; i++)); do blocks+=("${written[RANDOM % ${#written[@]}]}"); done
    mode=${MODES[r % 4]}
    rct-powercut write "$DEV" "$MODEL" "$mode" "$r" "${blocks[@]}" ||
        fail "round $r: rct-powercut write ($mode) through $DEV failed"
    if [[ $mode == nosync ]]; then
        sync "$DEV" || fail "round $r: sync $DEV failed"
        echo D >>"$MODEL"
    fi
    written+=("${blocks[@]}")
    mark "m$((++nmark))"
    if ((r % 3 == 0)); then
        echo "c cp$r" >>"$MODEL"
        token=$(rctctl checkpoint d --name "cp$r") || fail "rctctl checkpoint d --name cp$r exited $?"
        echo "C cp$r $token" >>"$MODEL"
        mark "m$((++nmark))"
        cps=$((cps + 1))
    fi
    if ((r % 4 == 2)); then
        echo "s sn$r" >>"$MODEL"
        token=$(rctctl snapshot d --name "sn$r") || fail "rctctl snapshot d --name sn$r exited $?"
        echo "S sn$r $token" >>"$MODEL"
        mark "m$((++nmark))"
        snaps=$((snaps + 1))
    fi
done
step "workload: $ROUNDS rounds of 32 blocks (direct+fdatasync, buffered+fsync, O_DSYNC, buffered+sync DEV), $cps checkpoints, $snaps snapshots, $nmark marks"

# The cut: buffered writes never flushed, and O_DSYNC writes (each a FUA
# write, one at a time) in flight, held by the kernel once rctd is gone.
rct-powercut write "$DEV" "$MODEL" nosync $((ROUNDS + 1)) "${written[@]:0:16}" ||
    fail "the last buffered writes through $DEV failed"
rct-powercut write "$DEV" "$MODEL" dsync $((ROUNDS + 2)) "${written[@]}" 2>/dev/null &
WRITER=$!
sleep 0.5
mark killed
kill_rctd
wait "$WRITER" || info "the writer in flight at the kill ended with $? (the device went away)"
# The watchdog removes the device after --ublk-recovery-window 2 s, then
# exits (it keeps rctd's mount namespace, and so the logged ext4, alive).
wait_for 30 eval '[[ ! -e "$DEV" ]]' || fail "$DEV still exists 30 s after rctd was killed"
wait_for 30 eval '! watchdog_running' || fail "rctd's ublk watchdog is still running 30 s after rctd was killed"
unmount /mnt/pc /dev/mapper/pc
dmsetup remove --noudevsync pc || fail "dmsetup remove pc failed"
# Without ublk_drv the checking rctds cannot re-attach d as a device: they
# log that and serve it over NBD only (their watchdogs then drop the stale
# ublk record from the copy they ran on).
rmmod ublk_drv || fail "rmmod ublk_drv failed (a device left?)"
rct-powercut log /dev/ram1 >/tmp/log.txt
info "write log: $(sed -n 's/^# //p' /tmp/log.txt); $(grep -c ' WRITE ' /tmp/log.txt || true) plain writes, $(grep -cE 'FLUSH|FUA' /tmp/log.txt || true) FLUSH/FUA, $(grep -c ' MARK ' /tmp/log.txt || true) marks, $(grep -c DISCARD /tmp/log.txt || true) discards"
step "rctd killed -9 with writes in flight; $DEV removed by the watchdog; log complete"

# ---- replay and check -----------------------------------------------------
rct-powercut points /dev/ram1 m0 "$POINTS" >/tmp/points.txt
npoints=$(wc -l </tmp/points.txt)
((npoints > 0)) || fail "no replay points in the log"
STATE=/mnt/c/state
mkdir -p /mnt/c
prev=-1
replayed=0
blocks_checked=0
cps_checked=0
snaps_checked=0
snap_blocks=0
t0=$SECONDS
BEATS=0
beat
stall_reporter &
while read -r entry pmark <&3; do
    beat
    what="point $((replayed + 1))/$npoints (log entry $entry, after mark $pmark)"
    [[ -z "${RCT_POWERCUT_VERBOSE:-}" ]] || info "$what: replaying"
    rct-powercut replay /dev/ram1 /dev/ram2 $((prev + 1)) "$entry" 2>/dev/null || fail "$what: replay failed"
    prev=$entry
    dd if=/dev/ram2 of=/dev/ram3 bs=4M count=$((FS_SECTORS >> 13)) iflag=direct oflag=direct status=none
    mount -t ext4 /dev/ram3 /mnt/c || fail "$what: the ext4 does not mount (journal recovery failed)"
    [[ -d $STATE/disks/d ]] || fail "$what: no disk d in the state dir"
    [[ -z "${RCT_POWERCUT_VERBOSE:-}" ]] || info "$what: mounted"
    start_rctd "${RCTD_ARGS[@]}" --ublk-recovery-window 1
    [[ -z "${RCT_POWERCUT_VERBOSE:-}" ]] || info "$what: rctd started"
    if ! rct-powercut check "$MODEL" "$pmark" "$STATE" d >/tmp/check.out 2>/tmp/check.err; then
        sed 's/^/   | /' /tmp/check.err >&2
        fail "$what: $(grep -c '^powercut:' /tmp/check.err) failures"
    fi
    counts=$(sed -n 's/^counts //p' /tmp/check.out)
    # The checker has teeth: the first state, held to what is durable only
    # at the end of the workload, must fail (older blocks, missing cuts).
    if ((replayed == 0)); then
        if rct-powercut check "$MODEL" killed "$STATE" d >/dev/null 2>/tmp/check.err; then
            fail "$what: the checker accepts this early state as the final one"
        fi
        grep -q 'older than its durable' /tmp/check.err || fail "$what: the checker failed the early state for the wrong reason: $(head -1 /tmp/check.err)"
        step "$what checked against the end of the workload fails ($(sed -n 's/^powercut: \([0-9]*\) failures$/\1/p' /tmp/check.err) failures: blocks older than durable, ...)"
    fi
    for s in $(sed -n 's/^snapshot //p' /tmp/check.out); do
        nbd_connect /dev/nbd0 "d@$s" -readonly
        if ! rct-powercut check-snap "$MODEL" "$s" /dev/nbd0 >/tmp/snap.out 2>/tmp/snap.err; then
            sed 's/^/   | /' /tmp/snap.err >&2
            fail "$what: snapshot $s reads back wrong"
        fi
        [[ -z "${RCT_POWERCUT_VERBOSE:-}" ]] || info "$what: snapshot $s checked"
        nbd_disconnect /dev/nbd0
        beat
        snaps_checked=$((snaps_checked + 1))
        snap_blocks=$((snap_blocks + $(sed -n 's/.* blocks=//p' /tmp/snap.out)))
    done
    stop_rctd
    ((RCTD_EXIT == 0)) || fail "$what: rctd exited $RCTD_EXIT on SIGTERM"
    wait_for 30 eval '! watchdog_running' || fail "$what: rctd's ublk watchdog is still running 30 s after rctd stopped"
    unmount /mnt/c /dev/ram3
    replayed=$((replayed + 1))
    blocks_checked=$((blocks_checked + $(sed -n 's/^blocks=\([0-9]*\) .*/\1/p' <<<"$counts")))
    cps_checked=$((cps_checked + $(sed -n 's/.*checkpoints=\([0-9]*\).*/\1/p' <<<"$counts")))
    info "$what: $counts"
done 3</tmp/points.txt
info "powercut: $replayed points replayed, $blocks_checked blocks checked, $cps_checked change lists checked, $snaps_checked snapshots read back ($snap_blocks blocks) in $((SECONDS - t0)) s"
step "$replayed replay points: ext4 mounts, rctd opens d (nothing quarantined), no acknowledged write lost, every change list covers, every valid snapshot exact"
pass
