# Shared helpers for the NBD interop tests; every test sources this file.
#
# Environment:  RCTD, RCTCTL   the binaries under test (set by meson; default
#                              build/daemon/rctd and build/tools/rctctl)
# Provides:     $T             a private temp dir, removed on exit
#               $STATE         $T/state, the state dir start_rctd uses
#               say/ok/fail/skip/requires, start_rctd/stop_rctd (and the
#               _at DIR forms, crash_rctd_at), rctctl,
#               uri, nbdsh, py, expect_rc, track_mount, track_pid
#               PYTHONPATH   the tests' Python package rcttest (tests/rcttest)
# Exit codes follow meson: 0 pass, 77 skip, anything else fail.
set -euo pipefail

_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$_lib_dir/../.." && pwd)
: "${RCTD:=$REPO_ROOT/build/daemon/rctd}"
: "${RCTCTL:=$REPO_ROOT/build/tools/rctctl}"
# Absolute paths: the tests cd into their temp dir.
[[ "$RCTD" != */* ]] || RCTD=$(realpath -m "$RCTD")
[[ "$RCTCTL" != */* ]] || RCTCTL=$(realpath -m "$RCTCTL")
export RCTD RCTCTL
TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)

# How long a daemon gets to answer its first `rctctl list`.
: "${RCT_START_TIMEOUT:=20}"

say() { printf '== %s: %s\n' "$TEST_NAME" "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() { printf 'FAIL: %s: %s\n' "$TEST_NAME" "$*" >&2; exit 1; }

requires() {
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || skip "$cmd is not installed"
    done
}

# The system Python has the nbd module; pyenv's python3 (first on PATH here)
# does not. The tests' Python lives in tests/rcttest (RCT_SOURCE_ROOT is the
# source tree, set by meson): `py -m rcttest.interop.NAME ...`.
: "${RCT_SOURCE_ROOT:=$REPO_ROOT}"
export PYTHONPATH=$RCT_SOURCE_ROOT/tests${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1  # nothing written into the source tree
py() { /usr/bin/python3 "$@"; }
nbdsh() { PATH=/usr/bin:$PATH command nbdsh "$@"; }
# bg_nbdsh ARGS... &: like nbdsh, but exec'd so that $! is nbdsh itself.
bg_nbdsh() { PATH=/usr/bin:$PATH exec nbdsh "$@"; }

# expect_rc WANT CMD...: run CMD, show its output, fail unless it exits WANT.
expect_rc() {
    local want=$1 rc=0 out
    shift
    out=$("$@" 2>&1) || rc=$?
    [[ -z "$out" ]] || printf '%s\n' "$out" | sed 's/^/   | /'
    ((rc == want)) || fail "'$*' exited $rc, expected $want"
    ok "'$*' exited $rc"
}

[[ -x "$RCTD" ]] || fail "RCTD=$RCTD is not an executable (build first: ninja -C build)"
[[ -x "$RCTCTL" ]] || fail "RCTCTL=$RCTCTL is not an executable (build first: ninja -C build)"

T=$(mktemp -d "${TMPDIR:-/tmp}/rct-${TEST_NAME}.XXXXXX")
STATE=$T/state
# Tools that drop files in the working directory (fio's verify state, core
# dumps) drop them here, not in the source tree.
cd "$T"
declare -A _DAEMON_PIDS=()  # state dir -> pid
_MOUNTS=()                  # mount points, unmounted in reverse order
_PIDS=()                    # background helpers (nbdfuse, nbdsh, ...)

track_mount() { _MOUNTS+=("$1"); }
track_pid() { _PIDS+=("$1"); }

# _stop_pid PID: SIGTERM, then SIGKILL after 5 s. Sets _STOP_RC to its exit
# status (when it is our child) or 0.
_stop_pid() {
    local pid=$1 i
    _STOP_RC=0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || _STOP_RC=$?; return 0; }
    # Direct children too, in case PID is a subshell wrapping the real process.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   warning: pid $pid ignored SIGTERM for 5 s; sending SIGKILL" >&2
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || _STOP_RC=$?
}

_cleanup() {
    local rc=$? i m pid dir
    set +e
    if [[ -n "${_WATCHDOG:-}" ]]; then
        pkill -TERM -P "$_WATCHDOG" 2>/dev/null
        kill -TERM "$_WATCHDOG" 2>/dev/null
        wait "$_WATCHDOG" 2>/dev/null
    fi
    if [[ -e "$T/.timed-out" ]]; then
        echo "FAIL: $TEST_NAME: timed out after ${RCT_TEST_TIMEOUT}s" >&2
        rc=1
    fi
    for ((i = ${#_MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${_MOUNTS[i]}
        if mountpoint -q "$m" 2>/dev/null; then
            umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        fi
    done
    for pid in "${_PIDS[@]}"; do
        _stop_pid "$pid"
    done
    for dir in "${!_DAEMON_PIDS[@]}"; do
        _stop_pid "${_DAEMON_PIDS[$dir]}"
        # A live upgrade's daemon is not this shell's child: find it by its
        # arguments (it runs with the same ones).
        for pid in $(pgrep -f -- "--state-dir $dir( |\$)"); do
            _stop_pid "$pid"
        done
    done
    if ((rc != 0 && rc != 77)); then
        for f in "$T"/*.log; do
            [[ -f "$f" ]] || continue
            echo "---- last lines of $f ----" >&2
            tail -n 40 "$f" >&2
        done
    fi
    if [[ -n "${KEEP_TMP:-}" ]]; then
        echo "kept $T" >&2
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Watchdog: a client that hangs (a daemon that stops answering) would
# otherwise sit until meson's timeout kills everything without a word. After
# RCT_TEST_TIMEOUT seconds, kill this shell's children so the hung command
# fails here, the test reports it and the logs get printed.
: "${RCT_TEST_TIMEOUT:=270}"
(
    trap - EXIT INT TERM
    sleep "$RCT_TEST_TIMEOUT" &
    wait $! || exit 0
    echo "TIMEOUT: $TEST_NAME ran longer than ${RCT_TEST_TIMEOUT}s; killing its commands" >&2
    : >"$T/.timed-out"
    for child in $(pgrep -P $$); do
        [[ "$child" == "$BASHPID" ]] || kill -TERM "$child" 2>/dev/null
    done
) &
_WATCHDOG=$!

# start_rctd_at DIR [ARGS...]: start $RCTD on state dir DIR (log in
# $T/rctd-<basename DIR>.log) and wait until `rctctl list` answers.
start_rctd_at() {
    local dir=$1
    shift
    mkdir -p "$dir"
    local log=$T/rctd-$(basename "$dir").log
    echo "---- $RCTD --state-dir $dir $* ----" >>"$log"
    "$RCTD" --state-dir "$dir" "$@" </dev/null >>"$log" 2>&1 &
    local pid=$!
    _DAEMON_PIDS[$dir]=$pid
    local deadline=$((SECONDS + RCT_START_TIMEOUT))
    until "$RCTCTL" --state-dir "$dir" list >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            unset "_DAEMON_PIDS[$dir]"
            tail -n 30 "$log" >&2
            fail "rctd exited during startup (state dir $dir)"
        fi
        ((SECONDS < deadline)) || fail "rctd did not answer 'rctctl list' within ${RCT_START_TIMEOUT}s"
        sleep 0.1
    done
    RCTD_PID=$pid
}

# stop_rctd_at DIR: SIGTERM (SIGKILL after 5 s) the daemon started on DIR;
# sets RCTD_EXIT to its exit status.
stop_rctd_at() {
    local dir=$1
    local pid=${_DAEMON_PIDS[$dir]:-}
    [[ -n "$pid" ]] || fail "stop_rctd_at: no daemon running on $dir"
    _stop_pid "$pid"
    RCTD_EXIT=$_STOP_RC
    unset "_DAEMON_PIDS[$dir]"
}

# crash_rctd_at DIR: SIGKILL the daemon started on DIR (no clean shutdown).
crash_rctd_at() {
    local dir=$1
    local pid=${_DAEMON_PIDS[$dir]:-}
    [[ -n "$pid" ]] || fail "crash_rctd_at: no daemon running on $dir"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "_DAEMON_PIDS[$dir]"
}

# adopt_rctd PID: after a live upgrade, the daemon serving $STATE is PID
# (not a child of this shell); stop_rctd and daemon_alive then mean it.
adopt_rctd() {
    _DAEMON_PIDS[$STATE]=$1
    RCTD_PID=$1
}

start_rctd() { start_rctd_at "$STATE" "$@"; }
stop_rctd() { stop_rctd_at "$STATE"; }
rctctl() { "$RCTCTL" --state-dir "$STATE" "$@"; }
uri() { printf 'nbd+unix:///%s?socket=%s/nbd.sock\n' "$1" "$STATE"; }

# daemon_alive: fail unless the daemon on $STATE is still running.
daemon_alive() {
    local pid=${_DAEMON_PIDS[$STATE]:-}
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || fail "rctd is no longer running${1:+ after $1}"
}

# wait_for_file PATH [SECONDS]: bounded wait for PATH to appear.
wait_for_file() {
    local path=$1 limit=${2:-20}
    local deadline=$((SECONDS + limit))
    until [[ -s "$path" ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
