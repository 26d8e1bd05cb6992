#!/bin/bash
# Run one guest scenario: boot Debian's 6.12 cloud kernel under qemu TCG with
# an initramfs carrying rctd, rctctl and the tools, run
# scenarios/SCENARIO.sh inside, and turn its serial-console report into an
# exit status.
#
# Usage: run.sh SCENARIO
# Exit:  0 pass, 1 fail (including a timeout or a guest that never reports),
#        77 skip (qemu missing, the kernel cannot be fetched, the scenario
#        says so), with the reason printed.
#
# Environment:
#   RCTD, RCTCTL        binaries under test (default build/daemon/rctd,
#                       build/tools/rctctl)
#   RCT_GUEST_CACHE     kernel cache (default /var/cache/rct-guest; kernel.sh)
#   RCT_GUEST_TIMEOUT   seconds before the guest is killed (default 300)
#   RCT_GUEST_MEM       guest memory in MiB (default 2048)
#   RCT_POWERCUT        the power-cut scenario's helper (default
#                       build/tests/guest/rct-powercut)
#   RCT_<SCENARIO>_*    passed into the guest's environment under the same
#                       name (e.g. RCT_POWERCUT_POINTS for scenario powercut)
#   KEEP_TMP=1          keep the work dir (initramfs, console log)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$here/../.." && pwd)
: "${RCTD:=$REPO_ROOT/build/daemon/rctd}"
: "${RCTCTL:=$REPO_ROOT/build/tools/rctctl}"
: "${RCT_POWERCUT:=$REPO_ROOT/build/tests/guest/rct-powercut}"
RCTD=$(realpath -m "$RCTD")
RCTCTL=$(realpath -m "$RCTCTL")
RCT_POWERCUT=$(realpath -m "$RCT_POWERCUT")
export RCTD RCTCTL RCT_POWERCUT
: "${RCT_GUEST_TIMEOUT:=300}"
: "${RCT_GUEST_MEM:=2048}"

SCENARIO=${1:?usage: run.sh SCENARIO}
say() { printf '== guest/%s: %s\n' "$SCENARIO" "$*"; }
skip() { printf 'SKIP: guest/%s: %s\n' "$SCENARIO" "$*"; exit 77; }
fail() { printf 'FAIL: guest/%s: %s\n' "$SCENARIO" "$*" >&2; exit 1; }

[[ -f "$here/scenarios/$SCENARIO.sh" ]] || fail "no scenario $here/scenarios/$SCENARIO.sh"
[[ -x "$RCTD" ]] || fail "RCTD=$RCTD is not an executable (build first)"
[[ -x "$RCTCTL" ]] || fail "RCTCTL=$RCTCTL is not an executable (build first)"

# check_host: the host tools the harness itself needs; a missing one is a
# skip (scripts/deps installs them), not a failure of rct.
check_host() {
    local cmd
    for cmd in qemu-system-x86_64 timeout cpio ldd xz dpkg-deb apt-get; do
        command -v "$cmd" >/dev/null 2>&1 || skip "$cmd is not installed (scripts/deps installs it)"
    done
    # The guest has no libraries of its own for busybox: it must be static.
    if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
        skip "/bin/busybox is missing or not static (install busybox-static)"
    fi
    local t
    for t in bash nbd-client mkfs.ext4 e2fsck filefrag fio; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed (the guest carries the host's copy)"
    done
}

# Scenarios that need an rctctl feature declare it in a "# requires-rctctl:
# SUBCOMMAND" header line; without it the scenario skips before booting.
check_requirements() {
    local need
    need=$(sed -n 's/^# requires-rctctl: *//p' "$here/scenarios/$SCENARIO.sh")
    [[ -n "$need" ]] || return 0
    "$RCTCTL" --help 2>/dev/null | grep -qE "^ +$need( |$)" ||
        skip "this rctctl has no '$need' command (rctctl --help lists none)"
}

check_host
check_requirements

work=$(mktemp -d "${TMPDIR:-/tmp}/rct-guest-$SCENARIO.XXXXXX")
cleanup() {
    if [[ -n "${KEEP_TMP:-}" ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

start=$SECONDS
rc=0
kdir=$("$here/kernel.sh" 2>"$work/kernel.log") || rc=$?
sed 's/^/   | /' "$work/kernel.log"
((rc != 77)) || skip "the guest kernel is unavailable: $(sed -n 's/^SKIP: //p' "$work/kernel.log" | tail -1)"
((rc == 0)) || fail "kernel.sh failed (exit $rc)"
say "kernel $(cat "$kdir/version") from $kdir"

"$here/initramfs.sh" "$kdir" "$work/initrd.cpio"
say "initramfs $(($(stat -c %s "$work/initrd.cpio") / 1048576)) MiB built in $((SECONDS - start)) s"

# The console is both logged and filtered live: RCT-* lines (the scenario's
# steps) and kernel warnings show as they happen; the whole log is printed
# on failure. stdin is /dev/null: qemu must not read the terminal.
# The scenario's own settings: RCT_<SCENARIO>_* reach the guest as
# rct.env.NAME=VALUE on the kernel command line (init.sh exports them).
guest_env=
prefix="RCT_${SCENARIO^^}_"
for v in $(compgen -v "$prefix" || true); do
    [[ "${!v}" =~ ^[A-Za-z0-9._:,/=+-]*$ ]] || fail "$v='${!v}' has characters a kernel command line cannot carry"
    guest_env+=" rct.env.$v=${!v}"
done

boot_start=$SECONDS
set +e
timeout --kill-after=10 "$RCT_GUEST_TIMEOUT" \
    qemu-system-x86_64 -accel tcg -cpu max -m "$RCT_GUEST_MEM" -smp 2 \
    -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$kdir/vmlinuz" -initrd "$work/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1 rct.scenario=$SCENARIO$guest_env" \
    </dev/null 2>&1 | tr -d '\r' | sed -u 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' | tee "$work/console.log" |
    grep --line-buffered -E 'RCT-|^   \| |BUG|WARNING|Call Trace|blocked for more than|Kernel panic'
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - boot_start))

show_console() {
    echo "---- guest console (last 80 lines of $work/console.log) ----" >&2
    tail -n 80 "$work/console.log" >&2
}

if ((qemu_rc == 124 || qemu_rc == 137)); then
    show_console
    fail "the guest did not finish within ${RCT_GUEST_TIMEOUT}s (RCT_GUEST_TIMEOUT)"
fi
result=$(grep -E '^RCT-RESULT ' "$work/console.log" | head -1 || true)
case "$result" in
    "RCT-RESULT pass"*) say "pass (guest ran ${elapsed}s, ${SECONDS}s in all)" ;;
    "RCT-RESULT skip"*) skip "${result#RCT-RESULT skip }" ;;
    "RCT-RESULT fail"*)
        show_console
        fail "${result#RCT-RESULT fail } (guest ran ${elapsed}s)"
        ;;
    *)
        show_console
        fail "the guest reported no result (qemu exit $qemu_rc after ${elapsed}s)"
        ;;
esac
