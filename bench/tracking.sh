#!/bin/bash
# What change tracking costs rctd, measured end to end over NBD in one run:
#
#  cost     4k randwrite and randread, QD32, 1 and 4 connections (fio nbd
#           engine), against rctd with tracking (the default) and rctd
#           --no-tracking, on the same preallocated file of random data.
#           Bar: tracking on/off >= 0.98 (loses at most 2%).
#  peer     the same jobs against the tracked peer: qemu-nbd serving a fully
#           allocated qcow2 of the same data with an enabled persistent
#           dirty bitmap (qemu-nbd -t --aio=io_uring --cache=writeback
#           -f qcow2 -B bitmap0 -e 8). Bar: rctd/qemu-nbd >= 2x on randwrite.
#  cut      4k randwrite QD32 on 4 connections against rctd while a client
#           cuts a checkpoint every 200 ms through the control API, against
#           an identical run without checkpoints: the daemon's own cut_ns
#           (the epoch switch; bar < 1 ms), the API round trip (includes the
#           seal's fdatasync; informational), and fio's clat percentiles,
#           max and share of requests over 1 ms with and without cuts, plus
#           fio's slowest request per 10 ms window, split by whether it may
#           have been in flight during a cut call or cannot have been (bar:
#           no request held > 1 ms by a cut). The
#           same pair again at QD1 on 1 connection, where requests take tens
#           of microseconds instead of milliseconds of queueing, so that a
#           hold would stand out.
#  changes  a 1 TiB sparse disk: checkpoint, write 4 KiB into 0.1% of its
#           64 KiB chunks at random, time GET .../changes?since=CP (bar
#           < 100 ms); then every 2nd chunk of the first 64 GiB for
#           throughput (bar >= 1M extents/s).
#  profile  where a tracked rctd spends its CPU under 4k randwrite on 4
#           connections (perf record -p, if perf is installed): the share of
#           samples in the tracking code, which throughput cannot resolve to
#           2% on a machine this noisy.
# Rounds (--rounds, default 4): in each, every cost/peer job runs on each
# server back to back (a fresh server per run), in one order in odd rounds
# and the reverse in even ones (ABBA), because this machine drifts by tens
# of percent within minutes. The table shows median IOPS and the geometric
# mean of the per-round ratios, with the per-round ratios beside it. The cut
# runs alternate without/with likewise. Servers run one at a time; fio shares
# the CPUs.
# Prints markdown tables and writes them, with the machine and settings, to a
# results file.
#
# Usage: bench/tracking.sh [--quick] [--parts cost,peer,cut,changes,profile]
#                          [--rounds N] [--out FILE]
# Environment: RCT_BENCH_RUNTIME (seconds per cost/peer run, default 10; --quick: 2)
#              RCT_BENCH_CUT_RUNTIME (seconds per cut run, default 20; --quick: 4)
#              RCT_BENCH_SIZE    (file size, default 2G; --quick: 256M)
#              RCT_BENCH_DIR     (where the temp dir goes, default /var/tmp)
#              RCTD, RCTCTL      (default build/daemon/rctd, build/tools/rctctl)
# A server that is missing or fails to start shows as n/a; so does a run
# that fails.

# The whole script is one block, read before it runs: editing the file
# during a run cannot change the run.
{
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The benchmark's Python: tests/rcttest/bench (python3 -m rcttest.bench.NAME).
export PYTHONPATH=$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
RCTD=${RCTD:-$ROOT/build/daemon/rctd}
RCTCTL=${RCTCTL:-$ROOT/build/tools/rctctl}

ALL_PARTS=(cost peer cut changes profile)
runtime=${RCT_BENCH_RUNTIME:-}
cut_runtime=${RCT_BENCH_CUT_RUNTIME:-}
size=${RCT_BENCH_SIZE:-}
ramp=2
parts_csv=$(IFS=,; echo "${ALL_PARTS[*]}")
rounds=
out=
quick=0
cut_interval_ms=200

usage() { sed -n '/^# Usage:/,/^# that fails/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
    case $1 in
        --quick) quick=1; shift ;;
        --parts) parts_csv=$2; shift 2 ;;
        --parts=*) parts_csv=${1#*=}; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        --rounds=*) rounds=${1#*=}; shift ;;
        --out) out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        -h | --help) usage 0 ;;
        *) echo "tracking: unknown argument $1" >&2; usage 2 ;;
    esac
done
if ((quick)); then
    runtime=${runtime:-2}
    cut_runtime=${cut_runtime:-4}
    size=${size:-256M}
    rounds=${rounds:-1}
    ramp=1
fi
runtime=${runtime:-10}
cut_runtime=${cut_runtime:-20}
size=${size:-2G}
rounds=${rounds:-4}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "tracking: bad --rounds '$rounds'" >&2; exit 2; }
IFS=, read -r -a PARTS <<<"$parts_csv"
for p in "${PARTS[@]}"; do
    [[ " ${ALL_PARTS[*]} " == *" $p "* ]] || { echo "tracking: unknown part '$p' (known: ${ALL_PARTS[*]})" >&2; exit 2; }
done
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
command -v fio >/dev/null || { echo "tracking: fio is not installed (scripts/deps)" >&2; exit 1; }
fio --enghelp=nbd >/dev/null 2>&1 || { echo "tracking: this fio has no nbd engine" >&2; exit 1; }
PY=/usr/bin/python3 # the system Python has the nbd module (environment.md)
size_bytes=$(numfmt --from=iec "$size")
[[ -z "$out" ]] || out=$(realpath -m "$out")
[[ "$RCTD" != */* ]] || RCTD=$(realpath -m "$RCTD")
[[ "$RCTCTL" != */* ]] || RCTCTL=$(realpath -m "$RCTCTL")

# A temp dir on a real disk (/tmp may be tmpfs). Room for the raw file, its
# qcow2 copy and the 1 TiB disk's written chunks (about 2 GiB in full mode).
base=${RCT_BENCH_DIR:-/var/tmp}
fstype=$(stat -f -c %T "$base")
if [[ "$fstype" == tmpfs ]]; then
    echo "tracking: $base is tmpfs; set RCT_BENCH_DIR to a directory on disk" >&2
    exit 1
fi
need=$((size_bytes * 2 + (3 << 30)))
avail=$(($(stat -f -c '%a * %S' "$base")))
if ((avail < need)); then
    echo "tracking: $base has $((avail >> 20)) MiB free; need about $((need >> 20)) MiB" >&2
    exit 1
fi
W=$(mktemp -d "$base/rct-tracking.XXXXXX")
cd "$W"
FILE=$W/disk.raw
QCOW=$W/img.qcow2
STATE=$W/rctd-state
SERVER_PID=
SERVER_NAME=
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

log() { printf '[tracking] %s\n' "$*" >&2; }

# Private copies of the binaries, so that a rebuild during the run cannot
# mix versions.
mkdir -p "$W/bin"
if [[ -x "$RCTD" && -x "$RCTCTL" ]]; then
    cp "$RCTD" "$W/bin/rctd" && cp "$RCTCTL" "$W/bin/rctctl"
    RCTD=$W/bin/rctd
    RCTCTL=$W/bin/rctctl
fi
rctctl() { "$RCTCTL" --state-dir "$STATE" "$@"; }

stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    local i
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    SERVER_NAME=
}

# wait_ready URI LOG: bounded wait until a client can open URI (and the
# server process is still alive).
wait_ready() {
    local uri=$1 i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        if nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# start_server NAME: rctd-on, rctd-off or qemu-nbd; sets URI. Every start
# serves a fresh copy of the pristine image (rctd imports the raw file,
# qemu-nbd gets a copy of the qcow2), synced. Returns non-zero
# (after logging why) when the server cannot be started.
start_server() {
    local name=$1
    local logf=$W/$name.log
    # Start every run with no dirty pages left by the one before.
    sync
    case $name in
        qemu-nbd)
            command -v qemu-nbd >/dev/null || { log "qemu-nbd is not installed"; return 1; }
            [[ -f "$QCOW" ]] || { log "no qcow2 image (qemu-img failed earlier)"; return 1; }
            local sock=$W/qemu-nbd.sock
            rm -f "$sock"
            cp --sparse=always "$QCOW" "$QCOW.run" && sync
            qemu-nbd -t --aio=io_uring --cache=writeback -f qcow2 -B bitmap0 -e 8 -k "$sock" "$QCOW.run" >>"$logf" 2>&1 &
            SERVER_PID=$!
            URI="nbd+unix:///?socket=$sock"
            ;;
        rctd-on | rctd-off)
            [[ -x "$RCTD" && -x "$RCTCTL" ]] || { log "rctd/rctctl not built ($RCTD)"; return 1; }
            local flags=()
            [[ $name == rctd-off ]] && flags=(--no-tracking)
            mkdir -p "$STATE"
            "$RCTD" --state-dir "$STATE" "${flags[@]}" >>"$logf" 2>&1 &
            SERVER_PID=$!
            local i
            for ((i = 0; i < 150; i++)); do
                kill -0 "$SERVER_PID" 2>/dev/null || break
                rctctl list >/dev/null 2>&1 && break
                sleep 0.1
            done
            if ! rctctl list >/dev/null 2>&1; then
                log "$name did not come up:"; tail -n 5 "$logf" >&2
                stop_server
                return 1
            fi
            # A fresh copy of the pristine file for every run, as for
            # qemu-nbd: a file rewritten by earlier runs measured anywhere
            # from half to the same speed, which would swamp the ratios.
            rctctl delete bench --force >/dev/null 2>&1 || true
            if ! rctctl import bench --from "$FILE" >"$W/import.log" 2>&1; then
                log "rctctl import failed:"; cat "$W/import.log" >&2
                stop_server
                return 1
            fi
            sync
            URI="nbd+unix:///bench?socket=$STATE/nbd.sock"
            ;;
    esac
    SERVER_NAME=$name
    if ! wait_ready "$URI"; then
        log "$name did not start serving:"
        tail -n 5 "$logf" >&2
        stop_server
        return 1
    fi
}

# fio_run OUT JOB CONNS RUNTIME [extra fio args]: fio's nbd engine on $URI,
# queue depth $QD (default 32) per connection; JSON to OUT. Returns non-zero
# (after logging) on failure.
QD=32
fio_run() {
    local outf=$1 job=$2 conns=$3 rt=$4
    shift 4
    local args=(--name="$job" --ioengine=nbd --uri="$URI" --iodepth="$QD" --bs=4k --rw="$job"
        --time_based --runtime="$rt" --ramp_time="$ramp"
        --numjobs="$conns" --group_reporting --output-format=json "$@")
    if ! fio "${args[@]}" --output="$outf" >"$W/fio.err" 2>&1; then
        log "fio $job x$conns against $SERVER_NAME failed:"; tail -n 5 "$W/fio.err" >&2
        return 1
    fi
}

# Helpers in Python (fio JSON, the checkpoint client, NBD writers, analysis):
# tests/rcttest/bench/tracking.py.
helper() { "$PY" -m rcttest.bench.tracking "$@"; }

# Environment, also for the results file.
env_lines=$(
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- file: $size of random data on $(findmnt -no FSTYPE -T "$base" 2>/dev/null || echo "$fstype") ($base), page cache warm for every server"
    echo "- fio $(fio --version | sed 's/^fio-//'), nbd engine over a Unix socket, 4k, iodepth 32 per connection," \
        "${runtime}s time-based after ${ramp}s ramp ($rounds round(s); each job on each server back to back, order alternating by round);" \
        "cut runs ${cut_runtime}s"
    echo "- rctd $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '(no git)'), default workers, default tracking" \
        "(64 KiB chunks, 64 MiB intent regions, persist every 5 s) vs --no-tracking;" \
        "qemu-nbd $(qemu-nbd --version 2>/dev/null | awk 'NR == 1 { print $2 }') -f qcow2 -B bitmap0 --cache=writeback --aio=io_uring -e 8" \
        "(qcow2 fully allocated, persistent bitmap enabled, 64 KiB granularity)"
)
log "environment:"
printf '%s\n' "$env_lines" >&2

log "filling a $size file with random data ($FILE)"
fio --name=fill --filename="$FILE" --rw=write --bs=1M --size="$size_bytes" --ioengine=psync \
    --refill_buffers --end_fsync=1 --output="$W/fill.out" >/dev/null 2>&1 ||
    { log "fio fill failed"; cat "$W/fill.out" >&2; exit 1; }

if want peer; then
    log "making the qcow2 copy with an enabled persistent bitmap"
    if ! command -v qemu-img >/dev/null ||
        ! qemu-img convert -f raw -O qcow2 "$FILE" "$QCOW" >"$W/qemu-img.log" 2>&1 ||
        ! qemu-img bitmap --add --enable -g 65536 -f qcow2 "$QCOW" bitmap0 >>"$W/qemu-img.log" 2>&1; then
        log "qemu-img failed; qemu-nbd will read n/a"
        cat "$W/qemu-img.log" >&2 || true
        rm -f "$QCOW"
    fi
    sync
fi

# Check once that rctd can serve the file.
if ! start_server rctd-on; then
    log "rctd cannot serve the file; its columns will read n/a"
fi
stop_server

declare -A R=() # "server job conns round" -> IOPS
JOBS=(randwrite randread)
CONNS=(1 4)
if want cost || want peer; then
    servers=()
    want cost && servers+=(rctd-on rctd-off)
    want peer && servers+=(qemu-nbd)
    [[ " ${servers[*]} " == *" rctd-on "* ]] || servers=(rctd-on "${servers[@]}")
    # Each job runs on every server back to back (a fresh server per run),
    # the servers in order in odd rounds and in reverse in even ones: this
    # machine drifts by tens of percent within minutes, and ABBA cancels a
    # steady drift from the ratios.
    for ((r = 1; r <= rounds; r++)); do
        order=("${servers[@]}")
        if ((r % 2 == 0)); then
            order=()
            for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[$i]}"); done
        fi
        log "round $r/$rounds: ${order[*]}"
        for job in "${JOBS[@]}"; do
            for c in "${CONNS[@]}"; do
                for s in "${order[@]}"; do
                    v=n/a
                    if start_server "$s"; then
                        f=$W/$s-$job-$c-$r.json
                        if fio_run "$f" "$job" "$c" "$runtime"; then
                            v=$(helper iops "$f") || v=n/a
                        fi
                        stop_server
                    fi
                    R["$s $job $c $r"]=$v
                    log "  $s $job x$c = $v IOPS"
                done
            done
        done
    done
fi

# Checkpoints under load: ABBA pairs of runs without and with cuts, under
# the load the bar names (QD32 on 4 connections, where queueing alone costs
# milliseconds per request) and under a light one (QD1, 1 connection, where
# a request takes tens of microseconds, so a 1 ms hold would stand out).
declare -A CUT_RUNS=() # profile -> "MODE:FIOJSON:LATPREFIX:CUTSJSON ..."
if want cut; then
    order=(without with)
    ((rounds > 1)) && order=(without with with without)
    k=0
    for profile in qd32x4 qd1x1; do
        for mode in "${order[@]}"; do
            k=$((k + 1))
            log "cut run $k/$((2 * ${#order[@]})): $profile, $mode checkpoints"
            if ! start_server rctd-on; then
                CUT_RUNS[$profile]+=" $mode:$W/none:-:-"
                continue
            fi
            f=$W/cut-$k.json
            lat=$W/cutlat-$k
            cj=-
            case $profile in
                qd32x4) QD=32 conns=4 ;;
                qd1x1) QD=1 conns=1 ;;
            esac
            fio_run "$f" randwrite "$conns" "$cut_runtime" --clat_percentiles=1 --lat_percentiles=1 \
                --percentile_list=50:99:99.9:99.99 --write_lat_log="$lat" --log_avg_msec=10 \
                --log_max_value=1 --log_unix_epoch=1 &
            fio_pid=$!
            QD=32
            if [[ $mode == with ]]; then
                cj=$W/cuts-$k.json
                # Cut from the end of the ramp to the end of the measured time.
                sleep "$ramp"
                helper checkpointer "$STATE/control.sock" bench "$cut_runtime" "$cut_interval_ms" "$cj" || cj=-
            fi
            wait "$fio_pid" || rm -f "$f"
            CUT_RUNS[$profile]+=" $mode:$f:$lat:$cj"
            stop_server
        done
    done
fi

# Profile: where the tracked rctd's CPU time goes.
PROF=
if want profile; then
    if ! command -v perf >/dev/null; then
        log "perf is not installed (apt-get install linux-perf); no profile"
    elif start_server rctd-on; then
        log "profile: perf record on rctd under 4k randwrite x4"
        fio_run "$W/prof.json" randwrite 4 "$runtime" &
        fio_pid=$!
        sleep "$ramp"
        perf record -F 999 -p "$SERVER_PID" -o "$W/perf.data" -- sleep "$((runtime > 2 ? runtime - 1 : 1))" \
            >"$W/perf.log" 2>&1 || log "perf record failed: $(tail -n 1 "$W/perf.log")"
        wait "$fio_pid" || true
        stop_server
        if [[ -s "$W/perf.data" ]]; then
            perf report -i "$W/perf.data" --no-children -g none --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' >"$W/perf.sym" || true
            perf report -i "$W/perf.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep -v '^#' | grep '%' >"$W/perf.dso" || true
            perf report -i "$W/perf.data" --no-children -g none --sort comm --stdio 2>/dev/null | grep -v '^#' | grep '%' >"$W/perf.comm" || true
            PROF=$W/perf
        fi
    fi
fi

# changes on a 1 TiB sparse disk.
CH=()
if want changes; then
    log "changes: a 1 TiB sparse disk"
    if start_server rctd-on; then
        big_uri="nbd+unix:///big?socket=$STATE/nbd.sock"
        dense_span=$((64 << 30))
        ((quick)) && dense_span=$((8 << 30))
        if rctctl create big --size 1T >/dev/null 2>"$W/create.err" &&
            rctctl checkpoint big --name sparse >/dev/null 2>&1; then
            if n=$(helper write_sparse "$big_uri" $((1 << 40)) 65536 0.001 42 2>"$W/sparse.err"); then
                read -r e t1 t2 t3 < <(helper time_changes "$STATE/control.sock" big sparse 3 2>"$W/changes.err") || true
                CH+=("sparse|1 TiB, 0.1% of the 64 KiB chunks written at random ($n writes of 4 KiB)|${e:-n/a}|${t1:-}|${t2:-}|${t3:-}")
            else
                log "sparse writes failed:"; tail -n 5 "$W/sparse.err" >&2
                CH+=("sparse|1 TiB, 0.1% of the 64 KiB chunks written at random (writes failed)|n/a|||")
            fi
            if rctctl checkpoint big --name dense >/dev/null 2>&1 &&
                n=$(helper write_dense "$big_uri" "$dense_span" 65536 2>"$W/dense.err"); then
                read -r e t1 t2 t3 < <(helper time_changes "$STATE/control.sock" big dense 3 2>"$W/changes.err") || true
                CH+=("dense|every 2nd chunk of the first $((dense_span >> 30)) GiB ($n writes of 4 KiB)|${e:-n/a}|${t1:-}|${t2:-}|${t3:-}")
            else
                log "dense writes failed:"; tail -n 5 "$W/dense.err" >&2
                CH+=("dense|every 2nd chunk of the first $((dense_span >> 30)) GiB (writes failed)|n/a|||")
            fi
        else
            log "cannot create the 1 TiB disk:"; cat "$W/create.err" >&2
        fi
        stop_server
    fi
fi

# Tables.
fmt() { # value -> printable
    local v=$1
    [[ "$v" =~ ^[0-9]+$ ]] || { echo n/a; return; }
    if ((v >= 10000)); then printf '%d.%dk' $((v / 1000)) $((v % 1000 / 100)); else echo "$v"; fi
}
# median SERVER JOB CONNS: median over the rounds that produced a number.
median() {
    local v r vals=()
    for ((r = 1; r <= rounds; r++)); do
        v=${R["$1 $2 $3 $r"]:-}
        [[ "$v" =~ ^[0-9]+$ ]] && vals+=("$v")
    done
    ((${#vals[@]})) || { echo n/a; return; }
    printf '%s\n' "${vals[@]}" | sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.0f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { # a b -> a/b with 2 decimals, or n/a
    if [[ "$1" =~ ^[0-9]+$ && "$2" =~ ^[0-9]+$ ]] && (($2 > 0)); then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    else echo n/a; fi
}
# round_ratios A B JOB CONNS: the per-round ratios A/B (runs back to back).
round_ratios() {
    local r out=()
    for ((r = 1; r <= rounds; r++)); do
        out+=("$(ratio "${R["$1 $3 $4 $r"]:-}" "${R["$2 $3 $4 $r"]:-}")")
    done
    echo "${out[*]}"
}
geomean() { # ratios (n/a skipped) -> geometric mean, or n/a
    printf '%s\n' "$@" | awk '/^[0-9.]+$/ && $1 > 0 { s += log($1); n++ } END { if (n) printf "%.2f", exp(s / n); else print "n/a" }'
}
label() { case $1 in randwrite) echo "4k randwrite" ;; randread) echo "4k randread" ;; esac; }

table=
if want cost || want peer; then
    table+=$(
        echo "### Tracking cost, and the tracked peer"
        echo
        echo "IOPS: median of $rounds round(s). Ratios: geometric mean of the per-round ratios (each round runs"
        echo "the servers back to back per job, in alternating order)."
        echo
        echo "| job | rctd (tracking) | rctd --no-tracking | on/off (bar ≥ 0.98) | on/off per round | qemu-nbd qcow2 + bitmap | rctd/qemu-nbd (bar ≥ 2×) | rctd/qemu-nbd per round |"
        echo "|---|---:|---:|---:|---|---:|---:|---|"
        for job in "${JOBS[@]}"; do
            for c in "${CONNS[@]}"; do
                on=$(median rctd-on "$job" "$c")
                off=$(median rctd-off "$job" "$c")
                q=$(median qemu-nbd "$job" "$c")
                read -r -a per <<<"$(round_ratios rctd-on rctd-off "$job" "$c")"
                read -r -a perq <<<"$(round_ratios rctd-on qemu-nbd "$job" "$c")"
                oo=$(geomean "${per[@]}")
                rq=$(geomean "${perq[@]}")
                [[ $rq == n/a ]] || rq="${rq}×"
                if [[ $oo != n/a && $job == randwrite ]]; then
                    oo="$oo $(awk -v r="$oo" 'BEGIN { print (r >= 0.98) ? "(met)" : "(**missed**)" }')"
                fi
                if [[ $rq != n/a && $job == randwrite ]]; then
                    rq="$rq $(awk -v r="${rq%×}" 'BEGIN { print (r >= 2) ? "(met)" : "(**missed**)" }')"
                fi
                cs=$([[ $c == 1 ]] && echo "1 conn" || echo "$c conns")
                want cost || { off=; oo=; per=(); }
                want peer || { q=; rq=; perq=(); }
                echo "| $(label "$job") QD32, $cs | $(fmt "$on") | ${off:+$(fmt "$off")} | $oo | ${per[*]:-} | ${q:+$(fmt "$q")} | $rq | ${perq[*]:-} |"
            done
        done
    )
    table+=$'\n\n'
fi
if want cut; then
    table+=$(
        echo "### Checkpoints under load (rctd, 4k randwrite, ${cut_runtime}s per run)"
        echo
        # shellcheck disable=SC2086 # the run lists split on spaces
        helper cutreport full "fio 4k randwrite QD32, 4 conns" "$cut_interval_ms" ${CUT_RUNS[qd32x4]} ||
            echo "(analysis failed)"
        echo
        # shellcheck disable=SC2086
        helper cutreport fio "fio 4k randwrite QD1, 1 conn" "$cut_interval_ms" ${CUT_RUNS[qd1x1]} ||
            echo "(analysis failed)"
    )
    table+=$'\n\n'
fi
if want changes; then
    table+=$(
        echo "### Listing changes on a 1 TiB disk (GET .../changes?since=CP&limit=1000000, body read in full; 3 calls)"
        echo
        echo "| case | extents | time: median (all) | extents/s | bar |"
        echo "|---|---:|---|---:|---|"
        if ((${#CH[@]} == 0)); then
            echo "| (not measured: see the log) | n/a | n/a | n/a | |"
        fi
        for row in "${CH[@]}"; do
            IFS='|' read -r kind desc e t1 t2 t3 <<<"$row"
            if [[ "$e" =~ ^[0-9]+$ && -n "$t3" ]]; then
                med=$(printf '%s\n' "$t1" "$t2" "$t3" | sort -n | sed -n 2p)
                all=$(awk -v a="$t1" -v b="$t2" -v c="$t3" 'BEGIN { printf "%.1f, %.1f, %.1f ms", a / 1e6, b / 1e6, c / 1e6 }')
                rate=$(awk -v e="$e" -v t="$med" 'BEGIN { printf "%.1fM", e / (t / 1e9) / 1e6 }')
                if [[ $kind == sparse ]]; then
                    bar=$(awk -v t="$med" 'BEGIN { print (t < 100e6) ? "< 100 ms: met" : "< 100 ms: **missed**" }')
                else
                    bar=$(awk -v e="$e" -v t="$med" 'BEGIN { print (e / (t / 1e9) >= 1e6) ? "≥ 1M/s: met" : "≥ 1M/s: **missed**" }')
                fi
                echo "| $desc | $e | $(awk -v t="$med" 'BEGIN { printf "%.1f ms", t / 1e6 }') ($all) | $rate | $bar |"
            else
                echo "| $desc | n/a | n/a | n/a | |"
            fi
        done
    )
    table+=$'\n'
fi

if want profile; then
    table+=$(
        echo "### Where the tracked rctd's CPU goes (perf record -F 999 -p, 4k randwrite QD32, 4 conns, ${runtime}s)"
        echo
        if [[ -z "$PROF" ]]; then
            echo "(not measured: perf is missing or the run failed; see the log)"
        else
            # perf's lines: "  12.34%  [.] symbol" or "  12.34%  dso".
            pct_of() { awk -v re="$2" '$0 ~ re { gsub("%", "", $1); s += $1 } END { printf "%.2f%%", s }' "$1"; }
            echo "| samples in | share |"
            echo "|---|---:|"
            echo "| the write gates --no-tracking removes (tracker and snapshot store begin_write/end_write, gated_backend, bitmap) | $(pct_of "$PROF.sym" 'tracking::|snapshots::store_impl::(begin|end)_write|gated_backend|atomic_bitmap') |"
            echo "| all of rctd's own code (the rctd binary) | $(pct_of "$PROF.dso" '%[ \t]+rctd[ \t]*$') |"
            echo "| the kernel | $(pct_of "$PROF.dso" 'kernel') |"
            echo "| io_uring workers (iou-wrk threads: buffered writes punted by the kernel) | $(pct_of "$PROF.comm" 'iou-wrk') |"
            echo "| hottest symbols | $(head -n 3 "$PROF.sym" | awk '{ p = $1; $1 = ""; $2 = ""; sub(/^ +/, ""); sub(/( +-)+ *$/, ""); printf "%s%s %s", (NR > 1 ? "; " : ""), $0, p }') |"
        fi
    )
    table+=$'\n\n'
fi

header=$(
    echo "# Change tracking benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "$env_lines"
    echo "- servers run one at a time; fio shares the same CPUs. Compare only ratios measured side by side."
)

echo
echo "$table"
if [[ -z "$out" ]]; then
    mkdir -p "$ROOT/build/bench"
    out=$ROOT/build/bench/tracking-$(date -u +%Y%m%dT%H%M%SZ).md
fi
mkdir -p "$(dirname "$out")"
{
    echo "$header"
    echo
    echo "$table"
} >"$out"
echo
echo "results written to $out"
exit
}
