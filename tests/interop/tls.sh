#!/bin/bash
# NBD over TLS (daemon/nbd/tls.hh): X.509 with client certificates and PSK,
# through nbdinfo, nbdcopy, qemu-img and qemu-io; plaintext refused where TLS
# is required, wrong certificates and keys refused, export access by TLS
# identity, the STARTTLS rules of the spec (tests/rcttest/interop/tls.py),
# and the daemon serving on after every refusal.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires certtool psktool nbdinfo nbdcopy qemu-img qemu-io
export PATH=/usr/bin:$PATH  # the system's libnbd tools and python

C=$T/certs
mkdir -p "$C"
py -m rcttest.interop.tls certs "$C" || fail "making certificates"
port=$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
alice_dn=$(certtool -i --infile "$C/alice/client-cert.pem" | sed -n 's/^\tSubject: //p')
[[ -n "$alice_dn" ]] || fail "no subject in alice's certificate"

say "X.509, client certificates required (tls = require on TCP by default), tls = on on the Unix socket"
start_rctd --listen "tcp:127.0.0.1:$port" --tls-certificates "$C/server" --tls-verify-peer --unix-tls on \
    --tls-export-identity "secret=$alice_dn"
rctctl create d --size 16M >/dev/null
rctctl create secret --size 1M >/dev/null
tcp() { printf 'nbds://127.0.0.1:%s/%s?tls-certificates=%s\n' "$port" "$1" "$C/$2"; }

got=$(nbdinfo --size "$(tcp d alice)") || fail "nbdinfo over TLS"
[[ "$got" == 16777216 ]] || fail "nbdinfo over TLS: size $got"
ok "nbdinfo over TLS: $got bytes"
head -c 16M /dev/urandom >src.img
nbdcopy src.img "$(tcp d alice)" || fail "nbdcopy to the disk over TLS"
nbdcopy "$(tcp d alice)" back.img || fail "nbdcopy from the disk over TLS"
cmp src.img back.img || fail "nbdcopy over TLS: the data read back differs"
ok "nbdcopy over TLS: 16 MiB written and read back identical"
x509="tls-creds-x509,id=tls0,endpoint=client,dir=$C/alice"
qnbd="driver=nbd,host=127.0.0.1,port=$port,export=d,tls-creds=tls0"
qemu-img convert -O raw --object "$x509" --image-opts "$qnbd" q.img || fail "qemu-img convert over TLS"
cmp src.img q.img || fail "qemu-img over TLS read other data"
ok "qemu-img convert over TLS"
out=$(qemu-io --object "$x509" -c 'write -P 0x5a 4096 8192' -c 'read -P 0x5a 4096 8192' --image-opts "$qnbd") ||
    fail "qemu-io over TLS: $out"
grep -q "read 8192/8192" <<<"$out" || fail "qemu-io over TLS: $out"
ok "qemu-io write and pattern-checked read over TLS"

say "refused: no TLS, no client certificate, a certificate of another CA"
expect_rc 1 nbdinfo --size "nbd://127.0.0.1:$port/d"
expect_rc 1 nbdinfo --size "nbds://127.0.0.1:$port/d?tls-verify-peer=false"
expect_rc 1 nbdinfo --size "$(tcp d rogue)"
grep -q "TLS handshake failed" "$T/rctd-state.log" || fail "the refused handshakes are not logged"

say "export access by TLS identity: secret is alice's only"
got=$(nbdinfo --size "$(tcp secret alice)") || fail "alice cannot open secret"
expect_rc 1 nbdinfo --size "$(tcp secret bob)"
expect_rc 1 nbdinfo --size "$(uri secret)"
nbdinfo --size "$(tcp d bob)" >/dev/null || fail "bob cannot open d"
ok "alice opens secret; bob and a plaintext Unix client cannot; bob opens d"

say "the spec's STARTTLS rules"
py -m rcttest.interop.tls forced 127.0.0.1 "$port" d "$C/alice" || fail "FORCEDTLS cases"
py -m rcttest.interop.tls selective "$STATE/nbd.sock" d "$C/alice" || fail "SELECTIVETLS cases"
daemon_alive "the hostile TLS clients"
nbdinfo --size "$(tcp d alice)" >/dev/null || fail "a good client after the hostile ones"
ok "rctd serves on"
stop_rctd

say "PSK"
start_rctd --listen "tcp:127.0.0.1:$port" --tls-psk "$C/psk/keys.psk"
psk() { printf 'nbds://alice@127.0.0.1:%s/d?tls-psk-file=%s\n' "$port" "$1"; }
got=$(nbdinfo --size "$(psk "$C/psk/keys.psk")") || fail "nbdinfo with PSK"
[[ "$got" == 16777216 ]] || fail "nbdinfo with PSK: size $got"
nbdcopy "$(psk "$C/psk/keys.psk")" back2.img || fail "nbdcopy with PSK"
nbdcopy "$(uri d)" unix.img || fail "nbdcopy over the plaintext Unix socket"
cmp unix.img back2.img || fail "nbdcopy with PSK read other data than a plaintext client"
ok "nbdinfo and nbdcopy with PSK"
qemu-img info --object "tls-creds-psk,id=tls0,endpoint=client,dir=$C/psk,username=alice" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$port,export=d,tls-creds=tls0" >qinfo.txt ||
    fail "qemu-img info with PSK"
grep -q "virtual size: 16 MiB" qinfo.txt || fail "qemu-img info with PSK: $(cat qinfo.txt)"
ok "qemu-img with tls-creds-psk"
expect_rc 1 nbdinfo --size "$(psk "$C/wrong/keys.psk")"
expect_rc 1 nbdinfo --size "nbd://127.0.0.1:$port/d"
py -m rcttest.interop.tls plain "$STATE/nbd.sock" || fail "STARTTLS on the plaintext Unix socket"
daemon_alive "refused PSK clients"
stop_rctd

say "bad settings are refused at start"
expect_rc 2 "$RCTD" --state-dir "$T/x" --tls-certificates "$C/nowhere" --check-config
expect_rc 2 "$RCTD" --state-dir "$T/x" --tls require --check-config
printf 'alice:nothex\n' >"$T/bad.psk"
expect_rc 2 "$RCTD" --state-dir "$T/x" --tls-psk "$T/bad.psk" --check-config
say "PASS"
