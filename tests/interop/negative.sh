#!/bin/bash
# Misbehaving clients. With libnbd's strict mode off: out-of-range reads and
# writes, unknown flags; each must fail with the errno the spec names and
# leave the connection usable. Older negotiation styles (no structured
# replies, plain newstyle with EXPORT_NAME). Then a raw socket client that
# breaks the protocol in several ways; after each, the daemon must still serve.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo nbdsh

SIZE=$((16 << 20))
start_rctd
rctctl create n --size $SIZE
U=$(uri n)
SOCK=$STATE/nbd.sock

# still_serving WHAT: the daemon is alive and a fresh client can use the disk.
still_serving() {
    daemon_alive "$1"
    local got
    got=$(nbdinfo --size "$U") || fail "nbdinfo failed after $1"
    [[ "$got" == "$SIZE" ]] || fail "nbdinfo --size says $got after $1, want $SIZE"
    ok "daemon still serves after $1"
}

say "out-of-range requests and unknown flags (strict mode off), connection reused after each"
nbdsh -u "$U" -c '
import errno, sys
h.set_strict_mode(0)
size = h.get_size()
h.pwrite(b"\x5a" * 4096, 0)
bad = 0
def expect(what, fn, want):
    global bad
    try:
        fn()
        print(f"   FAIL: {what}: succeeded, want {errno.errorcode[want]}")
        bad += 1
    except nbd.Error as e:
        if e.errnum == want:
            print(f"   ok: {what}: {errno.errorcode[want]}")
        else:
            print(f"   FAIL: {what}: errno {e.errnum} ({e.errno}), want {errno.errorcode[want]}: {e.string}")
            bad += 1
    # the same connection must still work
    if h.pread(4096, 0) != b"\x5a" * 4096:
        print(f"   FAIL: after {what}: a normal read returned wrong data")
        bad += 1
expect("read past the end", lambda: h.pread(4096, size), errno.EINVAL)
expect("read across the end", lambda: h.pread(8192, size - 4096), errno.EINVAL)
expect("write past the end", lambda: h.pwrite(b"x" * 4096, size), errno.ENOSPC)
expect("write across the end", lambda: h.pwrite(b"x" * 8192, size - 4096), errno.ENOSPC)
expect("write-zeroes past the end", lambda: h.zero(4096, size), errno.ENOSPC)
expect("trim past the end", lambda: h.trim(4096, size), errno.EINVAL)
expect("read with unknown flag 0x100", lambda: h.pread(512, 0, 0x100), errno.EINVAL)
expect("read with unknown flag 0x8000", lambda: h.pread(512, 0, 0x8000), errno.EINVAL)
expect("write with unknown flag 0x100", lambda: h.pwrite(b"y" * 512, 0, 0x100), errno.EINVAL)
# the rejected write must not have happened
if h.pread(4096, size - 4096) == b"x" * 4096:
    print("   FAIL: the refused write across the end changed the data")
    bad += 1
sys.exit(1 if bad else 0)
' || fail "error handling differs from the NBD spec (see above)"
still_serving "the error requests"

say "older negotiation styles still work"
nbdsh -c "
import sys
U = '$U'
def variant(name, setup, want_proto, want_sr):
    g = nbd.NBD()
    setup(g)
    g.connect_uri(U)
    proto, sr = g.get_protocol(), g.get_structured_replies_negotiated()
    print(f'   {name}: protocol {proto}, structured replies {sr}, size {g.get_size()}')
    assert proto == want_proto, f'{name}: protocol {proto}, want {want_proto}'
    assert sr == want_sr, f'{name}: structured replies {sr}, want {want_sr}'
    assert g.get_size() == $SIZE, f'{name}: size {g.get_size()}'
    pat = name.encode()[:1] * 65536
    g.pwrite(pat, 1 << 20)
    g.flush()
    assert g.pread(65536, 1 << 20) == pat, f'{name}: read back differs'
    g.set_strict_mode(0)
    try:
        g.pread(4096, g.get_size())
        raise AssertionError(f'{name}: read past the end succeeded')
    except nbd.Error as e:
        assert e.errnum == 22, f'{name}: read past the end gave {e.errno}, want EINVAL'
    assert g.pread(65536, 1 << 20) == pat, f'{name}: connection unusable after an error'
    g.shutdown()
    print(f'   ok: {name}: write, flush, read back, EINVAL past the end')
variant('no structured replies', lambda g: g.set_request_structured_replies(False), 'newstyle-fixed', False)
variant('handshake flags 0 (plain newstyle, EXPORT_NAME, zero padding)', lambda g: g.set_handshake_flags(0), 'newstyle', False)
variant('fixed newstyle without NO_ZEROES', lambda g: g.set_handshake_flags(nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE), 'newstyle-fixed', True)
variant('no block size request', lambda g: g.set_request_block_size(False), 'newstyle-fixed', True)
" || fail "an older negotiation style failed"
still_serving "the old-style clients"

say "option haggling: NBD_OPT_LIST, INFO on an unknown export, LIST_META_CONTEXT, GO"
nbdsh -c "
g = nbd.NBD()
g.set_opt_mode(True)
g.connect_uri('$U')
names = []
g.opt_list(lambda n, d: names.append(n) or 0)
print('   listed:', names)
assert 'n' in names, 'export n not listed'
g.set_export_name('no-such-disk')
try:
    g.opt_info()
    raise AssertionError('NBD_OPT_INFO on an unknown export succeeded')
except nbd.Error as e:
    print('   ok: INFO on an unknown export refused:', e.string)
g.set_export_name('n')
g.opt_info()
assert g.get_size() == $SIZE
ctx = []
g.opt_list_meta_context(lambda c: ctx.append(c) or 0)
print('   contexts:', ctx)
assert 'base:allocation' in ctx, 'base:allocation not offered'
g.opt_go()
assert len(g.pread(512, 0)) == 512
print('   ok: opt_list, opt_info, opt_list_meta_context, opt_go')
" || fail "option haggling failed"
still_serving "option haggling"

cat >"$T/raw.py" <<'PY'
# Raw NBD client that breaks the protocol on purpose. argv: CASE SOCKET EXPORT
import os, socket, struct, sys, time

CASE, SOCK, NAME = sys.argv[1], sys.argv[2], sys.argv[3]
REQ_MAGIC, SIMPLE_MAGIC, OPT_REPLY_MAGIC = 0x25609513, 0x67446698, 0x3E889045565A9
CMD_READ, CMD_WRITE = 0, 1

def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(SOCK)
    return s

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError(f"server closed the connection after {len(b)}/{n} bytes")
        b += c
    return b

def greet(s):
    g = recvn(s, 18)
    assert g[:16] == b"NBDMAGICIHAVEOPT", f"bad greeting {g!r}"
    return struct.unpack(">H", g[16:])[0]

def go(s):
    """Fixed newstyle, NBD_OPT_GO on NAME, simple replies."""
    hflags = greet(s)
    s.sendall(struct.pack(">I", 1 | (hflags & 2)))
    data = struct.pack(">I", len(NAME)) + NAME.encode() + struct.pack(">H", 0)
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
    size = None
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        assert magic == OPT_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        payload = recvn(s, ln)
        if typ & 0x80000000:
            raise RuntimeError(f"NBD_OPT_GO refused: {typ:#x} {payload!r}")
        if typ == 3 and struct.unpack(">H", payload[:2])[0] == 0:
            size = struct.unpack(">Q", payload[2:10])[0]
        if typ == 1:
            return size

def request(s, typ, offset, length, cookie, flags=0):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, offset, length))

def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE_MAGIC, f"bad reply magic {magic:#x}"
    return err, cookie

def closed_within(s, secs):
    """True if the server closes the connection within secs (reading and
    discarding whatever it sends)."""
    s.settimeout(secs)
    end = time.monotonic() + secs
    try:
        while time.monotonic() < end:
            if not s.recv(65536):
                return True
    except (socket.timeout, TimeoutError):
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False

def normal_read(s, cookie):
    request(s, CMD_READ, 0, 512, cookie)
    err, c = simple_reply(s)
    assert (err, c) == (0, cookie), f"normal read: error {err}, cookie {c:#x}"
    recvn(s, 512)

s = conn()
if CASE == "bad-client-flags":
    greet(s)
    s.sendall(struct.pack(">I", 0xFFFFFFFF))
    assert closed_within(s, 5), "server kept the connection after unknown client flags (spec: MUST drop)"
    print("   ok: unknown client flags: connection dropped")
elif CASE == "garbage-at-once":
    s.sendall(os.urandom(4096))
    print("   info: 4 KiB of random bytes before the greeting: connection",
          "closed" if closed_within(s, 5) else "still open after 5 s")
elif CASE == "garbage-option-magic":
    greet(s)
    s.sendall(struct.pack(">I", 3))
    s.sendall(b"GARBAGE!" * 8)
    print("   info: garbage option magic: connection",
          "closed" if closed_within(s, 5) else "still open after 5 s")
elif CASE == "huge-option":
    greet(s)
    s.sendall(struct.pack(">I", 3))
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 0xFFFFFFFF) + b"\0" * 65536)
    s.close()
    print("   ok: sent NBD_OPT_GO claiming 4 GiB of data, then hung up")
elif CASE == "garbage-request-magic":
    go(s)
    s.sendall(b"\xde\xad\xbe\xef" + os.urandom(24))
    print("   info: garbage request magic: connection",
          "closed" if closed_within(s, 5) else "still open after 5 s")
elif CASE == "unknown-command":
    go(s)
    request(s, 0x63, 0, 512, 0x1111)
    err, cookie = simple_reply(s)
    assert cookie == 0x1111, f"reply cookie {cookie:#x}"
    assert err == 22, f"unknown command type 0x63: error {err}, want EINVAL (22)"
    normal_read(s, 0x2222)
    print("   ok: unknown command type: EINVAL, and the connection still works")
elif CASE == "huge-read":
    size = go(s)
    request(s, CMD_READ, 0, 0xFFFFFFFF, 0x3333)
    try:
        err, cookie = simple_reply(s)
    except (EOFError, ConnectionResetError):
        print("   ok: READ of 4 GiB - 1: server disconnected")
    else:
        assert err != 0, "READ of 4 GiB - 1 on a 16 MiB disk succeeded"
        print(f"   ok: READ of 4 GiB - 1: error {err}")
elif CASE == "huge-write-then-hangup":
    go(s)
    request(s, CMD_WRITE, 0, 0xFFFFFFFF, 0x4444)
    try:
        s.sendall(b"\xee" * (1 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    print("   ok: WRITE header claiming 4 GiB - 1, 1 MiB of payload, then hung up")
elif CASE == "write-then-hangup-mid-payload":
    go(s)
    request(s, CMD_WRITE, 1 << 20, 1 << 20, 0x5555)
    s.sendall(b"\xee" * 1000)
    s.close()
    print("   ok: WRITE of 1 MiB, 1000 bytes of payload, then hung up")
elif CASE == "hangup-mid-header":
    go(s)
    s.sendall(struct.pack(">IHH", REQ_MAGIC, 0, CMD_READ))
    s.close()
    print("   ok: 8 bytes of a request header, then hung up")
elif CASE == "many-connections":
    import resource, subprocess
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    n = min(2000, min(hard, 8192) - 100)
    conns = [conn() for _ in range(n)]
    for c in conns:
        greet(c)
    # While all of them sit idle mid-handshake, a real client is still served.
    out = subprocess.run(["nbdinfo", "--size", sys.argv[4]], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"nbdinfo failed with {n} idle connections open: {out.stderr}")
    for c in conns:
        c.close()
    print(f"   ok: {n} idle connections held mid-handshake; another client was served meanwhile")
else:
    sys.exit(f"unknown case {CASE}")
PY

for c in bad-client-flags garbage-at-once garbage-option-magic huge-option \
    garbage-request-magic unknown-command huge-read huge-write-then-hangup \
    write-then-hangup-mid-payload hangup-mid-header many-connections; do
    say "raw client: $c"
    py "$T/raw.py" "$c" "$SOCK" n "$U" || fail "raw client case $c failed"
    still_serving "$c"
done

say "data written before the abuse is intact"
nbdsh -u "$U" -c '
assert h.pread(4096, 0) == b"\x5a" * 4096, "data at 0 changed"
print("   ok: data at offset 0 unchanged")
' || fail "data changed"

daemon_alive
say "PASS"
