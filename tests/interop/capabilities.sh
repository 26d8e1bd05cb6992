#!/bin/bash
# What rctd advertises: nbdinfo --json on an export, --list over several disks,
# and systemd socket activation (nbdinfo -- [ rctd ... ]).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo

start_rctd
rctctl create alpha --size 1G
rctctl create beta --size 64M
rctctl create gamma --size 3M

say "nbdinfo --json $(uri alpha)"
nbdinfo --json "$(uri alpha)" >"$T/alpha.json" || fail "nbdinfo --json failed"
cat "$T/alpha.json"
py -m rcttest.interop.capabilities export "$T/alpha.json" alpha $((1 << 30)) ||
    fail "capabilities differ from what rctd must advertise"

say "nbdinfo --size and --can/--is exit codes"
got=$(nbdinfo --size "$(uri beta)") || fail "nbdinfo --size failed"
[[ "$got" == $((64 << 20)) ]] || fail "beta: nbdinfo --size printed '$got', want $((64 << 20))"
ok "beta is $got bytes"
nbdinfo --can multi-conn "$(uri beta)" || fail "nbdinfo --can multi-conn: not advertised"
ok "multi-conn advertised"
rc=0; nbdinfo --is read-only "$(uri beta)" || rc=$?
((rc == 2)) || fail "nbdinfo --is read-only exited $rc (0 = read-only, 1 = error), want 2 (writable)"
ok "not read-only"

say "nbdinfo --list shows every disk"
nbdinfo --list --json "$(uri alpha)" >"$T/list.json" || fail "nbdinfo --list failed"
py -m rcttest.interop.capabilities list "$T/list.json" alpha:$((1 << 30)) beta:$((64 << 20)) gamma:$((3 << 20)) ||
    fail "nbdinfo --list is incomplete"

say "an unknown export name is refused, and the daemon keeps serving"
if nbdinfo "$(uri no-such-disk)" >"$T/nosuch.out" 2>&1; then
    cat "$T/nosuch.out"
    fail "nbdinfo on an unknown export succeeded"
fi
ok "$(head -n 1 "$T/nosuch.out")"
nbdinfo --size "$(uri gamma)" >/dev/null || fail "nbdinfo after the refused export failed"
ok "still serving"

say "socket activation: nbdinfo -- [ rctd --state-dir STATE2 ] on a state dir with one disk"
start_rctd_at "$T/state2"
"$RCTCTL" --state-dir "$T/state2" create solo --size 96M
stop_rctd_at "$T/state2"
got=$(nbdinfo --size -- [ "$RCTD" --state-dir "$T/state2" ]) || fail "socket-activated nbdinfo --size failed"
[[ "$got" == $((96 << 20)) ]] || fail "socket activation: size '$got', want $((96 << 20))"
ok "socket-activated rctd served the only disk (default export), $got bytes"
nbdinfo --json -- [ "$RCTD" --state-dir "$T/state2" ] >"$T/solo.json" || fail "socket-activated nbdinfo --json failed"
py -m rcttest.interop.capabilities solo "$T/solo.json" || fail "socket-activated export is missing capabilities"
ok "socket-activated export advertises flush/fua/trim/zero/multi-conn"

daemon_alive
say "PASS"
