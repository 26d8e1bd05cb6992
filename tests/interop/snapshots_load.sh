#!/bin/bash
# 50 snapshots under full-speed writes (issue #4), on one 64 MiB disk
# (granularity 64K):
#  - load: fio (nbd engine, randwrite 4k, iodepth 32, verify=md5 headers,
#    time based) at full speed on the first 32 MiB for the whole run;
#  - a verifiable writer (rcttest.interop.snapshots_load: /usr/bin/python3 + libnbd, 16 requests in flight)
#    on the last 32 MiB: writes of 1-16 4 KiB blocks, each block carrying
#    (sequence number, block number), with submit and completion times;
#  - 50 cuts (control API, 30-120 ms apart), timed. Right after each cut the
#    whole export NAME@SNAP is read (under the load, while first writes are
#    copying its chunks) and its sha256 noted: the checksum at the cut.
# Then, for every snapshot:
#  (a) nbdcopy of the whole export has the sha256 noted at its cut;
#  (b) the verifiable region is exactly a point-in-time image: per block,
#      the write current at the cut (the last completed before the cut call,
#      or one overlapping it), and one instant T in the call fits all blocks;
#  (c) the fio region: every block is zeroes or a whole fio block written
#      for that offset (verify header magic, length, offset, md5 of the
#      data), and a second read gives the same bytes;
#  (d) every block that differs from the previous snapshot lies in a chunk
#      `rctctl diff d PREV SNAP` reports (change tracking agrees with the
#      snapshots), and the fio region did change between them (the load was
#      really running).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires fio nbdcopy sha256sum
fio --enghelp=nbd >/dev/null 2>&1 || skip "this fio has no nbd engine"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

SIZE=$((64 << 20))
HALF=$((SIZE / 2))
GRAN=$((64 << 10))
NSNAP=${NSNAP:-50}
start_rctd
rctctl create d --size $SIZE --granularity 64K >/dev/null
U=$(uri d)
UFMT="nbd+unix:///%s?socket=$STATE/nbd.sock"

# The verifiable region starts as written blocks of tag 1 (its copies then
# hold data).
py -m rcttest.interop.snapshots_load prefill "$U" $HALF $SIZE || fail "prefilling the verifiable region failed"

say "fio randwrite bs=4k iodepth=32 on [0, 32M) at full speed"
fio --name=load --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --iodepth=32 --size=$HALF --offset=0 \
    --time_based --runtime=240 --verify=md5 --do_verify=0 --verify_state_save=0 \
    --output="$T/fio.out" >/dev/null 2>"$T/fio.err" &
FIO_PID=$!
track_pid "$FIO_PID"
sleep 1
kill -0 "$FIO_PID" 2>/dev/null || { cat "$T/fio.err" "$T/fio.out"; fail "fio did not start"; }

say "verifiable writer on [32M, 64M) and $NSNAP cuts under the load"
py -m rcttest.interop.snapshots_load load "$UFMT" "$STATE/control.sock" "$T/load.log" "$NSNAP" $HALF $SIZE || fail "the verifiable writer failed"
grep '^X' "$T/load.log" && fail "the cuts failed"
kill -0 "$FIO_PID" 2>/dev/null || { cat "$T/fio.err" "$T/fio.out"; fail "fio stopped before the last cut"; }
kill -INT "$FIO_PID"
wait "$FIO_PID" || true
grep -E 'IOPS=|err=' "$T/fio.out" | sed 's/^/   | /'
grep -q ' err= 0' "$T/fio.out" || { cat "$T/fio.out" "$T/fio.err"; fail "fio reported errors"; }
ncut=$(grep -c '^C ' "$T/load.log")
((ncut == NSNAP)) || fail "$ncut cuts logged, want $NSNAP"
awk '/^C / {n++; d = ($4 - $3) * 1000; s += d; if (d > m) m = d; r += $6 * 1000}
     END {printf "   ok: %d cuts, call %.1f ms on average (max %.1f ms); reading a snapshot at its cut took %.0f ms on average\n", n, s / n, m, r / n}' "$T/load.log"
ok "$(grep -c '^W ' "$T/load.log") verifiable writes"
rctctl snapshots d | tail -n 3 | sed 's/^/   | /'
daemon_alive

say "verify every snapshot"
prev=- nv=0 nfio=0 nchanged=0 nfchanged=0
for ((k = 1; k <= NSNAP; k++)); do
    rm -f "$T/s$k.raw"
    nbdcopy "$(uri "d@s$k")" "$T/s$k.raw" || fail "nbdcopy of d@s$k failed"
    rc=0
    out=$(py -m rcttest.interop.snapshots_load verify "$T/load.log" "$UFMT" "$RCTCTL" "$STATE" $SIZE $GRAN "$T/s$k.raw" "s$k" "$prev" 2>&1) || rc=$?
    res=$(grep '^RESULT' <<<"$out" || true)
    [[ -n "$res" ]] || { printf '%s\n' "$out"; fail "the check of s$k crashed"; }
    ((rc == 0)) || { printf '%s\n' "$out" | grep -v '^RESULT'; fail "snapshot s$k is wrong"; }
    declare -A R=()
    for kv in ${res#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    nv=$((nv + ${R[vblocks]})) nfio=$((nfio + ${R[fio_written]}))
    nchanged=$((nchanged + ${R[changed]})) nfchanged=$((nfchanged + ${R[fio_changed]}))
    [[ "$prev" == - ]] || rm -f "$T/$prev.raw"
    prev=s$k
done
ok "$NSNAP snapshots: sha256 as at the cut; $nv verifiable blocks exact; $nfio fio blocks whole and stable; $nchanged blocks changed between neighbours ($nfchanged by fio), all inside the diffs"
daemon_alive
say "PASS"
