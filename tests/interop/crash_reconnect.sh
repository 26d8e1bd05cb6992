#!/bin/bash
# What an NBD client sees when rctd crashes and is restarted (systemd's
# Restart=on-failure; docs/upgrade.md, "Crash restart"): qemu's NBD client
# with reconnect-delay holds the requests issued meanwhile and completes
# them on the restarted rctd, in the same qemu-io session. (A live upgrade,
# unlike a crash, keeps every connection: tests/interop/upgrade.sh.)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires qemu-io

start_rctd
rctctl create d --size 16M >/dev/null
LOG=$T/rctd-restarted.log
out=$(py -m rcttest.interop.crash_reconnect session "$STATE/nbd.sock" d "$RCTD_PID" "$LOG" \
    "$RCTD" --state-dir "$STATE") || { printf '%s\n' "$out"; fail "qemu's reconnect did not ride out the crash"; }
printf '%s\n' "$out" | sed '$d'
adopt_rctd "$(printf '%s\n' "$out" | tail -n 1)"
ok "qemu reconnected to the restarted rctd and completed the write issued during the outage"
daemon_alive
say "PASS"
