#!/bin/bash
# Management calls are safe under load (issue 13): while two reconnecting
# libnbd writers (rcttest.interop.mgmt_races) write to disks d and v, every
# pair of management calls runs at once through rctctl: resize grow, resize
# shrink --force, snapshot, snapshot-delete, clone, restore --force,
# delete --force + create of v, checkpoint (each with itself too). Each call
# must end with 0 or a clean refusal (exit 2, 3 or 4 with a message), and
# rctd must stay up. Then d is shrunk 25 times while fio (nbd engine, 32
# writes in flight) writes up to its end: data.raw must never grow back past
# what disk.json says. Then rctd is killed (-9) and restarted, and later
# stopped cleanly and restarted: every disk must open, its size must match
# disk.json and data.raw, and the flushed prefix of d (written before the
# first snapshot, never overwritten) must be intact.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

M=$((1 << 20))
SIZE=$((32 * M))
PREFIX=$((4 * M))
start_rctd --persist-interval 200
rctctl create d --size $SIZE >/dev/null
rctctl create v --size $((16 * M)) >/dev/null
py -m rcttest.interop.mgmt_races prefill "$(uri d)" 0 $PREFIX || fail "prefilling d failed"
ok "d's first 4 MiB written and flushed"

say "writers on d and v, every pair of management calls at once"
py -m rcttest.interop.mgmt_races writer "$(uri d)" $PREFIX $((48 * M)) "$T/stop" &
WD=$!
track_pid $WD
py -m rcttest.interop.mgmt_races writer "$(uri v)" 0 $((40 * M)) "$T/stop" &
WV=$!
track_pid $WV
py -m rcttest.interop.mgmt_races pairs "$RCTCTL" "$STATE" || fail "a racing call did not end cleanly"
daemon_alive "the racing calls"
ok "every call succeeded or was refused cleanly; rctd is up"

say "25 shrinks of d while writes run up to its end"
if command -v fio >/dev/null && fio --enghelp=nbd >/dev/null 2>&1; then
    # 32 writes of 256 KiB in flight past the shrink point, most of the time:
    # what makes a late write after the truncate likely without the drain.
    rctctl resize d --size $((48 * M)) >/dev/null
    fio --name=tail --ioengine=nbd --uri="$(uri d)" --rw=randwrite --bs=256k --iodepth=32 \
        --offset=$((16 * M)) --size=$((32 * M)) --time_based --runtime=120 \
        --continue_on_error=all --ignore_error=,ENOSPC:EINVAL:EIO --output="$T/fio.out" >/dev/null 2>"$T/fio.err" &
    FIO=$!
    track_pid $FIO
    sleep 0.5
else
    say "fio with the nbd engine is missing: the shrinks run under the libnbd writer alone"
    FIO=
fi
py -m rcttest.interop.mgmt_races shrinks "$RCTCTL" "$STATE" 25 0.15 || fail "a shrink left data.raw larger than disk.json"
daemon_alive "the shrinks"
if [[ -n "$FIO" ]]; then
    kill -0 $FIO || { tail -5 "$T/fio.err"; fail "fio stopped during the shrinks"; }
    kill -INT $FIO
    wait $FIO || true
fi
touch "$T/stop"
wait $WD || fail "the writer on d failed"
wait $WV || fail "the writer on v failed"
ok "data.raw stayed at its disk.json size after every shrink"

say "kill -9, restart"
crash_rctd_at "$STATE"
start_rctd
py -m rcttest.interop.mgmt_races check-state "$STATE/control.sock" "$STATE" || fail "the state after the crash is wrong"
py -m rcttest.interop.mgmt_races verify-prefix "$(uri d)" 0 $PREFIX || fail "d lost flushed data"

say "clean stop, restart"
stop_rctd
start_rctd
py -m rcttest.interop.mgmt_races check-state "$STATE/control.sock" "$STATE" || fail "the state after the restart is wrong"
py -m rcttest.interop.mgmt_races verify-prefix "$(uri d)" 0 $PREFIX || fail "d lost flushed data"
say "PASS"
