#!/bin/bash
# Live upgrade under load (docs/upgrade.md): UPGRADE_COUNT (20; 100 for a
# long run) `rctctl upgrade`s alternating two copies of rctd while
#   - fio (nbd engine, 4 jobs = 4 connections, crc32c verify_backlog) writes
#     and verifies disk f,
#   - nbdcopy (4 connections) copies a file into disk c and back, again and
#     again, each round compared with the source,
#   - two libnbd clients, a snapshot reader and one qemu-io session work on
#     disk t (rcttest/interop/upgrade.py drive).
# Every client must see zero errors and never reconnect; every upgrade must
# exit 0 with a new pid; afterwards disk t's changes since checkpoint c1 are
# exactly the chunks written (a clean hand-off, no crash excess), the
# dirty-bitmap context negotiated before the first upgrade answers the
# same, and snapshot s0 cut before the upgrades still reads its content.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires fio nbdcopy qemu-io cmp
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"
: "${UPGRADE_COUNT:=20}"

start_rctd --workers 2 --handshake-timeout 2
rctctl create f --size 256M >/dev/null
rctctl create c --size 32M >/dev/null
rctctl create t --size 64M >/dev/null
# Two copies, root's and not writable by others (rctd refuses other files).
install -m 0755 "$RCTD" "$T/rctd-a"
install -m 0755 "$RCTD" "$T/rctd-b"

say "disk t: prefill, checkpoint c1, snapshot s0"
py -m rcttest.interop.upgrade prefill "$(uri t)" $((64 << 20)) || fail "prefill failed"
rctctl checkpoint t --name c1 >/dev/null
rctctl snapshot t --name s0 >/dev/null

head -c $((32 << 20)) /dev/urandom >"$T/src.raw"
RUNTIME=$((UPGRADE_COUNT / 2 + 8))
say "fio (4 connections, ${RUNTIME}s) and nbdcopy loops on f and c"
fio --name=v --ioengine=nbd --uri="$(uri f)" --rw=randwrite --bs=4k --iodepth=16 --size=64M --numjobs=4 \
    --offset_increment=64M --verify=crc32c --verify_backlog=512 --verify_fatal=1 --verify_state_save=0 \
    --time_based --runtime=$RUNTIME --group_reporting --output="$T/fio.out" &
FIO=$!
track_pid $FIO
(
    n=0
    while [[ ! -e "$T/stop" ]]; do
        nbdcopy --connections=4 "$T/src.raw" "$(uri c)" || { echo "nbdcopy in failed" >"$T/copy.fail"; exit 1; }
        nbdcopy --connections=4 "$(uri c)" "$T/back.raw" || { echo "nbdcopy out failed" >"$T/copy.fail"; exit 1; }
        cmp -s "$T/src.raw" "$T/back.raw" || { echo "round $n differs" >"$T/copy.fail"; exit 1; }
        n=$((n + 1))
        echo $n >"$T/copy.rounds"
    done
) &
COPY=$!
track_pid $COPY

say "$UPGRADE_COUNT upgrades alternating rctd-a and rctd-b"
py -m rcttest.interop.upgrade drive --state "$STATE" --rctctl "$RCTCTL" --binaries "$T/rctd-a,$T/rctd-b" \
    --count "$UPGRADE_COUNT" --uri "$(uri t)" --snap-uri "$(uri t@s0)" --size $((64 << 20)) ||
    fail "a client or an upgrade failed (above)"
ok "every upgrade committed, every client carried on, tracking exact"

touch "$T/stop"
wait $COPY || fail "the nbdcopy loop failed: $(cat "$T/copy.fail" 2>/dev/null)"
ok "nbdcopy: $(cat "$T/copy.rounds") rounds in and out, each identical to the source"
rc=0
wait $FIO || rc=$?
grep -E 'err=|verify' "$T/fio.out" | sed 's/^/   | /'
((rc == 0)) || fail "fio exited $rc"
grep -q ' err= 0' "$T/fio.out" || fail "fio did not report err=0"
ok "fio: 4 connections through every upgrade, no error, no verification failure"

say "connections caught midway: before their flags, in an option, in a request, in a drain"
py -m rcttest.interop.upgrade midway "$STATE" "$RCTCTL" "$T/rctd-a" t || fail "a connection caught midway broke"
ok "each went on from the byte it had reached"

adopt_rctd "$(py -c 'import sys; from rcttest.interop.upgrade import daemon_pid; print(daemon_pid(sys.argv[1]))' "$STATE")"
say "PASS"
