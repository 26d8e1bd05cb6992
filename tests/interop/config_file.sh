#!/bin/bash
# rctd.conf for real (docs/configuration.md): rctd --version and rctctl
# --version name the git revision; --check-config prints the effective
# settings (command line over file) and refuses a bad file naming line and
# key, without starting; a daemon started from a file uses its state dir, TCP
# listener, limits and disk defaults, and the command line wins over it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo git

say "--version"
rev=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
for tool in "$RCTD" "$RCTCTL"; do
    out=$("$tool" --version) || fail "$tool --version failed"
    [[ $out == *"($rev)" ]] || fail "$tool --version printed '$out', want the revision $rev"
    ok "$out"
done

say "--check-config: a bad file is refused naming its line and key"
conf=$T/rctd.conf
printf 'workers = 1\n\n[limits]\nmax_conections = 5\n' >"$conf"
expect_rc 2 "$RCTD" --config "$conf" --check-config
err=$("$RCTD" --config "$conf" --check-config 2>&1 >/dev/null || true)
[[ $err == *"$conf:4: limits.max_conections: unknown key"* ]] || fail "the error was: $err"
ok "$err"
printf '[disks]\nintent_region = "3M"\n' >"$conf"
err=$("$RCTD" --config "$conf" --check-config 2>&1 >/dev/null || true)
[[ $err == *"$conf:2: disks.intent_region:"*"power of two"* ]] || fail "the error was: $err"
ok "$err"

say "a daemon from the file; the command line wins"
port=$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$conf" <<CONF
state_dir = "$STATE"
workers = 1
[listen]
tcp = ["tcp:127.0.0.1:$port"]
[limits]
max_connections = 3
handshake_timeout = 7
[disks]
intent_region = "16M"
CONF
eff=$("$RCTD" --config "$conf" --check-config --handshake-timeout 9) || fail "--check-config failed"
grep -qx 'handshake_timeout = 9' <<<"$eff" || fail "the command line did not win: $eff"
grep -qx 'max_connections = 3' <<<"$eff" || fail "the file's limit is not in effect: $eff"
grep -qx "tcp = \[\"tcp:127.0.0.1:$port\"\]" <<<"$eff" || fail "the file's listener is not in effect: $eff"
ok "--check-config shows the file's settings and the command line's handshake_timeout = 9"
# start_rctd_at gives --state-dir itself; here the file gives it.
"$RCTD" --config "$conf" --handshake-timeout 9 </dev/null >>"$T/rctd-conf.log" 2>&1 &
pid=$!
track_pid "$pid"
for _ in $(seq 100); do rctctl list >/dev/null 2>&1 && break; sleep 0.1; done
rctctl create d --size 64M >/dev/null || fail "the daemon started from $conf does not answer in $STATE"
got=$(nbdinfo --size "nbd://127.0.0.1:$port/d") || fail "no NBD on the file's TCP listener"
((got == 64 << 20)) || fail "nbdinfo over TCP says $got bytes"
ok "serving on the file's state dir and tcp:127.0.0.1:$port"
region=$(rctctl --json info d | py -c 'import json, sys; print(json.load(sys.stdin)["tracking"]["region_size"])')
((region == 16 << 20)) || fail "a new disk's intent region is $region, the file says 16M"
ok "a new disk takes the file's intent region (16M)"
kill "$pid"
wait "$pid" || true
say "PASS"
