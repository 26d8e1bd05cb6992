#!/bin/bash
# Connection limits against hostile peers: uid nobody over the Unix socket
# and thousands of silent TCP connections from other loopback addresses
# (rctd under a 1400-descriptor limit) are refused past their limits while a
# root client, tracking persistence, snapshots and rctctl keep working, with
# the refusals logged rate-limited; 80 half-open control connections from
# nobody do not lock rctctl out. Logic: tests/rcttest/interop/hostile_limits.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
requires prlimit
((EUID == 0)) || skip "needs root to play uid nobody"
id nobody >/dev/null 2>&1 || skip "no user nobody"

NOFILE=1400 RESERVE=256 CTL_MAX=64 PER_PEER=32 CTL_PER_UID=8
CAP=$((NOFILE - RESERVE - CTL_MAX))
PORT=$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '#!/bin/sh\nexec prlimit --nofile=%s -- "%s" "$@"\n' "$NOFILE" "$RCTD" >"$T/rctd-nofile"
chmod +x "$T/rctd-nofile"

RCTD=$T/rctd-nofile start_rctd --listen "tcp:127.0.0.1:$PORT" --persist-interval 200 \
    --max-connections 100000 --max-connections-per-peer "$PER_PEER" --fd-reserve "$RESERVE" \
    --control-max-connections "$CTL_MAX" --control-max-connections-per-peer "$CTL_PER_UID" \
    --handshake-timeout 120
LOG=$T/rctd-state.log
rctctl create d --size 64M >/dev/null
# Test-only: let uid nobody reach the sockets.
chmod 0755 "$T" "$STATE"
chmod 0666 "$STATE/nbd.sock" "$STATE/control.sock"

say "connections per peer and in all"
py -m rcttest.interop.hostile_limits connections "$STATE/nbd.sock" "$(uri d)" "$PORT" "$STATE/control.sock" \
    "$RCTCTL" "$STATE" "$RCTD_PID" "$LOG" "$CAP" "$PER_PEER"
say "half-open control connections"
py -m rcttest.interop.hostile_limits control "$STATE/control.sock" "$RCTCTL" "$STATE" "$CTL_PER_UID" "$LOG"
daemon_alive "the hostile clients"
stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT"
say "PASS"
