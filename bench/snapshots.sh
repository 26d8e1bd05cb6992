#!/bin/bash
# What snapshots cost, measured side by side in one run against the same disk
# without snapshots. One rctd, one 2 GiB disk full of random data, fio's nbd
# engine over the Unix socket, 4k random I/O at QD32 on 2 connections.
#   cut      randwrite for 30 s, once without snapshots and once cutting one
#            per second: IOPS, p99 and p99.9 write latency (bar: p99.9 with
#            cuts <= 2x without), and per cut the epoch switch itself
#            (cut_ns from the API; bar < 1 ms) and the API round trip. Then
#            the same with reads beside the writes (randrw 50/50): the reads
#            never wait for a copy, so their worst latency with cuts against
#            without shows whether a cut holds up I/O (bar: no request held
#            > 1 ms by the cut itself).
#   steady   randwrite on a 256 MiB region: IOPS without a snapshot, in the
#            first 5 s after one (each chunk's first overwrite pays for its
#            copy), and once every chunk of the region has been copied (bar:
#            >= 95% of without).
#   read     randread 4k and sequential 1M read from the live export and from
#            DISK@SNAP, with half the disk rewritten since the snapshot (so
#            half the snapshot comes from the store): bar >= 90% of live.
# Prints markdown tables; --out FILE keeps them.
#
# Usage: bench/snapshots.sh [--quick] [--parts cut,steady,read] [--granularity SIZE] [--out FILE]
#   --granularity  the disks' chunk size (default 64K, rctd's default): also the
#                  unit a first overwrite copies. Set, the disks are created at
#                  that size and filled through NBD instead of imported.
# Environment: RCT_BENCH_DIR (default /var/tmp), RCTD, RCTCTL.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The benchmark's Python: tests/rcttest/bench (python3 -m rcttest.bench.NAME).
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
RCTD=${RCTD:-$ROOT/build/daemon/rctd}
RCTCTL=${RCTCTL:-$ROOT/build/tools/rctctl}
parts=cut,steady,read
out=
granularity=
runtime=30
size=2G
while (($#)); do
    case $1 in
        --quick) runtime=6; size=512M; shift ;;
        --parts) parts=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --granularity) granularity=$2; shift 2 ;;
        -h | --help) sed -n '/^# Usage:/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "snapshots: unknown argument $1" >&2; exit 2 ;;
    esac
done
want() { [[ ",$parts," == *",$1,"* ]]; }
for t in fio curl /usr/bin/python3; do
    command -v "$t" >/dev/null || { echo "snapshots: $t is needed" >&2; exit 2; }
done
[[ -x $RCTD && -x $RCTCTL ]] || { echo "snapshots: build first (scripts/build)" >&2; exit 2; }

W=$(mktemp -d "${RCT_BENCH_DIR:-/var/tmp}/rct-snapbench.XXXXXX")
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT
log() { echo "[snapshots] $*" >&2; }

STATE=$W/state
SOCK=$STATE/nbd.sock
CTL=$STATE/control.sock
rctctl() { "$RCTCTL" --state-dir "$STATE" "$@"; }
api() { curl -sf --unix-socket "$CTL" "$@"; }

start() {
    mkdir -p "$STATE"
    "$RCTD" --state-dir "$STATE" --log-level warning 2>>"$W/rctd.log" &
    PID=$!
    for _ in $(seq 100); do rctctl list >/dev/null 2>&1 && return; sleep 0.1; done
    log "rctd did not start"; cat "$W/rctd.log" >&2; exit 1
}
fresh_disk() { # name: a disk full of random data, page cache warm
    rctctl delete "$1" --force >/dev/null 2>&1 || true
    head -c "$size" /dev/urandom >"$W/img.raw"
    if [[ -n $granularity ]]; then
        rctctl create "$1" --size "$size" --granularity "$granularity" >/dev/null
        nbdcopy "$W/img.raw" "$(uri "$1")"
        rm -f "$W/img.raw"
    else
        rctctl import "$1" --from "$W/img.raw" --move >/dev/null
    fi
    cat "$STATE/disks/$1/data.raw" >/dev/null
    sync
}
# fio_run OUT URI RW RUNTIME [extra...]
fio_run() {
    local o=$1 uri=$2 rw=$3 rt=$4
    shift 4
    fio --name=j --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k --iodepth=32 --numjobs=2 \
        --time_based --runtime="$rt" --group_reporting --output-format=json --output="$o" \
        --percentile_list=50:99:99.9:100 "$@" >"$W/fio.err" 2>&1 || { log "fio failed:"; cat "$W/fio.err" >&2; return 1; }
}
# stat FILE read|write iops|p99|p999|max  (latencies in microseconds)
stat() {
    /usr/bin/python3 -m rcttest.bench.snapshots stat "$@"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
uri() { echo "nbd+unix:///$1?socket=$SOCK"; }

start
table=""
if want cut; then
    fresh_disk c
    log "cut: randwrite ${runtime}s without snapshots"
    fio_run "$W/base.json" "$(uri c)" randwrite "$runtime"
    log "cut: randwrite ${runtime}s with a snapshot every second"
    fio_run "$W/cuts.json" "$(uri c)" randwrite "$runtime" &
    fpid=$!
    : >"$W/cuts.txt"
    sleep 1
    for ((i = 0; i < runtime - 2; i++)); do
        t0=$(date +%s%N)
        api -X POST -d "{\"name\":\"b$i\"}" http://localhost/v1/disks/c/snapshots >"$W/cut.json"
        t1=$(date +%s%N)
        echo "$(/usr/bin/python3 -m rcttest.bench.snapshots cut-ns "$W/cut.json") $(((t1 - t0) / 1000))" >>"$W/cuts.txt"
        sleep 0.5
    done
    wait "$fpid"
    cutmax=$(awk 'BEGIN{m=0} $1>m{m=$1} END{print m}' "$W/cuts.txt")
    apimean=$(awk '{s+=$2} END{printf "%.0f", s/NR}' "$W/cuts.txt")
    ncut=$(wc -l <"$W/cuts.txt")
    for s in $(rctctl --json snapshots c | /usr/bin/python3 -m rcttest.bench.snapshots names); do
        rctctl snapshot-delete c "$s" >/dev/null
    done
    log "cut: randrw 50/50 ${runtime}s without, then with, snapshots"
    fio_run "$W/rw-base.json" "$(uri c)" randrw "$runtime"
    fio_run "$W/rw-cuts.json" "$(uri c)" randrw "$runtime" &
    fpid=$!
    sleep 1
    for ((i = 0; i < runtime - 2; i++)); do
        api -X POST -d "{\"name\":\"r$i\"}" http://localhost/v1/disks/c/snapshots >/dev/null
        sleep 0.9
    done
    wait "$fpid"
    b99=$(stat "$W/base.json" write p999); c99=$(stat "$W/cuts.json" write p999)
    table+="### Cutting a snapshot every second under 4k randwrite (QD32 x 2 connections, ${runtime}s)

| | without snapshots | one cut per second | ratio |
|---|---:|---:|---:|
| write IOPS | $(stat "$W/base.json" write iops) | $(stat "$W/cuts.json" write iops) | $(ratio "$(stat "$W/cuts.json" write iops)" "$(stat "$W/base.json" write iops)") |
| write p99 latency (µs) | $(stat "$W/base.json" write p99) | $(stat "$W/cuts.json" write p99) | $(ratio "$(stat "$W/cuts.json" write p99)" "$(stat "$W/base.json" write p99)") |
| write p99.9 latency (µs; bar: ratio ≤ 2) | $b99 | $c99 | $(ratio "$c99" "$b99") |
| randrw: read max latency (µs; reads never wait for copies) | $(stat "$W/rw-base.json" read max) | $(stat "$W/rw-cuts.json" read max) | $(ratio "$(stat "$W/rw-cuts.json" read max)" "$(stat "$W/rw-base.json" read max)") |
| randrw: read p99.9 latency (µs) | $(stat "$W/rw-base.json" read p999) | $(stat "$W/rw-cuts.json" read p999) | $(ratio "$(stat "$W/rw-cuts.json" read p999)" "$(stat "$W/rw-base.json" read p999)") |

Cuts: $ncut; epoch switch (cut_ns) max $cutmax ns (bar < 1 ms); API round trip (includes the seal's and
the snapshot record's fdatasync) mean $apimean µs.

"
fi

if want steady; then
    fresh_disk s
    region=256M
    log "steady: randwrite on $region without a snapshot"
    fio_run "$W/st-base.json" "$(uri s)" randwrite 10 --size="$region"
    rctctl snapshot s --name st >/dev/null 2>&1
    log "steady: the first 5 s after a snapshot"
    fio_run "$W/st-first.json" "$(uri s)" randwrite 5 --size="$region"
    # Until every chunk of the region has its copy.
    chunks=$(($(numfmt --from=iec "$region") / 65536))
    fio --name=fill --ioengine=nbd --uri="$(uri s)" --rw=write --bs=64k --iodepth=16 --size="$region" >/dev/null 2>&1
    copies=$(api http://localhost/v1/disks/s/snapshots | /usr/bin/python3 -m rcttest.bench.snapshots copies)
    log "steady: randwrite on $region after all $copies/$chunks chunks were copied"
    fio_run "$W/st-after.json" "$(uri s)" randwrite 10 --size="$region"
    base=$(stat "$W/st-base.json" write iops)
    table+="### Writes after a snapshot (4k randwrite on a $region region, QD32 x 2)

| phase | IOPS | vs no snapshot |
|---|---:|---:|
| no snapshot | $base | 1.00 |
| first 5 s after the cut (first overwrites copy their chunk) | $(stat "$W/st-first.json" write iops) | $(ratio "$(stat "$W/st-first.json" write iops)" "$base") |
| once the region is copied (bar ≥ 0.95) | $(stat "$W/st-after.json" write iops) | $(ratio "$(stat "$W/st-after.json" write iops)" "$base") |

"
fi

if want read; then
    fresh_disk r
    rctctl snapshot r --name rd >/dev/null 2>&1
    half=$(($(numfmt --from=iec "$size") / 2))
    log "read: rewriting half the disk so that half the snapshot lives in the store"
    fio --name=half --ioengine=nbd --uri="$(uri r)" --rw=write --bs=1M --iodepth=8 --size="$half" >/dev/null 2>&1
    cat "$STATE/disks/r/snapshots/chunks.dat" "$STATE/disks/r/data.raw" >/dev/null
    rows=""
    for job in randread read; do
        bs=4k; [[ $job == read ]] && bs=1M
        for target in live snap; do
            u=$(uri r); [[ $target == snap ]] && u=$(uri r@rd)
            fio_run "$W/$job-$target.json" "$u" "$job" 10 --bs="$bs" --offset_increment=50%
        done
        unit=IOPS; key=iops; [[ $job == read ]] && { unit=MB/s; key=bw; }
        l=$(stat "$W/$job-live.json" read $key); s=$(stat "$W/$job-snap.json" read $key)
        rows+="| $bs $job ($unit) | $l | $s | $(ratio "$s" "$l") |
"
    done
    table+="### Reading a snapshot export against the live export (half the snapshot in the store)

| job | live | DISK@SNAP | snapshot/live (bar ≥ 0.90) |
|---|---:|---:|---:|
$rows
"
fi

header="# Snapshot benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r); load before: $(cut -d' ' -f1-3 /proc/loadavg)
- rctd $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), ${granularity:-64K} chunks; disk $size of random data on $(findmnt -no FSTYPE -T "$W")
"
echo "$header"
echo "$table"
if [[ -n $out ]]; then
    printf '%s\n%s\n' "$header" "$table" >"$out"
    log "results written to $out"
fi
