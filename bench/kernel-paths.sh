#!/bin/bash
# The kernel paths to an rctd disk, side by side on one host: the same fio
# jobs (io_uring engine, O_DIRECT) against
#   raw        the raw file itself, a copy of the disk's data (the limit)
#   ublk       /dev/ublkbN   (rctctl attach DISK --ublk)
#   nbd        /dev/nbdN     (the kernel's nbd client, nbd-client over
#                             rctd's Unix socket, 4 connections)
# with change tracking on, as users run it. Jobs, one fio process each,
# numjobs 2, queue depth 32 per job:
#   randread   4k random read     (IOPS)
#   randwrite  4k random write    (IOPS)
#   seqread    1M sequential read (MB/s)
#   seqwrite   1M sequential write(MB/s)
# Prints a markdown table (job | raw | ublk | nbd | ublk/nbd | ublk/raw).
# Needs root, the ublk_drv and nbd modules (it loads them with modprobe if
# it can) and nbd-client; without them it says which is missing and exits
# 77. Numbers from a TCG guest mean nothing: use --quick there to check that
# the script works.
#
# Usage: bench/kernel-paths.sh [--quick] [--jobs randread,...] [--paths raw,ublk,nbd] [--out FILE]
# Environment: RCT_BENCH_RUNTIME (seconds per run, default 10; --quick: 2)
#              RCT_BENCH_SIZE    (disk size, default 2G; --quick: 128M)
#              RCT_BENCH_DIR     (where the temp dir goes, default /var/tmp)
#              RCTD, RCTCTL      (default build/daemon/rctd, build/tools/rctctl)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RCTD=${RCTD:-$ROOT/build/daemon/rctd}
RCTCTL=${RCTCTL:-$ROOT/build/tools/rctctl}
ALL_JOBS=(randread randwrite seqread seqwrite)
ALL_PATHS=(raw ublk nbd)
runtime=${RCT_BENCH_RUNTIME:-}
size=${RCT_BENCH_SIZE:-}
jobs_csv=$(IFS=,; echo "${ALL_JOBS[*]}")
paths_csv=$(IFS=,; echo "${ALL_PATHS[*]}")
out=
while (($#)); do
    case $1 in
        --quick) runtime=${runtime:-2}; size=${size:-128M}; shift ;;
        --jobs) jobs_csv=$2; shift 2 ;;
        --paths) paths_csv=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '/^# Usage:/,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "kernel-paths: unknown argument $1" >&2; exit 2 ;;
    esac
done
runtime=${runtime:-10}
size=${size:-2G}
IFS=, read -r -a JOBS <<<"$jobs_csv"
IFS=, read -r -a PATHS_RUN <<<"$paths_csv"

unavailable() { echo "kernel-paths: SKIP: $*" >&2; exit 77; }
((EUID == 0)) || unavailable "needs root (block devices, modules)"
for t in fio nbd-client; do
    command -v "$t" >/dev/null || unavailable "$t is not installed"
done
wants() { [[ ",$paths_csv," == *",$1,"* ]]; }
if wants ublk && [[ ! -e /dev/ublk-control ]]; then
    modprobe ublk_drv 2>/dev/null || unavailable "no ublk driver (/dev/ublk-control; modprobe ublk_drv failed)"
fi
if wants nbd && [[ ! -e /dev/nbd0 ]]; then
    modprobe nbd nbds_max=4 2>/dev/null || unavailable "no nbd driver (/dev/nbd0; modprobe nbd failed)"
fi

T=$(mktemp -d "${RCT_BENCH_DIR:-/var/tmp}/rct-kernel-paths.XXXXXX")
STATE=$T/state
RCTD_PID=
NBD_DEV=
cleanup() {
    set +e
    [[ -z "$NBD_DEV" ]] || nbd-client -d "$NBD_DEV" >/dev/null 2>&1
    if [[ -n "$RCTD_PID" ]]; then
        "$RCTCTL" --state-dir "$STATE" detach bench >/dev/null 2>&1
        kill "$RCTD_PID"
        wait "$RCTD_PID"
    fi
    rm -rf "$T"
}
trap cleanup EXIT
rctctl() { "$RCTCTL" --state-dir "$STATE" "$@"; }

# The disk starts full of random data, so reads read and the raw copy is
# the same bytes.
fio --name=fill --filename="$T/raw.img" --size="$size" --rw=write --bs=1M --ioengine=psync \
    --refill_buffers --output=/dev/null
mkdir -p "$STATE"
"$RCTD" --state-dir "$STATE" >"$T/rctd.log" 2>&1 &
RCTD_PID=$!
for _ in $(seq 100); do rctctl list >/dev/null 2>&1 && break; sleep 0.1; done
cp "$T/raw.img" "$T/import.img"
rctctl import bench --from "$T/import.img" --move >/dev/null
UBLK_DEV=
if wants ublk; then
    UBLK_DEV=$(rctctl attach bench --ublk)
fi
if wants nbd; then
    for n in /dev/nbd*; do
        [[ "$n" =~ ^/dev/nbd[0-9]+$ ]] || continue
        [[ "$(cat "/sys/block/${n#/dev/}/size")" == 0 ]] || continue
        nbd-client -unix "$STATE/nbd.sock" "$n" -N bench -C 4 >/dev/null && NBD_DEV=$n && break
    done
    [[ -n "$NBD_DEV" ]] || { echo "kernel-paths: nbd-client could not connect" >&2; exit 1; }
fi

target() {
    case $1 in
        raw) echo "$T/raw.img" ;;
        ublk) echo "$UBLK_DEV" ;;
        nbd) echo "$NBD_DEV" ;;
    esac
}

# bytes SIZE: 128M, 2G, ... in bytes.
bytes() {
    local n=${1%[KMGT]} u=${1##*[0-9]}
    case $u in K) echo $((n << 10)) ;; M) echo $((n << 20)) ;; G) echo $((n << 30)) ;; T) echo $((n << 40)) ;; *) echo "$n" ;; esac
}

# run PATH JOB: one fio run; prints IOPS (4k jobs) or MB/s (1M jobs).
run() {
    local file rw bs field
    file=$(target "$1")
    case $2 in
        randread) rw=randread bs=4k field=iops ;;
        randwrite) rw=randwrite bs=4k field=iops ;;
        seqread) rw=read bs=1M field=bw ;;
        seqwrite) rw=write bs=1M field=bw ;;
    esac
    # Terse v3: read bandwidth (KiB/s) and IOPS are fields 7 and 8, write's
    # 48 and 49; one line with --group_reporting.
    fio --name="$2" --filename="$file" --size="$size" --rw="$rw" --bs="$bs" --ioengine=io_uring --direct=1 \
        --iodepth=32 --numjobs=2 --offset_increment=$(($(bytes "$size") / 2)) \
        --time_based --runtime="$runtime" --ramp_time=1 --group_reporting --output-format=terse \
        --terse-version=3 --output="$T/out.txt" >/dev/null 2>&1 || { echo n/a; return; }
    awk -F';' -v f="$field" 'NR == 1 {
        if (f == "iops") printf "%.1fk\n", ($8 + $49) / 1000; else printf "%.0f\n", ($7 + $48) * 1024 / 1e6 }' "$T/out.txt"
}

ratio() {
    awk -v a="$1" -v b="$2" 'function num(s) { return s ~ /k$/ ? substr(s, 1, length(s) - 1) * 1000 : s + 0 }
        BEGIN { if (a == "n/a" || b == "n/a" || num(b) == 0) print "n/a"; else printf "%.2fx\n", num(a) / num(b) }'
}

table=$T/table.md
{
    echo "| job (QD32 x 2 jobs, O_DIRECT) | raw file | /dev/ublkb | /dev/nbd (4 conns) | ublk/nbd | ublk/raw |"
    echo "|---|---:|---:|---:|---:|---:|"
} >"$table"
for job in "${JOBS[@]}"; do
    declare -A got=()
    for p in "${ALL_PATHS[@]}"; do
        if wants "$p"; then got[$p]=$(run "$p" "$job"); else got[$p]=n/a; fi
    done
    unit=IOPS
    [[ $job == seq* ]] && unit=MB/s
    echo "| $job ($unit) | ${got[raw]} | ${got[ublk]} | ${got[nbd]} | $(ratio "${got[ublk]}" "${got[nbd]}") | $(ratio "${got[ublk]}" "${got[raw]}") |" >>"$table"
    unset got
done
echo
echo "kernel paths, $(uname -r), $(nproc) CPUs, $size disk, ${runtime}s per run, rctd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
cat "$table"
[[ -z "$out" ]] || cp "$table" "$out"
