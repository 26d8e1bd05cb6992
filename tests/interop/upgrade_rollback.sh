#!/bin/bash
# Live upgrades that fail (docs/upgrade.md, "Rollback"): new binaries that
# exit at once, hang without a word past --ready-timeout, speak an unknown
# hand-over version, die after taking part of the state, take it all and
# never report ready, or answer garbage (rcttest/interop/fake_rctd.py), and
# a real rctd that fails its takeover after opening the disks. Each
# time `rctctl upgrade` must exit 9, the same pid must serve on, and the
# clients of disk t (two libnbd handles, a snapshot reader, a qemu-io
# session; rcttest/interop/upgrade.py drive) must carry on without an error
# or a reconnect; a good upgrade follows each failed one and must succeed.
# Afterwards t's tracking is still exact.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires qemu-io

start_rctd --workers 2
rctctl create t --size 64M >/dev/null
install -m 0755 "$RCTD" "$T/rctd-a"
modes=(exit hang version partial stall garbage)
bad=()
for m in "${modes[@]}"; do
    printf '#!/bin/sh\nexec /usr/bin/python3 -m rcttest.interop.fake_rctd %s "$@"\n' "$m" >"$T/fake-$m"
    chmod 0755 "$T/fake-$m"
    bad+=("$T/fake-$m")
done
# A real rctd that gives up in its takeover after it opened the disks: a
# descriptor limit below --fd-reserve. It must leave them sealed, or the
# rolled-back daemon recovers their tracking as after a crash (the exact
# changes check below would see the excess).
printf '#!/bin/sh\nulimit -n 256\nexec %s "$@"\n' "$RCTD" >"$T/rctd-lowfd"
chmod 0755 "$T/rctd-lowfd"
modes+=(lowfd)
bad+=("$T/rctd-lowfd")

say "a binary others may write is refused before anything stops"
install -m 0775 "$RCTD" "$T/rctd-writable"
expect_rc 9 rctctl upgrade --binary "$T/rctd-writable"

py -m rcttest.interop.upgrade prefill "$(uri t)" $((64 << 20)) || fail "prefill failed"
rctctl checkpoint t --name c1 >/dev/null
rctctl snapshot t --name s0 >/dev/null

say "${#modes[@]} failing upgrades, each followed by a good one"
IFS=, list="${bad[*]}"
py -m rcttest.interop.upgrade drive --state "$STATE" --rctctl "$RCTCTL" --binaries "$T/rctd-a" \
    --count "${#modes[@]}" --rollbacks "$list" --rollback-every 1 --rollback-timeout 3s \
    --uri "$(uri t)" --snap-uri "$(uri t@s0)" --size $((64 << 20)) ||
    fail "a failed upgrade was not rolled back cleanly (above)"
ok "every failed upgrade exited 9 with the old pid serving on; every good one committed"
pgrep -f "rcttest.interop.fake_rctd" >/dev/null && fail "a failed new rctd is still running"
ok "no failed new rctd left running"

adopt_rctd "$(py -c 'import sys; from rcttest.interop.upgrade import daemon_pid; print(daemon_pid(sys.argv[1]))' "$STATE")"
daemon_alive
say "PASS"
