#!/bin/bash
# rctd against its peers, side by side on one machine: the same fio jobs over
# a Unix socket, through fio's nbd engine, against
#   rctd       (the file imported into a private state dir)
#   nbdkit     file plugin                      (nbdkit -U SOCK file FILE)
#   qemu-nbd   raw, writeback, --aio=io_uring   (-e 8 to allow 4 clients)
# serving the same preallocated file full of random data. Servers run one at
# a time. Jobs, each with 1 connection and with 4 (numjobs=4, one NBD
# connection per fio job, --group_reporting), queue depth 32 per connection:
#   randread   4k random read           (IOPS)
#   randwrite  4k random write          (IOPS)
#   randrw     4k random 70% read/30%   (total IOPS)
#   seqread    1M sequential read       (MB/s; 4 connections read disjoint quarters)
#   seqwrite   1M sequential write      (MB/s; likewise)
# Prints a markdown table (job | rctd | nbdkit | qemu-nbd | rctd/best-peer)
# and writes it, with the machine and settings, to a results file.
#
# Usage: bench/nbd-peers.sh [--quick] [--jobs randread,randwrite,...]
#                           [--conns 1,4] [--servers rctd,nbdkit,qemu-nbd]
#                           [--out FILE]
# Environment: RCT_BENCH_RUNTIME (seconds per run, default 10; --quick: 2)
#              RCT_BENCH_SIZE    (file size, default 2G; --quick: 256M)
#              RCT_BENCH_DIR     (where the temp dir goes, default /var/tmp)
#              RCTD, RCTCTL      (default build/daemon/rctd, build/tools/rctctl)
# A server that is missing or fails to start shows as n/a; so does a run
# that fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The benchmark's Python: tests/rcttest/bench (python3 -m rcttest.bench.NAME).
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
RCTD=${RCTD:-$ROOT/build/daemon/rctd}
RCTCTL=${RCTCTL:-$ROOT/build/tools/rctctl}

ALL_JOBS=(randread randwrite randrw seqread seqwrite)
ALL_SERVERS=(rctd nbdkit qemu-nbd)
runtime=${RCT_BENCH_RUNTIME:-}
size=${RCT_BENCH_SIZE:-}
ramp=2
jobs_csv=$(IFS=,; echo "${ALL_JOBS[*]}")
servers_csv=$(IFS=,; echo "${ALL_SERVERS[*]}")
conns_csv=1,4
out=
quick=0

usage() { sed -n '/^# Usage:/,/^# that fails/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
    case $1 in
        --quick) quick=1; shift ;;
        --jobs) jobs_csv=$2; shift 2 ;;
        --jobs=*) jobs_csv=${1#*=}; shift ;;
        --conns) conns_csv=$2; shift 2 ;;
        --conns=*) conns_csv=${1#*=}; shift ;;
        --servers) servers_csv=$2; shift 2 ;;
        --servers=*) servers_csv=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "nbd-peers: unknown argument $1" >&2; usage 2 ;;
    esac
done
if ((quick)); then
    runtime=${runtime:-2}
    size=${size:-256M}
    ramp=1
fi
runtime=${runtime:-10}
size=${size:-2G}
IFS=, read -r -a JOBS <<<"$jobs_csv"
IFS=, read -r -a CONNS <<<"$conns_csv"
IFS=, read -r -a SERVERS <<<"$servers_csv"
for j in "${JOBS[@]}"; do
    [[ " ${ALL_JOBS[*]} " == *" $j "* ]] || { echo "nbd-peers: unknown job '$j' (known: ${ALL_JOBS[*]})" >&2; exit 2; }
done
for s in "${SERVERS[@]}"; do
    [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || { echo "nbd-peers: unknown server '$s' (known: ${ALL_SERVERS[*]})" >&2; exit 2; }
done
for c in "${CONNS[@]}"; do
    [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "nbd-peers: bad connection count '$c'" >&2; exit 2; }
done
command -v fio >/dev/null || { echo "nbd-peers: fio is not installed (scripts/deps)" >&2; exit 1; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "nbd-peers: this fio has no nbd engine" >&2; exit 1; }
size_bytes=$(numfmt --from=iec "$size")
# Absolute paths: the benchmark runs inside its temp dir.
[[ -z "$out" ]] || out=$(realpath -m "$out")
[[ "$RCTD" != */* ]] || RCTD=$(realpath -m "$RCTD")
[[ "$RCTCTL" != */* ]] || RCTCTL=$(realpath -m "$RCTCTL")

# A temp dir on a real disk: /tmp may be tmpfs, which would make the file
# live in RAM for one server and not another.
base=${RCT_BENCH_DIR:-/var/tmp}
fstype=$(stat -f -c %T "$base")
if [[ "$fstype" == tmpfs ]]; then
    echo "nbd-peers: $base is tmpfs; set RCT_BENCH_DIR to a directory on disk" >&2
    exit 1
fi
avail=$(($(stat -f -c '%a * %S' "$base")))
if ((avail < size_bytes * 2 + (1 << 30))); then
    echo "nbd-peers: $base has $((avail >> 20)) MiB free; need about $(((size_bytes * 2 >> 20) + 1024)) MiB" >&2
    exit 1
fi
W=$(mktemp -d "$base/rct-bench.XXXXXX")
cd "$W"
FILE=$W/disk.raw
SERVER_PID=
cleanup() {
    local rc=$?
    set +e
    stop_server
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[nbd-peers] %s\n' "$*" >&2; }

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local i
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# wait_ready URI: bounded wait until a client can open URI (and the server
# process is still alive).
wait_ready() {
    local uri=$1 i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        if nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_server NAME: start it on $FILE; sets URI. Returns non-zero (after
# logging why) when the server cannot be started.
start_server() {
    local name=$1 sock=$W/$1.sock
    rm -f "$sock"
    case $name in
        nbdkit)
            command -v nbdkit >/dev/null || { log "nbdkit is not installed"; return 1; }
            nbdkit -f -U "$sock" file "$FILE" >"$W/nbdkit.log" 2>&1 &
            SERVER_PID=$!
            URI="nbd+unix:///?socket=$sock"
            ;;
        qemu-nbd)
            command -v qemu-nbd >/dev/null || { log "qemu-nbd is not installed"; return 1; }
            qemu-nbd -t --aio=io_uring -k "$sock" -f raw --cache=writeback -e 8 "$FILE" >"$W/qemu-nbd.log" 2>&1 &
            SERVER_PID=$!
            URI="nbd+unix:///?socket=$sock"
            ;;
        rctd)
            [[ -x "$RCTD" && -x "$RCTCTL" ]] || { log "rctd/rctctl not built ($RCTD)"; return 1; }
            local state=$W/rctd-state
            mkdir -p "$state"
            "$RCTD" --state-dir "$state" >"$W/rctd.log" 2>&1 &
            SERVER_PID=$!
            local i
            for ((i = 0; i < 150; i++)); do
                kill -0 "$SERVER_PID" 2>/dev/null || break
                "$RCTCTL" --state-dir "$state" list >/dev/null 2>&1 && break
                sleep 0.1
            done
            if ! "$RCTCTL" --state-dir "$state" list >/dev/null 2>&1; then
                log "rctd did not come up:"; tail -n 5 "$W/rctd.log" >&2
                stop_server
                return 1
            fi
            # rctd runs last, so the file can be moved in (same inode, same
            # warm page cache as the peers had).
            if ! "$RCTCTL" --state-dir "$state" import bench --from "$FILE" --move >"$W/import.log" 2>&1; then
                log "rctctl import failed:"; cat "$W/import.log" >&2
                stop_server
                return 1
            fi
            URI="nbd+unix:///bench?socket=$state/nbd.sock"
            ;;
    esac
    if ! wait_ready "$URI"; then
        log "$name did not start serving:"
        tail -n 5 "$W/$name.log" >&2
        stop_server
        return 1
    fi
}

# run_job SERVER JOB CONNS: run fio, print the metric (IOPS or MB/s) or n/a.
run_job() {
    local server=$1 job=$2 conns=$3
    local args=(--name="$job" --ioengine=nbd --uri="$URI" --iodepth=32
        --time_based --runtime="$runtime" --ramp_time="$ramp"
        --numjobs="$conns" --group_reporting --output-format=json)
    local quarter=$((size_bytes / conns / (1 << 20) * (1 << 20)))
    case $job in
        randread) args+=(--rw=randread --bs=4k) ;;
        randwrite) args+=(--rw=randwrite --bs=4k) ;;
        randrw) args+=(--rw=randrw --rwmixread=70 --bs=4k) ;;
        seqread) args+=(--rw=read --bs=1M --size="$quarter" --offset_increment="$quarter") ;;
        seqwrite) args+=(--rw=write --bs=1M --size="$quarter" --offset_increment="$quarter") ;;
    esac
    local outf=$W/$server-$job-$conns.json
    if ! fio "${args[@]}" --output="$outf" >"$W/fio.err" 2>&1; then
        log "fio $job x$conns against $server failed:"; tail -n 5 "$W/fio.err" >&2
        echo n/a
        return
    fi
    /usr/bin/python3 -m rcttest.bench.nbd_peers result "$outf" "$job" || echo n/a
}

label() {
    case $1 in
        randread) echo "4k randread" ;;
        randwrite) echo "4k randwrite" ;;
        randrw) echo "4k randrw 70/30" ;;
        seqread) echo "1M seq read" ;;
        seqwrite) echo "1M seq write" ;;
    esac
}
unit() { [[ $1 == seq* ]] && echo "MB/s" || echo "IOPS"; }

log "filling a $size file with random data ($FILE)"
fio --name=fill --filename="$FILE" --rw=write --bs=1M --size="$size_bytes" --ioengine=psync \
    --refill_buffers --end_fsync=1 --output="$W/fill.out" >/dev/null 2>&1 ||
    { log "fio fill failed"; cat "$W/fill.out" >&2; exit 1; }

declare -A R=() # "server job conns" -> value
# Peers first, rctd last (it takes the file with import --move).
ordered=()
for s in nbdkit qemu-nbd rctd; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] && ordered+=("$s")
done
for server in "${ordered[@]}"; do
    log "$server: starting"
    if ! start_server "$server"; then
        log "$server: unavailable, its column will read n/a"
        continue
    fi
    for job in "${JOBS[@]}"; do
        for conns in "${CONNS[@]}"; do
            v=$(run_job "$server" "$job" "$conns")
            R["$server $job $conns"]=$v
            log "$server: $(label "$job") x$conns = $v $(unit "$job")"
        done
    done
    stop_server
done

# Table.
fmt() { # value -> printable
    local v=$1
    [[ "$v" =~ ^[0-9]+$ ]] || { echo n/a; return; }
    if ((v >= 10000)); then printf '%d.%dk' $((v / 1000)) $((v % 1000 / 100)); else echo "$v"; fi
}
table=$(
    echo "| job | rctd | nbdkit | qemu-nbd | rctd/best-peer |"
    echo "|---|---:|---:|---:|---:|"
    for job in "${JOBS[@]}"; do
        for conns in "${CONNS[@]}"; do
            r=${R["rctd $job $conns"]:-n/a}
            k=${R["nbdkit $job $conns"]:-n/a}
            q=${R["qemu-nbd $job $conns"]:-n/a}
            best=0
            for p in "$k" "$q"; do
                [[ "$p" =~ ^[0-9]+$ ]] && ((p > best)) && best=$p
            done
            ratio=n/a
            if [[ "$r" =~ ^[0-9]+$ ]] && ((best > 0)); then
                ratio=$(awk -v a="$r" -v b="$best" 'BEGIN { printf "%.2fx", a / b }')
            fi
            c=$([[ $conns == 1 ]] && echo "1 conn" || echo "$conns conns")
            echo "| $(label "$job") QD32, $c ($(unit "$job")) | $(fmt "$r") | $(fmt "$k") | $(fmt "$q") | $ratio |"
        done
    done
)

header=$(
    echo "# NBD peers benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- file: $size of random data on $(findmnt -no FSTYPE -T "$base" 2>/dev/null || stat -f -c %T "$base") ($base), page cache warm for every server"
    echo "- fio $(fio --version | sed 's/^fio-//'), nbd engine over a Unix socket, iodepth 32 per connection," \
        "${runtime}s time-based after ${ramp}s ramp"
    echo "- nbdkit $(nbdkit --version 2>/dev/null | awk '{ print $2 }') file plugin;" \
        "qemu-nbd $(qemu-nbd --version 2>/dev/null | awk 'NR == 1 { print $2 }') -f raw --cache=writeback --aio=io_uring -e 8;" \
        "rctd $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no git)') default workers"
    echo "- servers run one at a time; fio shares the same CPUs. Compare only ratios measured side by side."
)

echo
echo "$table"
if [[ -z "$out" ]]; then
    mkdir -p "$ROOT/build/bench"
    out=$ROOT/build/bench/nbd-peers-$(date -u +%Y%m%dT%H%M%SZ).md
fi
mkdir -p "$(dirname "$out")"
{
    echo "$header"
    echo
    echo "$table"
} >"$out"
echo
echo "results written to $out"
