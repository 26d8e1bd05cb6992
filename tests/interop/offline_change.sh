#!/bin/bash
# A data file changed while rctd was not running must not be silently
# under-reported: after a clean stop, an edit of data.raw behind the daemon's
# back invalidates tracking (new generation, old tokens say "full backup"),
# and `rctctl info` says why. A clean stop and start without an edit keeps
# every token valid and the change set exact.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires qemu-io

start_rctd
rctctl create d --size 16M >/dev/null
U=$(uri d)
qemu-io -f raw "$U" -c 'w -P 0x11 0 64k' >/dev/null
TOKEN=$(rctctl checkpoint d --name before 2>/dev/null | head -1)
qemu-io -f raw "$U" -c 'w -P 0x22 1M 4k' >/dev/null

say "clean restart keeps the token and the exact change set"
stop_rctd
start_rctd
got=$(rctctl changes d --since "$TOKEN")
[[ "$got" == "1048576 65536" ]] || fail "after a clean restart, changes were '$got', expected '1048576 65536'"
ok "changes --since token: $got"

say "an offline edit of the data file invalidates tracking"
stop_rctd
printf '\x33%.0s' $(seq 4096) | dd of="$STATE/disks/d/data.raw" bs=4096 seek=100 conv=notrunc status=none
start_rctd
expect_rc 6 "$RCTCTL" --state-dir "$STATE" changes d --since "$TOKEN"
msg=$(rctctl changes d --since "$TOKEN" 2>&1 || true)
[[ "$msg" == *"full backup"* ]] || fail "message does not ask for a full backup: $msg"
info=$(rctctl info d)
printf '%s\n' "$info" | sed 's/^/   | /'
[[ "$info" == *"modified while rctd was not running"* ]] || fail "rctctl info does not say why tracking was reset"
ok "the token is refused and info explains why"

say "tracking goes on in the new generation"
T2=$(rctctl checkpoint d --name after 2>/dev/null | head -1)
qemu-io -f raw "$U" -c 'w 2M 4k' >/dev/null
got=$(rctctl changes d --since "$T2")
[[ "$got" == "2097152 65536" ]] || fail "new generation changes were '$got'"
ok "changes since the new checkpoint: $got"
say "PASS"
