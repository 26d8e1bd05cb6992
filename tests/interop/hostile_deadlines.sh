#!/bin/bash
# Deadlines against hostile clients: silent and slowloris handshakes are
# closed after --handshake-timeout, an idle client after --idle-timeout,
# idle control connections after --control-idle-timeout; a
# client that never reads its replies is cut off after --send-timeout; and
# SIGTERM with such clients exits 0 within a hard bound of 3 x
# --shutdown-timeout, leaving tracking sealed as after a clean stop; and
# requests received but not started at SIGTERM are answered NBD_ESHUTDOWN.
# Logic: tests/rcttest/interop/hostile_limits.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
LOG=$T/rctd-state.log
SOCK=$STATE/nbd.sock

say "handshake and idle timeouts"
start_rctd --handshake-timeout 2 --idle-timeout 3 --control-idle-timeout 2
rctctl create d --size 64M >/dev/null
py -m rcttest.interop.hostile_limits handshake "$SOCK" "$(uri d)" 2 3
py -m rcttest.interop.hostile_limits control_idle "$STATE/control.sock" 2
stop_rctd

say "send timeout"
start_rctd --send-timeout 2
py -m rcttest.interop.hostile_limits send_stall "$SOCK" d 2 "$LOG"
daemon_alive "a stalled client"
stop_rctd

say "SIGTERM with clients that read no replies"
start_rctd --shutdown-timeout 3 --send-timeout 0
rctctl checkpoint d --name c0 >/dev/null
py -m rcttest.interop.hostile_limits stuck_stop "$SOCK" "$(uri d)" d "$RCTD_PID" 3
rc=0
wait "$RCTD_PID" || rc=$?
unset "_DAEMON_PIDS[$STATE]"
((rc == 0)) || fail "rctd exited $rc after SIGTERM"
tail -n 1 "$LOG" | grep -q "rctd stopped cleanly" || fail "no clean stop line at the end of the log"
grep -q "cutting off" "$LOG" || fail "no line about the clients cut off at the shutdown deadline"
ok "exit status 0, log ends with 'rctd stopped cleanly'"
start_rctd
py -m rcttest.interop.hostile_limits after_stop "$STATE/control.sock" d

say "SIGTERM with requests received but not started"
py -m rcttest.interop.hostile_limits eshutdown "$SOCK" d "$RCTD_PID"
rc=0
wait "$RCTD_PID" || rc=$?
unset "_DAEMON_PIDS[$STATE]"
((rc == 0)) || fail "rctd exited $rc after SIGTERM"
ok "exit status 0"
say "PASS"
