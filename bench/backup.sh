#!/bin/bash
# rct-backup's copy against nbdcopy into the same sink. One rctd, one disk
# with half of it random data (1 MiB written, 1 MiB hole, alternating).
# Each round, in alternating order:
#   rct-backup  `rct-backup full`: cut a snapshot, qemu-img create, qemu-nbd
#               on the new qcow2, copy the allocated extents, close, fsync,
#               commit, free the snapshot
#   nbdcopy     the same by hand: cut a snapshot, qemu-img create, qemu-nbd
#               (same flags), nbdcopy --flush snapshot -> qemu-nbd, stop
#               qemu-nbd, sync the file, delete the snapshot
# then, once, an incremental after 1% of the disk was rewritten, against the
# full's median (issue 16's bar: <= 3%); then 8 more such incrementals (a
# 10-point chain) and, alternating, `rct-backup restore` of the newest point
# against `qemu-img convert -O raw` of its qcow2 (bar >= 1.0), as a user
# types it and with `-t none` (no page cache, as rct-backup writes). The
# sink's qemu-nbd runs with --cache=unsafe on both sides: the file is synced
# once at the end, as rct-backup does before a point is committed. Prints a
# markdown table (medians, ratios); --out FILE keeps it.
#
# Usage: bench/backup.sh [--quick] [--size SIZE] [--rounds N] [--out FILE]
# Environment: RCT_BENCH_DIR (default /var/tmp), RCTD, RCTCTL, RCT_BACKUP.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
RCTD=${RCTD:-$ROOT/build/daemon/rctd}
RCTCTL=${RCTCTL:-$ROOT/build/tools/rctctl}
RCT_BACKUP=${RCT_BACKUP:-$ROOT/build/tools/rct-backup}
size=4G
rounds=5
out=
while (($#)); do
    case $1 in
        --quick) size=512M; rounds=3; shift ;;
        --size) size=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '/^# Usage:/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "backup: unknown argument $1" >&2; exit 2 ;;
    esac
done
for t in qemu-img qemu-nbd nbdcopy /usr/bin/python3; do
    command -v "$t" >/dev/null || { echo "backup: $t is needed" >&2; exit 2; }
done
[[ -x $RCTD && -x $RCTCTL && -x $RCT_BACKUP ]] || { echo "backup: build first (scripts/build)" >&2; exit 2; }

W=$(mktemp -d "${RCT_BENCH_DIR:-/var/tmp}/rct-backupbench.XXXXXX")
PID=
QPID=
cleanup() {
    [[ -n $QPID ]] && kill "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
ctl() { "$RCTCTL" --state-dir "$W/state" "$@"; }
"$RCTD" --state-dir "$W/state" >"$W/rctd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do ctl list >/dev/null 2>&1 && break; sleep 0.1; done
ctl create d --size "$size" >/dev/null
URI="nbd+unix:///d?socket=$W/state/nbd.sock"
/usr/bin/python3 -m rcttest.bench.backup fill "$URI" 0.5
bytes=$(ctl --json info d | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["size"])')

now() { date +%s%N; }
# seconds since T0 (from now), 3 decimals
since() { local ns=$(($(now) - $1)); printf '%d.%03d\n' $((ns / 1000000000)) $((ns / 1000000 % 1000)); }
run_rct() {
    local t0
    t0=$(now)
    "$RCT_BACKUP" --state-dir "$W/state" --repo "$W/repo" full d >/dev/null
    since "$t0"
    rm -rf "$W/repo"
}
run_nbdcopy() {
    local t0
    t0=$(now)
    ctl snapshot d --name bench >/dev/null 2>&1
    qemu-img create -q -f qcow2 "$W/sink.qcow2" "$bytes"
    qemu-nbd -f qcow2 -k "$W/sink.sock" --persistent --cache=unsafe --discard=unmap --detect-zeroes=unmap \
        "$W/sink.qcow2" 2>/dev/null &
    QPID=$!
    until [[ -S $W/sink.sock ]]; do sleep 0.005; done
    nbdcopy --flush "nbd+unix:///d%40bench?socket=$W/state/nbd.sock" "nbd+unix:///?socket=$W/sink.sock"
    kill "$QPID"
    wait "$QPID" || true
    QPID=
    sync "$W/sink.qcow2"
    ctl snapshot-delete d bench >/dev/null
    ctl checkpoint-delete d bench >/dev/null
    since "$t0"
    rm -f "$W/sink.qcow2"
}
rct=()
ref=()
for ((r = 0; r < rounds; r++)); do
    if ((r % 2 == 0)); then
        rct+=("$(run_rct)")
        ref+=("$(run_nbdcopy)")
    else
        ref+=("$(run_nbdcopy)")
        rct+=("$(run_rct)")
    fi
done
# The incremental: a full to start from, 1% rewritten, then inc.
"$RCT_BACKUP" --state-dir "$W/state" --repo "$W/repo" full d >/dev/null
/usr/bin/python3 -m rcttest.bench.backup rewrite "$URI" 0.01
t0=$(now)
"$RCT_BACKUP" --state-dir "$W/state" --repo "$W/repo" inc d >/dev/null
inc=$(since "$t0")
for ((i = 0; i < 8; i++)); do
    /usr/bin/python3 -m rcttest.bench.backup rewrite "$URI" 0.01
    "$RCT_BACKUP" --state-dir "$W/state" --repo "$W/repo" inc d >/dev/null
done
newest=$(ls "$W"/repo/d/inc-*.qcow2 | sort | tail -1)
res=()
conv=()
direct=()
convert() {
    local t0
    t0=$(now)
    qemu-img convert "$@" -f qcow2 -O raw "$newest" "$W/converted.raw"
    sync "$W/converted.raw"
    since "$t0"
    rm -f "$W/converted.raw"
}
for ((r = 0; r < rounds; r++)); do
    t0=$(now)
    "$RCT_BACKUP" --repo "$W/repo" restore d --to "$W/restored.raw" >/dev/null
    res+=("$(since "$t0")")
    rm -f "$W/restored.raw"
    conv+=("$(convert)")
    direct+=("$(convert -t none)")
done
/usr/bin/python3 -m rcttest.bench.backup table "$size" "$bytes" "${rct[*]}" "${ref[*]}" "$inc" "${res[*]}" "${conv[*]}" "${direct[*]}" |
    tee ${out:+"$out"}
