# Helpers for the guest scenarios (bash, inside the qemu guest); every
# scenario sources this file.
#
# Reporting: the host (run.sh) reads the serial console. Each check that
# passed prints "RCT-STEP ok WHAT"; facts worth reporting but not asserted
# print "RCT-INFO ...". The scenario ends with exactly one
# "RCT-RESULT pass|fail|skip REASON" line that counts (a failure inside a
# command substitution reports first; run.sh takes the first result). Any command that fails outside an
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

# The report goes to stderr (the console, like stdout): functions whose
# stdout is captured, as in DEV=$(ublk_attach d), can still report.
step() { echo "RCT-STEP ok $*" >&2; }
info() { echo "RCT-INFO $*" >&2; }
_result() {
    _RESULT_SENT=1
    echo "RCT-RESULT $*" >&2
}
fail() {
    trap - ERR
    # Show the daemon's last words: most failures are explained there.
    if [[ -s "$RCTD_LOG" ]]; then
        echo "---- last lines of $RCTD_LOG ----" >&2
        tail -n 30 "$RCTD_LOG" >&2
    fi
    _result "fail $*"
    exit 1
}
skip() { _result "skip $*"; exit 77; }
pass() { _result "pass ${*:-$SCENARIO}"; exit 0; }

trap 'fail "line $LINENO: \"$BASH_COMMAND\" exited $?"' ERR
trap '[[ -n "$_RESULT_SENT" ]] || _result "fail scenario ended without a result (exit $?)"' EXIT

# indent CMD...: run CMD with its output indented, so it reads apart from the
# RCT-* lines (on stderr, so it is never captured by accident).
indent() { "$@" 2>&1 | sed 's/^/   | /' >&2; }

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
# The new namespace starts as a copy of ours: a filesystem mounted on an
# nbd or ublk device before a restart would be copied in, pinned by rctd
# itself (our umount does not reach a private copy; the filesystem stays
# alive and `rctctl detach` of its device then hung here). So the copies of
# such mounts are detached (umount -l) before rctd starts.
start_rctd() {
    mkdir -p "$STATE"
    echo "---- rctd --state-dir $STATE $* ----" >>"$RCTD_LOG"
    # shellcheck disable=SC2016
    unshare -m --propagation private sh -c '
        awk '\''$1 ~ /^\/dev\/(ublkb|nbd)[0-9]/ {print $2}'\'' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m"; done
        exec rctd "$@"' rctd --state-dir "$STATE" "$@" </dev/null >>"$RCTD_LOG" 2>&1 &
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
    # Merge touching ranges first: one file extent may span two listed ranges.
    sort -n -k1,1 "$changes" | awk '
        NR == 1 {o = $1; e = $1 + $2; next}
        $1 <= e {if ($1 + $2 > e) e = $1 + $2; next}
        {print o, e - o; o = $1; e = $1 + $2}
        END {if (NR) print o, e - o}' >/tmp/changes-merged.txt
    if ! awk 'NR == FNR {o[NR] = $1; e[NR] = $1 + $2; n = NR; next}
         {lo = $1; hi = $1 + $2; ok = 0
          for (i = 1; i <= n; i++) if (o[i] <= lo && hi <= e[i]) {ok = 1; break}
          if (!ok) {print "   uncovered extent at", lo, "length", $2; bad = 1}}
         END {exit bad}' /tmp/changes-merged.txt /tmp/extents.txt; then
        echo "   changes (merged):"; sed 's/^/   | /' /tmp/changes-merged.txt
        echo "   file extents:"; sed 's/^/   | /' /tmp/extents.txt
        return 1
    fi
}

# has_size DEV: the block device has a non-zero size.
has_size() { [[ $(cat "/sys/block/${1#/dev/}/size") -gt 0 ]]; }

# nbd_connect DEV EXPORT [OPTS...]: attach kernel nbd device DEV to EXPORT
# over rctd's Unix socket and wait until it has a size.
nbd_connect() {
    local dev=$1 export=$2
    shift 2
    indent nbd-client -unix "$STATE/nbd.sock" "$dev" -N "$export" -b 4096 "$@" ||
        fail "nbd-client $dev -N $export failed"
    wait_for 10 has_size "$dev" ||
        fail "$dev has no size after nbd-client"
}

nbd_disconnect() {
    local dev=$1
    indent nbd-client -d "$dev"
    wait_for 10 eval '! has_size "$dev"' ||
        fail "$dev still has a size after nbd-client -d"
}

# cut_workload DEV MNT DISK SIZE: the checkpoint/snapshot workload shared by
# the nbd and ublk scenarios, on a fresh ext4 on DEV (which serves DISK):
#   files A, sync, checkpoint c1; files B, fsfreeze + snapshot s1 (a frozen
#   ext4 is clean on the device: journal flushed), unfreeze; files C, all of
#   a1 rewritten, a2 deleted, sync. Asserts `changes DISK --since c1` is
#   non-empty, inside the disk, and covers every block of the files written
#   after c1. Leaves MNT unmounted and /tmp/sums-s1 naming the files (and
#   checksums) of the cut s1: A and B.
cut_workload() {
    local dev=$1 mnt=$2 disk=$3 size=$4
    rm -f /tmp/sums-A /tmp/sums-B /tmp/sums-C
    indent mkfs.ext4 -q -b 4096 -E nodiscard "$dev"
    mkdir -p "$mnt"
    mount -t ext4 "$dev" "$mnt"
    write_files "$mnt" a 4 /tmp/sums-A
    sync
    step "ext4 on $dev; files A written and synced"

    indent rctctl checkpoint "$disk" --name c1
    write_files "$mnt" b 4 /tmp/sums-B
    # busybox fsfreeze takes only the long options.
    fsfreeze --freeze "$mnt"
    local rc=0
    indent rctctl snapshot "$disk" --name s1 || rc=$?
    fsfreeze --unfreeze "$mnt"
    ((rc == 0)) || fail "rctctl snapshot $disk --name s1 exited $rc"
    step "checkpoint c1 after A; files B; snapshot s1 under fsfreeze"

    write_files "$mnt" c 3 /tmp/sums-C
    # Rewrite all of a1 in place (ext4 keeps its blocks): every one of them
    # is then written after c1.
    dd if=/dev/urandom of="$mnt/a1" bs=1024 count=$(($(stat -c %s "$mnt/a1") / 1024)) \
        conv=notrunc status=none
    rm "$mnt/a2"
    sync
    rctctl changes "$disk" --since c1 >/tmp/changes.txt
    [[ -s /tmp/changes.txt ]] || fail "changes --since c1 is empty"
    awk -v size="$size" '$1 < 0 || $2 <= 0 || $1 + $2 > size {print "   bad extent:", $0; bad = 1} END {exit bad}' \
        /tmp/changes.txt || fail "changes --since c1 lists ranges outside the disk"
    covers /tmp/changes.txt "$mnt"/b* "$mnt"/c* "$mnt/a1" ||
        fail "changes --since c1 misses blocks of files written after c1"
    step "changes --since c1: $(wc -l </tmp/changes.txt) extents, $(awk '{s += $2} END {print s}' /tmp/changes.txt) bytes, all in the disk, covering every block of B, C and the rewritten a1"
    umount "$mnt"
    cat /tmp/sums-A /tmp/sums-B >/tmp/sums-s1
}

# check_cut DEV WHAT [ro]: DEV holds the cut s1 of cut_workload: e2fsck -fn
# is clean and the filesystem has exactly the files of A and B (old a1, a2
# present, no C). With ro, mount read-only without journal replay.
check_cut() {
    local dev=$1 what=$2 opts=
    [[ "${3:-}" != ro ]] || opts=ro,noload
    indent e2fsck -fn "$dev" || fail "e2fsck -fn on $what ($dev) found errors"
    mkdir -p /mnt/check
    mount -t ext4 ${opts:+-o "$opts"} "$dev" /mnt/check
    check_files /mnt/check /tmp/sums-s1 "$what on $dev, e2fsck -fn clean"
    umount /mnt/check
}

# has_attach: this rctctl has the ublk frontend's `attach` command.
has_attach() { command rctctl --help 2>/dev/null | grep -qE '^ +attach( |$)'; }

# ublk_attach DISK: `rctctl attach DISK --ublk` must print the block device
# (/dev/ublkbN) and exit 0; the device must appear with the disk's size.
# Prints the device path.
ublk_attach() {
    local disk=$1 dev
    dev=$(rctctl attach "$disk" --ublk) || fail "rctctl attach $disk --ublk exited $?"
    [[ "$dev" =~ ^/dev/ublkb[0-9]+$ ]] || fail "rctctl attach $disk --ublk printed '$dev', not /dev/ublkbN"
    wait_for 10 test -b "$dev" || fail "$dev did not appear after rctctl attach $disk --ublk"
    wait_for 10 has_size "$dev" || fail "$dev has no size after rctctl attach $disk --ublk"
    echo "$dev"
}

# ublk_detach DISK DEV: `rctctl detach DISK` exits 0 and DEV disappears.
ublk_detach() {
    local disk=$1 dev=$2
    indent rctctl detach "$disk" || fail "rctctl detach $disk exited $?"
    wait_for 10 eval '[[ ! -e "$dev" ]]' || fail "$dev still exists after rctctl detach $disk"
}

# block_stat DEV FIELD: a counter from /sys/block/DEV/stat (1 = reads
# completed, 5 = writes completed).
block_stat() { awk -v f="$2" '{print $f}' "/sys/block/${1#/dev/}/stat"; }
