#!/bin/bash
# Guest scenario: live upgrade (rctctl upgrade) under mounted filesystems.
# requires-rctctl: upgrade
#
# Disk u is attached as /dev/ublkbN, disk n is connected to /dev/nbd0 by the
# kernel's nbd client over rctd's Unix socket; each carries an ext4. fio
# rounds (direct io_uring and buffered+fsync random writes with crc32c
# verify_backlog, on a file in each filesystem) run back to back while rctd
# is upgraded 10 times, alternating two root-owned copies of its binary
# (the last upgrade names none: rctd's own path). Each upgrade is called
# with I/O in flight on both devices, must exit 0 with a new pid running the
# expected binary, the old pid gone, the same device nodes, and I/O must
# complete on both devices afterwards. Between upgrades 5 and 6: a binary
# that exits before it says hello (/bin/false: refused, nothing frozen),
# and a new rctd that gives up in its takeover, after the state was handed
# over (a descriptor limit below --fd-reserve): the old rctd must take
# everything back by re-executing itself, keeping its pid (and its one ublk
# watchdog). After all: every
# fio round passed, no I/O error in the kernel log, e2fsck -fn clean on
# both filesystems, and the upgraded rctd detaches and stops cleanly.
# Neither disk's change tracking may ever look recovered after a crash.
# Reported, not asserted: each upgrade's longest pause per device.
# shellcheck source=../lib.sh
source /rct/lib.sh

UPGRADES=${RCT_UPGRADE_COUNT:-10}  # from the host: RCT_UPGRADE_COUNT=60 run.sh upgrade
READY_TIMEOUT=60s  # TCG: a new rctd's start may take seconds

has_attach || skip "rctd has no ublk frontend yet (rctctl --help lists no attach command)"
load_module ublk_drv
load_module nbd nbds_max=2

# alive PID: the process exists and is not a zombie (an upgraded rctd is
# nobody's child here once its parent, the previous rctd, has exited).
alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# nodes: "major:minor size" of both devices, one line.
nodes() { echo "$(stat -c %t:%T "$UDEV") $(cat "/sys/block/${UDEV#/dev/}/size") $(stat -c %t:%T /dev/nbd0) $(cat /sys/block/nbd0/size)"; }

# in_flight: both devices have requests in flight.
in_flight() {
    local d
    for d in "${UDEV#/dev/}" nbd0; do
        (($(awk '{print $1 + $2}' "/sys/block/$d/inflight") > 0)) || return 1
    done
}

# watchdogs PID: how many ublk watchdogs watch rctd PID.
watchdogs() {
    local f n=0
    for f in /proc/[0-9]*/cmdline; do
        [[ $(tr '\0' ' ' <"$f" 2>/dev/null) == *"--ublk-watchdog $1 "* ]] && n=$((n + 1))
    done
    echo "$n"
}

# io_error_lines: kernel log lines saying a request failed.
io_error_lines() {
    dmesg | grep -E 'I/O error|blk_update_request|Buffer I/O|EXT4-fs (error|warning)|(nbd|ublk)[^ ]*:? .*([Ee]rror|[Ff]ail|timed out|[Dd]ead|abort)' || true
}

cp /usr/bin/rctd /tmp/rctd-a
cp /usr/bin/rctd /tmp/rctd-b
chown root:root /tmp/rctd-a /tmp/rctd-b
chmod 0755 /tmp/rctd-a /tmp/rctd-b
# A new rctd that fails after HELLO, when the old one has frozen everything
# and handed it over: serve() refuses a descriptor limit at or below
# --fd-reserve (512) + --control-max-connections (128).
cat >/tmp/rctd-nofd <<'EOF'
#!/bin/sh
ulimit -n 256
exec /tmp/rctd-a "$@"
EOF
chmod 0755 /tmp/rctd-nofd

# A short window: a device left stuck by a failure goes soon after rctd is
# killed (stuck_report), so that the guest can still sync and power off.
start_rctd --ublk-recovery-window 10
rctctl create u --size 256M >/dev/null
rctctl create n --size 256M >/dev/null
UDEV=$(ublk_attach u)
nbd_connect /dev/nbd0 n
mkdir -p /mnt/u /mnt/n
for dev in "$UDEV" /dev/nbd0; do
    indent mkfs.ext4 -q -b 4096 -E nodiscard "$dev"
done
mount -t ext4 "$UDEV" /mnt/u
mount -t ext4 /dev/nbd0 /mnt/n
NODES=$(nodes)
dmesg -c >/dev/null  # from here on, the kernel log must hold no error
step "ext4 on $UDEV (disk u) and on /dev/nbd0 (disk n, kernel nbd client); nodes and sizes: $NODES"

cat >/tmp/verify.fio <<'EOF'
[global]
rw=randwrite
bs=4k
verify=crc32c
verify_backlog=256
verify_fatal=1
do_verify=1
end_fsync=1

[u-direct]
filename=/mnt/u/direct
size=24M
ioengine=io_uring
iodepth=8
direct=1

[u-buffered]
filename=/mnt/u/buffered
size=8M
ioengine=psync
fsync=32

[n-direct]
filename=/mnt/n/direct
size=24M
ioengine=io_uring
iodepth=8
direct=1

[n-buffered]
filename=/mnt/n/buffered
size=8M
ioengine=psync
fsync=32
EOF

# fio_rounds: fio rounds back to back until /tmp/fio.stop exists; the
# number of rounds goes to /tmp/fio.rounds, a failed round's to
# /tmp/fio.failed (its log is /tmp/fio.N.log).
fio_rounds() {
    trap - ERR
    local n=0
    while [[ ! -e /tmp/fio.stop ]]; do
        n=$((n + 1))
        if ! fio --output=/tmp/fio.$n.log /tmp/verify.fio >/dev/null 2>&1; then
            echo "$n" >/tmp/fio.failed
            break
        fi
        echo "$n" >/tmp/fio.rounds
    done
}
rm -f /tmp/fio.stop /tmp/fio.rounds /tmp/fio.failed
fio_rounds &
FIO=$!

# fio_check WHEN: no fio round failed so far.
fio_check() {
    [[ -e /tmp/fio.failed ]] || return 0
    local n
    n=$(cat /tmp/fio.failed)
    sed 's/^/   | /' "/tmp/fio.$n.log" >&2
    io_error_lines | sed 's/^/   | /' >&2
    fail "fio round $n failed ($1)"
}

# sampler: every 50 ms or so, "uptime ublk-completions nbd-completions"
# (reads + writes) into /tmp/samples, for the stalls reported at the end.
# bash builtins only: a fork per sample would be slow under TCG.
sampler() {
    trap - ERR
    local up u n
    while [[ ! -e /tmp/sampler.stop ]]; do
        read -r up _ </proc/uptime
        read -r -a u <"/sys/block/${UDEV#/dev/}/stat"
        read -r -a n </sys/block/nbd0/stat
        echo "$up $((u[0] + u[4])) $((n[0] + n[4]))"
        sleep 0.05
    done >/tmp/samples
}
rm -f /tmp/sampler.stop
sampler &
SAMPLER=$!
uptime_now() { local up _; read -r up _ </proc/uptime; echo "$up"; }

# stall COLUMN T0 T1: the longest time in ms between two changes of the
# samples' COLUMN (2 ublk, 3 nbd) from T0 to T1: an upper bound of the
# pause an upgrade caused (fio's own gaps, as between rounds, count too).
stall() {
    awk -v c="$1" -v t0="$2" -v t1="$3" '
        $1 < t0 {last = $1; v = $c; next}
        $1 > t1 {exit}
        $c != v {if (last != "" && $1 - last > max) max = $1 - last; last = $1; v = $c}
        END {printf "%d", max * 1000}' /tmp/samples
}
WINDOWS=()

# stuck_report: what the block layer and rctd do with I/O that does not
# complete; then rctd is killed, so that the watchdog removes the device
# (--ublk-recovery-window) and the guest can sync and power off.
stuck_report() {
    local d=${UDEV#/dev/} f t
    {
        echo "inflight: $d $(cat "/sys/block/$d/inflight"), nbd0 $(cat /sys/block/nbd0/inflight)"
        mount -t debugfs none /sys/kernel/debug 2>/dev/null || true
        for f in /sys/kernel/debug/block/"$d"/{state,requeue_list} /sys/kernel/debug/block/"$d"/hctx*/{state,dispatch,busy}; do
            [[ -r "$f" ]] && echo "== $f: $(cat "$f")"
        done
        for f in /sys/kernel/debug/nbd/nbd0/tasks /sys/kernel/debug/block/nbd0/hctx*/busy; do
            [[ -r "$f" ]] && echo "== $f: $(tr '\n' ' ' <"$f")"
        done
        grep -E 'upgrade|rollback|frozen|cutting|aborted' "$RCTD_LOG" | tail -n 20
        for t in /proc/"$RCTD_PID"/task/*; do
            echo "== rctd $RCTD_PID thread ${t##*/} ($(cat "$t/comm")): $(tr '\n' ' ' <"$t/stack")"
        done
        echo w >/proc/sysrq-trigger
        dmesg | tail -n 60
    } 2>&1 | sed 's/^/   | /' >&2
    kill -KILL "$RCTD_PID" 2>/dev/null || true
}

# wait_io WHAT: both devices complete writes within 60 s (the counters are
# taken when this is called: once the old rctd is gone, these completions
# are the new one's); prints the seconds it took.
wait_io() {
    local what=$1 wu wn t0=$SECONDS i
    wu=$(block_stat "$UDEV" 5)
    wn=$(block_stat /dev/nbd0 5)
    for ((i = 0; i < 600; i++)); do
        if (($(block_stat "$UDEV" 5) > wu && $(block_stat /dev/nbd0 5) > wn)); then
            echo $((SECONDS - t0))
            return 0
        fi
        fio_check "$what"
        sleep 0.1
    done
    stuck_report
    fail "$what: no write completed on $UDEV (was $wu, now $(block_stat "$UDEV" 5)) and /dev/nbd0 (was $wn, now $(block_stat /dev/nbd0 5)) within 60 s"
}

# before_call WHAT: fio runs and has requests in flight on both devices;
# sets T0 (uptime now).
before_call() {
    fio_check "before $1"
    kill -0 "$FIO" 2>/dev/null || fail "fio is not running before $1"
    wait_for 20 in_flight || info "$1: not both devices had requests in flight within 20 s"
    T0=$(uptime_now)
}

# check_nodes WHAT: the device nodes and sizes are those of the start.
check_nodes() {
    local now
    now=$(nodes)
    [[ "$now" == "$NODES" ]] || fail "$1: device nodes or sizes changed: '$NODES' -> '$now'"
}

# tracking_clean WHAT: neither disk's change tracking was recovered as
# after a crash (a disk closed cleanly by one rctd and opened by the next
# counts nothing extra as changed).
tracking_clean() {
    local d
    for d in u n; do
        rctctl info "$d" | grep -qE 'after a crash: +no' ||
            fail "$1: disk $d's change tracking was recovered as after a crash: $(rctctl info "$d" | grep 'after a crash')"
    done
}

# What rctctl upgrade reports as "I/O held": from the freeze to the new
# rctd serving NBD; its ublk devices recover after that (the old rctd must
# have exited first), so their pause is longer (see stall).
HELD=()
# upgrade I BINARY: upgrade number I to BINARY ("" for rctd's default: the
# binary it runs from).
upgrade() {
    local i=$1 bin=$2 old=$RCTD_PID want out rc=0 a b took
    want=${bin:-$(readlink "/proc/$old/exe")}
    before_call "upgrade $i"
    local t0=$SECONDS
    # A bound of its own: an upgrade that never answers is reported with
    # the state of both devices, not left to the guest's timeout.
    out=$(timeout 180 rctctl --state-dir "$STATE" upgrade ${bin:+--binary "$bin"} --ready-timeout "$READY_TIMEOUT" 2>&1) || rc=$?
    took=$((SECONDS - t0))
    if ((rc == 124)); then
        stuck_report
        pkill -KILL -f -- '--takeover-fd' || true  # a new rctd, if one hangs
        fail "upgrade $i to ${bin:-the default binary}: rctctl upgrade did not return within 180 s"
    fi
    ((rc == 0)) || fail "upgrade $i to ${bin:-the default binary}: rctctl upgrade exited $rc: $out"
    [[ "$out" =~ ^upgraded\ rctd:\ pid\ ([0-9]+)\ .*-\>\ pid\ ([0-9]+)\ .*I/O\ held\ ([0-9.?]+)\ ms ]] ||
        fail "upgrade $i: unexpected output: $out"
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]}
    HELD+=("${BASH_REMATCH[3]}")
    [[ $a == "$old" ]] || fail "upgrade $i: says the old pid was $a, but rctd ran as $old"
    [[ $b != "$old" ]] || fail "upgrade $i: the pid did not change ($b)"
    alive "$b" || fail "upgrade $i: the new rctd (pid $b) is not running"
    wait_for 10 eval '! alive "$old"' || fail "upgrade $i: the old rctd (pid $old) still runs 10 s after handing over"
    [[ $(readlink "/proc/$b/exe") == "$want" ]] || fail "upgrade $i: pid $b runs $(readlink "/proc/$b/exe"), not $want"
    RCTD_PID=$b
    check_nodes "upgrade $i"
    tracking_clean "upgrade $i"
    local s
    s=$(wait_io "upgrade $i")
    sleep 0.3  # the sampler sees the end of the stall too
    WINDOWS+=("upgrade-$i $T0 $(uptime_now)")
    check_nodes "upgrade $i"
    step "upgrade $i (${bin:-default binary $want}): $out; rctctl took ${took} s; pid $old gone, writes completed on both devices ${s} s later; nodes unchanged, tracking clean"
}

# failed_upgrade WHAT BINARY PATTERN: rctctl upgrade to BINARY exits 9, its
# message matches PATTERN, rctd keeps its pid and both devices serve on.
failed_upgrade() {
    local what=$1 bin=$2 pattern=$3 old=$RCTD_PID out rc=0
    before_call "$what"
    out=$(rctctl upgrade --binary "$bin" --ready-timeout "$READY_TIMEOUT" 2>&1) || rc=$?
    ((rc == 9)) || fail "$what: rctctl upgrade --binary $bin exited $rc, not 9: $out"
    [[ "$out" =~ $pattern ]] || fail "$what: the message does not say why ('$pattern'): $out"
    alive "$old" || fail "$what: rctd (pid $old) is gone"
    rctctl list >/dev/null || fail "$what: rctd (pid $old) does not answer rctctl list"
    check_nodes "$what"
    tracking_clean "$what"
    local s
    s=$(wait_io "$what")
    sleep 0.3
    WINDOWS+=("${what// /-} $T0 $(uptime_now)")
    check_nodes "$what"
    step "$what: rctctl upgrade --binary $bin exited 9 ($out); pid $old serves on, writes completed on both devices within ${s} s; nodes unchanged, tracking clean"
}

for ((i = 1; i <= UPGRADES; i++)); do
    if ((i == UPGRADES)); then
        upgrade "$i" ""
    elif ((i % 2)); then
        upgrade "$i" /tmp/rctd-a
    else
        upgrade "$i" /tmp/rctd-b
    fi
    if ((i == UPGRADES / 2)); then
        failed_upgrade "a binary that exits at once" /bin/false "before it said hello"
        failed_upgrade "rollback" /tmp/rctd-nofd "descriptor limit"
        grep -q "rollback: serving again" "$RCTD_LOG" ||
            fail "rollback: rctd's log has no 'rollback: serving again'"
        # The re-executed rctd keeps its pid and its watchdog: one, not two.
        sleep 1
        n=$(watchdogs "$RCTD_PID")
        ((n == 1)) || fail "rollback: $n ublk watchdogs watch rctd (pid $RCTD_PID), not 1"
        step "rollback: one ublk watchdog watches rctd (pid $RCTD_PID)"
    fi
done
info "I/O held (as rctctl upgrade reports it: NBD's freeze to the new rctd's serving) in ms: ${HELD[*]}"

touch /tmp/fio.stop
for ((i = 0; i < 3000; i++)); do
    kill -0 "$FIO" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$FIO" 2>/dev/null && fail "the last fio round did not end within 300 s"
wait "$FIO" || true
fio_check "at the end"
ROUNDS=$(cat /tmp/fio.rounds 2>/dev/null || echo 0)
((ROUNDS >= 1)) || fail "no fio round completed"
for ((i = 1; i <= ROUNDS; i++)); do
    grep -qE 'err= *[1-9]' "/tmp/fio.$i.log" && fail "fio round $i reports an error"
    grep -qiE 'verify: bad|bad magic|verify failed' "/tmp/fio.$i.log" && fail "fio round $i reports a verify failure"
done
grep -E '^ *(WRITE|READ):' "/tmp/fio.$ROUNDS.log" | sed 's/^/   | /' >&2
touch /tmp/sampler.stop
wait "$SAMPLER" || true
for w in "${WINDOWS[@]}"; do
    read -r what t0 t1 <<<"$w"
    info "$what: longest time without a completed request: $UDEV $(stall 2 "$t0" "$t1") ms, /dev/nbd0 $(stall 3 "$t0" "$t1") ms"
done
step "$ROUNDS fio rounds (4 jobs each, crc32c verify_backlog and a final verify) across $UPGRADES upgrades and the failed ones: all exited 0"

errors=$(io_error_lines)
if [[ -n "$errors" ]]; then
    echo "$errors" | sed 's/^/   | /' >&2
    fail "the kernel logged I/O errors during the upgrades"
fi
dmesg | grep -iE 'nbd|ublk' | sed 's/^/   | /' >&2 || true
step "no I/O error in the kernel log"

check_nodes "after the upgrades"
umount /mnt/u
umount /mnt/n
indent e2fsck -fn "$UDEV" || fail "e2fsck -fn on $UDEV found errors"
indent e2fsck -fn /dev/nbd0 || fail "e2fsck -fn on /dev/nbd0 found errors"
step "e2fsck -fn clean on both filesystems; nodes unchanged: $NODES"

nbd_disconnect /dev/nbd0
ublk_detach u "$UDEV"
kill -TERM "$RCTD_PID"
wait_for 20 eval '! alive "$RCTD_PID"' || fail "the upgraded rctd (pid $RCTD_PID) did not stop within 20 s of SIGTERM"
tail -n 10 "$RCTD_LOG" | grep -q "rctd stopped cleanly" || fail "the upgraded rctd did not log a clean stop"
step "the upgraded rctd detached $UDEV, disconnected nbd0 and stopped cleanly on SIGTERM"
pass
