# Helpers for the guest scenarios (bash, inside the qemu guest); every
# scenario sources this file.
#
# Reporting: the host (run.sh) reads the serial console. Each check that
# passed prints "RCT-STEP ok WHAT"; facts worth reporting but not asserted
# print "RCT-INFO ...". The scenario ends with exactly one
# "RCT-RESULT pass|fail|skip REASON" line. Any command that fails outside an
# `if`/`||` fails the scenario with its line number (ERR trap).
#
# Provides: step/info/fail/skip/pass, load_module, start_rctd/stop_rctd/
#           kill_rctd, rctctl, write_files, check_files, nbd_connect,
#           nbd_disconnect, wait_for, covers
set -eEuo pipefail

SCENARIO=$(basename "$0" .sh)
STATE=/tmp/state
RCTD_LOG=/tmp/rctd.log
RCTD_PID=
_RESULT_SENT=

step() { echo "RCT-STEP ok $*"; }
info() { echo "RCT-INFO $*"; }
_result() {
    _RESULT_SENT=1
    echo "RCT-RESULT $*"
}
fail() {
    trap - ERR
    # Show the daemon's last words: most failures are explained there.
    if [[ -s "$RCTD_LOG" ]]; then
        echo "---- last lines of $RCTD_LOG ----"
        tail -n 30 "$RCTD_LOG"
    fi
    _result "fail $*"
    exit 1
}
skip() { _result "skip $*"; exit 77; }
pass() { _result "pass ${*:-$SCENARIO}"; exit 0; }

trap 'fail "line $LINENO: \"$BASH_COMMAND\" exited $?"' ERR
trap '[[ -n "$_RESULT_SENT" ]] || _result "fail scenario ended without a result (exit $?)"' EXIT

# indent CMD...: run CMD with its output indented, so it reads apart from the
# RCT-* lines.
indent() { "$@" 2>&1 | sed 's/^/   | /'; }

# load_module NAME [PARAMS...]: insmod a module the host packed (kernel.sh
# lists them with dependencies first in /rct/modules/order).
load_module() {
    local name=$1
    shift
    grep -q "^${name} " /proc/modules && return 0
    insmod "/rct/modules/$name.ko" "$@" || fail "insmod $name failed"
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
    local limit=$1 i
    shift
    for ((i = 0; i < limit * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

rctctl() { command rctctl --state-dir "$STATE" "$@"; }

# start_rctd [ARGS...]: rctd on $STATE in its own mount namespace (a daemon
# sharing a namespace with mounts of its own devices can deadlock on exit;
# ublk-notes 5.7), waits until its control API answers.
start_rctd() {
    mkdir -p "$STATE"
    echo "---- rctd --state-dir $STATE $* ----" >>"$RCTD_LOG"
    unshare -m --propagation private rctd --state-dir "$STATE" "$@" </dev/null >>"$RCTD_LOG" 2>&1 &
    RCTD_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        rctctl list >/dev/null 2>&1 && return 0
        kill -0 "$RCTD_PID" 2>/dev/null || fail "rctd exited during startup"
        sleep 0.1
    done
    fail "rctd did not answer 'rctctl list' within 30 s"
}

# stop_rctd: SIGTERM and wait (SIGKILL after 10 s); RCTD_EXIT = its status.
stop_rctd() {
    local i
    kill -TERM "$RCTD_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$RCTD_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$RCTD_PID" 2>/dev/null || true
    RCTD_EXIT=0
    wait "$RCTD_PID" 2>/dev/null || RCTD_EXIT=$?
    RCTD_PID=
}

# kill_rctd: SIGKILL, no clean shutdown.
kill_rctd() {
    kill -KILL "$RCTD_PID" 2>/dev/null || true
    wait "$RCTD_PID" 2>/dev/null || true
    RCTD_PID=
}

# write_files DIR PREFIX N SUMS: N files PREFIX1..PREFIXN of random data of
# varied sizes (4 KiB .. a few MiB, so some span many extents) in DIR; their
# "sha256  name" lines are appended to SUMS.
write_files() {
    local dir=$1 prefix=$2 n=$3 sums=$4 i kib
    for ((i = 1; i <= n; i++)); do
        kib=$(((RANDOM % 2048) + 4))
        dd if=/dev/urandom of="$dir/$prefix$i" bs=1024 count="$kib" status=none
        (cd "$dir" && sha256sum "$prefix$i") >>"$sums"
    done
}

# check_files DIR SUMS WHAT: DIR holds exactly the files named in SUMS
# (lost+found aside), each with its checksum.
check_files() {
    local dir=$1 sums=$2 what=$3
    (cd "$dir" && find . -type f ! -path './lost+found/*' | sed 's|^\./||' | sort) >/tmp/have.txt
    awk '{print $2}' "$sums" | sort >/tmp/want.txt
    if ! cmp -s /tmp/have.txt /tmp/want.txt; then
        diff /tmp/want.txt /tmp/have.txt | sed 's/^/   | /' || true
        fail "$what: the file set differs (- expected, + found)"
    fi
    (cd "$dir" && sha256sum -c -s "$sums") || fail "$what: checksums differ"
    step "$what: exactly the $(wc -l <"$sums") expected files, checksums match"
}

# covers CHANGES FILE...: every block of every FILE (FIEMAP through
# filefrag, in 4 KiB units: the scenarios make ext4 with -b 4096) lies inside a byte range listed in
# CHANGES ("offset length" lines, as rctctl changes prints them).
covers() {
    local changes=$1 f bs=4096
    shift
    for f in "$@"; do
        # filefrag -v -b$bs ... rows: "ext: logical..: physical_start..physical_end: length: ..."
        filefrag -v -b"$bs" "$f" | awk -v bs="$bs" -F'[:.]+' \
            '/^ *[0-9]+:/ {gsub(/ /, ""); print $4 * bs, ($5 - $4 + 1) * bs}'
    done >/tmp/extents.txt
    [[ -s /tmp/extents.txt ]] || fail "filefrag found no extents for $*"
    awk 'NR == FNR {o[NR] = $1; e[NR] = $1 + $2; n = NR; next}
         {lo = $1; hi = $1 + $2; ok = 0
          for (i = 1; i <= n; i++) if (o[i] <= lo && hi <= e[i]) {ok = 1; break}
          if (!ok) {print "   uncovered extent at", lo, "length", $2; bad = 1}}
         END {exit bad}' "$changes" /tmp/extents.txt
}

# nbd_connect DEV EXPORT [OPTS...]: attach kernel nbd device DEV to EXPORT
# over rctd's Unix socket and wait until it has a size.
nbd_connect() {
    local dev=$1 export=$2
    shift 2
    indent nbd-client -unix "$STATE/nbd.sock" "$dev" -N "$export" -b 4096 "$@" ||
        fail "nbd-client $dev -N $export failed"
    wait_for 10 test "$(cat "/sys/block/${dev#/dev/}/size")" -gt 0 ||
        fail "$dev has no size after nbd-client"
}

nbd_disconnect() {
    local dev=$1
    indent nbd-client -d "$dev"
    wait_for 10 test "$(cat "/sys/block/${dev#/dev/}/size")" -eq 0 ||
        fail "$dev still has a size after nbd-client -d"
}
