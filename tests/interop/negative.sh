#!/bin/bash
# Misbehaving clients. With libnbd's strict mode off: out-of-range reads and
# writes, unknown flags; each must fail with the errno the spec names and
# leave the connection usable. Older negotiation styles (no structured
# replies, plain newstyle with EXPORT_NAME). Then a raw socket client that
# breaks the protocol in several ways; after each, the daemon must still serve.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo nbdsh

SIZE=$((16 << 20))
# many-connections holds 2000 idle connections from one uid: above the
# default limits, which hostile_limits.sh tests; here the point is that idle
# connections do not starve a real client.
start_rctd --max-connections 4096 --max-connections-per-peer 4096
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

# The raw client (tests/rcttest/rawnbd.py) breaks the protocol on purpose;
# the cases are in tests/rcttest/interop/negative.py.

for c in bad-client-flags garbage-at-once garbage-option-magic huge-option \
    garbage-request-magic unknown-command huge-read huge-write-then-hangup \
    write-then-hangup-mid-payload hangup-mid-header many-connections; do
    say "raw client: $c"
    py -m rcttest.interop.negative raw "$c" "$SOCK" n "$U" || fail "raw client case $c failed"
    still_serving "$c"
done

say "data written before the abuse is intact"
nbdsh -u "$U" -c '
assert h.pread(4096, 0) == b"\x5a" * 4096, "data at 0 changed"
print("   ok: data at offset 0 unchanged")
' || fail "data changed"

daemon_alive
say "PASS"
