#!/bin/bash
# On a kernel without the ublk driver (this machine's: see
# ../shared/reference/environment.md), attaching fails cleanly: a non-zero
# exit, a message naming the ublk_drv module, an `unsupported` API error,
# nothing recorded, and the disk keeps being served over NBD. The guest
# suite (tests/guest) covers the kernel that has the driver.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo curl
[[ ! -e /dev/ublk-control ]] || skip "this kernel has the ublk driver; tests/guest covers attach"

start_rctd
rctctl create d --size 16M >/dev/null
stop_rctd
start_rctd --ublk d

say "rctctl attach --ublk without the driver"
rc=0
msg=$(rctctl attach d --ublk 2>&1) || rc=$?
printf '%s\n' "$msg" | sed 's/^/   | /'
((rc == 1)) || fail "attach exited $rc, expected 1"
[[ "$msg" == *ublk_drv* ]] || fail "the message does not name the ublk_drv module"
ok "exit 1, names ublk_drv"

body=$(curl -s --unix-socket "$STATE/control.sock" -X POST -w '\n%{http_code}' http://localhost/v1/disks/d/ublk)
[[ "$(tail -1 <<<"$body")" == 501 ]] || fail "POST .../ublk answered $(tail -1 <<<"$body"), expected 501"
[[ "$body" == *'"unsupported"'* ]] || fail "error code is not 'unsupported': $body"
ok "API: 501 unsupported"

[[ -z "$(ls -A "$STATE/ublk")" ]] || fail "a failed attach left a record in $STATE/ublk"
[[ "$(rctctl --json info d)" == *'"ublk": null'* ]] || fail "info shows a ublk device"
expect_rc 3 "$RCTCTL" --state-dir "$STATE" detach d
ok "nothing recorded; detach says not attached (exit 3)"

say "--ublk at start was logged and the daemon serves on"
grep "cannot attach disk d at start" "$T/rctd-state.log" | grep -q ublk_drv ||
    fail "no log line naming ublk_drv for the failed --ublk d at start"
nbdinfo --size "$(uri d)" | grep -qx 16777216 || fail "NBD no longer serves d"
ok "logged; NBD serves d"
