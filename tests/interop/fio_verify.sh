#!/bin/bash
# fio through its nbd engine with data verification: 4k random writes at queue
# depth 16 (crc32c-verified, with periodic flushes), then mixed sizes from 4k
# to 1M, then two jobs (two connections) writing and verifying disjoint halves.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"

start_rctd
rctctl create f --size 512M
U=$(uri f)

# run_fio NAME ARGS...: run fio, keep its output, fail on a non-zero exit or
# any verify error in its output.
run_fio() {
    local name=$1 rc=0
    shift
    fio --name="$name" --ioengine=nbd --uri="$U" --verify_fatal=1 --verify_state_save=0 --output="$T/$name.out" "$@" || rc=$?
    grep -E 'err=|verify|WRITE:|READ:' "$T/$name.out" | sed 's/^/   | /'
    ((rc == 0)) || { cat "$T/$name.out"; fail "fio $name exited $rc"; }
    if grep -qE 'verify: bad|bad magic|crc32c: verify failed|bad header' "$T/$name.out"; then
        fail "fio $name reported verification errors"
    fi
    grep -q ' err= 0' "$T/$name.out" || fail "fio $name did not report err=0"
}

say "fio randwrite bs=4k iodepth=16 size=256M verify=crc32c (fsync every 64 writes)"
run_fio rand4k --rw=randwrite --bs=4k --iodepth=16 --size=256M \
    --verify=crc32c --do_verify=1 --fsync=64
ok "4k random writes verified"

say "fio randwrite bsrange=4k-1M iodepth=8 size=256M offset=256M verify=crc32c"
run_fio mixed --rw=randwrite --bsrange=4k-1M --iodepth=8 --size=256M --offset=256M \
    --verify=crc32c --do_verify=1
ok "mixed-size random writes verified"

say "fio 2 jobs (2 connections), disjoint 128M halves, randwrite bs=64k, verify=md5"
run_fio twojobs --rw=randwrite --bs=64k --iodepth=8 --size=128M --numjobs=2 \
    --offset_increment=128M --verify=md5 --do_verify=1
ok "two concurrent connections verified"

say "the checker itself: a byte changed behind fio's back must fail --verify_only"
run_fio ctrl --rw=write --bs=64k --size=16M --verify=crc32c --do_verify=1
nbdsh -u "$U" -c 'h.pwrite(b"\x00\x01\x02", 1048576 + 100); h.flush()'
rc=0
fio --name=ctrl --ioengine=nbd --uri="$U" --rw=write --bs=64k --size=16M --verify=crc32c \
    --verify_only --verify_state_save=0 --output="$T/ctrl2.out" || rc=$?
grep -E 'verify|err=' "$T/ctrl2.out" | head -n 3 | sed 's/^/   | /'
((rc != 0)) || fail "fio --verify_only passed over corrupted data: its verification cannot be trusted"
ok "corruption detected (fio exited $rc)"

daemon_alive
say "PASS"
