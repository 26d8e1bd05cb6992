#!/bin/bash
# Bulk data integrity: 256 MiB of random data in with nbdcopy (4 connections,
# 16 requests in flight each, 1 MiB requests), back out again, byte-compared;
# then qemu-img compare, and a one-byte change that both must notice.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdcopy qemu-img cmp

SIZE=$((256 << 20))
start_rctd
rctctl create d --size $SIZE
U=$(uri d)

say "256 MiB of random data"
head -c $SIZE /dev/urandom >"$T/src.raw"

say "nbdcopy --flush -C 4 -R 16 --request-size=1048576 src.raw $U"
nbdcopy --flush -C 4 -R 16 --request-size=1048576 "$T/src.raw" "$U" || fail "nbdcopy into the export failed"
ok "copied in"

say "nbdcopy back out (4 connections) and cmp"
nbdcopy -C 4 -R 16 --request-size=1048576 "$U" "$T/out.raw" || fail "nbdcopy out of the export failed"
[[ $(stat -c %s "$T/out.raw") == "$SIZE" ]] || fail "copy out has $(stat -c %s "$T/out.raw") bytes, want $SIZE"
cmp "$T/src.raw" "$T/out.raw" || fail "data read back differs from data written"
ok "identical"
rm -f "$T/out.raw"

say "nbdcopy to stdout, single connection, cmp"
nbdcopy -C 1 "$U" - | cmp - "$T/src.raw" || fail "single-connection read back differs"
ok "identical"

say "qemu-img compare -f raw -F raw src.raw '$U'"
qemu-img compare -f raw -F raw "$T/src.raw" "$U" || fail "qemu-img compare reports a difference (exit $?)"
ok "qemu-img compare: identical"

say "change one byte at 100 MiB + 12345 through nbdsh; both checks must notice"
off=$(((100 << 20) + 12345))
nbdsh -u "$U" -c "
b = h.pread(1, $off)
h.pwrite(bytes([b[0] ^ 0xff]), $off)
h.flush()
" || fail "nbdsh pwrite failed"
rc=0
qemu-img compare -f raw -F raw "$T/src.raw" "$U" >"$T/compare.out" 2>&1 || rc=$?
cat "$T/compare.out"
((rc == 1)) || fail "qemu-img compare exited $rc after a one-byte change, want 1 (images differ)"
# qemu-img reports the start of the 512-byte sector holding the difference.
at=$(sed -n 's/^Content mismatch at offset \([0-9]*\)!$/\1/p' "$T/compare.out")
[[ -n "$at" ]] && ((at <= off && off - at < 512)) || fail "qemu-img compare did not point at offset $off"
ok "qemu-img compare found the change at offset $at (sector of $off)"
rc=0
nbdcopy "$U" - | cmp - "$T/src.raw" >"$T/cmp.out" 2>&1 || rc=$?
cat "$T/cmp.out"
grep -q "byte $((off + 1))," "$T/cmp.out" || fail "cmp did not report byte $((off + 1)) as the first difference"
ok "cmp found the change"

daemon_alive
say "PASS"
