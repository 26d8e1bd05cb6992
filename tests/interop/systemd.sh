#!/bin/bash
# rctd as systemd runs it, without systemd as PID 1 (docs/operations.md):
# - the notify protocol: READY=1, STATUS= lines, WATCHDOG=1 pings that stop
#   while a worker thread is stuck (stopped by ptrace) and come back when it
#   runs, STOPPING=1, and pings from each new rctd across live upgrades
#   (rcttest.interop.systemd plays systemd's end);
# - socket activation as rctd.socket does it: systemd-socket-activate holds
#   the NBD, control and import sockets, one name for all (as one .socket
#   unit gives), and starts rctd on the first connection; rctd tells them
#   apart by path, serves NBD, control and an import through them, and
#   leaves them in place when it stops, for systemd to pass again;
# - the units pass systemd-analyze verify, and the service's sandbox keeps
#   systemd-analyze security's exposure at 5.0 or below.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo systemd-socket-activate systemd-analyze

say "notify and watchdog"
start_rctd
rctctl create wd --size 64M
stop_rctd
py -m rcttest.interop.systemd watchdog "$T/notify.sock" "$(uri wd)" \
    "$RCTD" --state-dir "$STATE" --workers 2 || fail "the notify protocol check failed"

say "the watchdog across two live upgrades in a row"
rm -f "$T/notify.sock"
py -m rcttest.interop.systemd upgrades "$T/notify.sock" "$RCTCTL" "$STATE" "$RCTD" --state-dir "$STATE" ||
    fail "the watchdog did not carry across upgrades"

say "socket activation"
sa=$T/sa
mkdir -p "$sa"
systemd-socket-activate -l "$sa/nbd.sock" -l "$sa/control.sock" -l "$sa/control.sock.fd" --fdname=rctd \
    -- "$RCTD" --state-dir "$sa" >"$T/activated.log" 2>&1 &
activator=$!
track_pid "$activator"
for s in nbd.sock control.sock control.sock.fd; do
    for _ in $(seq 50); do [[ -S $sa/$s ]] && break; sleep 0.1; done
    [[ -S $sa/$s ]] || fail "systemd-socket-activate did not create $s"
done
"$RCTCTL" --state-dir "$sa" create act --size 32M || fail "create through the activated control socket failed"
ok "the first control call started rctd and was answered"
head -c 1M /dev/urandom >"$T/import.raw"
"$RCTCTL" --state-dir "$sa" import imp --from "$T/import.raw" || fail "import through the activated import socket failed"
ok "import passed its file through the activated import socket"
got=$(nbdinfo --size "nbd+unix:///act?socket=$sa/nbd.sock") || fail "nbdinfo on the activated NBD socket failed"
[[ $got == $((32 << 20)) ]] || fail "activated NBD socket: size $got"
ok "NBD on the activated socket: act is $got bytes"
nbdcopy "nbd+unix:///imp?socket=$sa/nbd.sock" "$T/back.raw" && cmp "$T/import.raw" "$T/back.raw" ||
    fail "the imported disk reads back wrong"
ok "the imported disk reads back exactly"
kill -TERM "$activator"
wait "$activator" || fail "the activated rctd exited $? after SIGTERM"
for s in nbd.sock control.sock control.sock.fd; do
    [[ -S $sa/$s ]] || fail "the activated rctd removed $s, which systemd would pass again"
done
ok "stopped with exit 0; the three sockets stay for the next activation"

say "systemd-analyze verify"
units=$T/units
mkdir -p "$units"
sed "s|/usr/sbin/rctd|$RCTD|; s|/usr/bin/rctctl|$RCTCTL|" "$REPO_ROOT/systemd/rctd.service" >"$units/rctd.service"
cp "$REPO_ROOT/systemd/rctd.socket" "$units/"
out=$(systemd-analyze verify --man=no "$units/rctd.service" "$units/rctd.socket" 2>&1) ||
    fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify complained: $out"
ok "rctd.service and rctd.socket verify clean"
exposure=$(systemd-analyze security --offline=yes "$units/rctd.service" 2>&1 | sed -n 's/.*exposure level for rctd.service: \([0-9.]*\).*/\1/p')
[[ -n $exposure ]] || fail "systemd-analyze security printed no exposure level"
py -c "import sys; sys.exit(float('$exposure') > 5.0)" || fail "rctd.service's exposure is $exposure, above 5.0"
ok "systemd-analyze security: exposure $exposure (at most 5.0; 9.8 without the sandbox)"
say "PASS"
