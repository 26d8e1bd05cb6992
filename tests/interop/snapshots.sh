#!/bin/bash
# Snapshots through real NBD clients (issue #4), against images built
# locally:
#  - random writes A, snapshot s1, B, snapshot s2, C (each applied to the
#    export and to a local image): nbdcopy of NAME@s1 = A, NAME@s2 = A+B,
#    the live disk = A+B+C; NBD LIST shows the NAME@SNAP exports;
#  - `rctctl diff NAME s1 s2` (text and --json) = the chunks B wrote;
#    `qemu:dirty-bitmap:s1` on NAME@s2 says the same;
#  - NAME@s2 is read-only: flagged so, and a write sent anyway gets EPERM;
#  - clone NAME@s1 = A and is independent; restore from s1 (refused with a
#    client connected, exit 4) gives A, leaves s2 = A+B, and `changes
#    --since s2` covers every chunk the restore rewrote;
#  - snapshot-delete (refused while NAME@SNAP has a client, exit 4) keeps a
#    checkpoint that diffs still use; the export is gone; checkpoint-delete
#    of a snapshot is refused (exit 4);
#  - --snapshot-store-limit 1M: overwriting 4 MiB succeeds and reads back,
#    the snapshot turns INVALID with a reason naming the limit and its
#    export refuses to open;
#  - a clean restart keeps every listing and every byte.
# SNAPSHOTS_SEED fixes the random writes (printed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdcopy nbdinfo nbdsh cmp
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
: "${SNAPSHOTS_SEED:=$(($(date +%s) % 100000))}"
say "seed $SNAPSHOTS_SEED"

SIZE=$((16 << 20))
G=$((64 << 10))

# `snapshots writes URI IMG SEED N`: N random writes (unaligned offsets and
# lengths, some crossing chunks, some all-zero data) to the export URI and to
# the local image IMG alike; prints "offset length" of each.
# `snapshots chunks G SIZE FILE...`: the chunks the "offset length" lines of
# FILEs touch, coalesced, as "offset length".
# `snapshots differing G X Y`: the chunks where images X and Y differ.
# map_dirty: nbdinfo --json map on stdin -> dirty extents, coalesced.
map_dirty() {
    py -m rcttest.interop.snapshots map-dirty
}
# covers NEED HAVE: fail unless every chunk of NEED is inside an extent of HAVE.
covers() {
    py -m rcttest.interop.snapshots covers "$1" "$2" "$G"
}
# same_file WHAT GOT WANT
same_file() { cmp "$2" "$3" >/dev/null || { cmp "$2" "$3" || true; fail "$1: content differs"; }; }
# read_export EXPORT OUT: nbdcopy the export into OUT.
read_export() {
    rm -f "$2"
    nbdcopy "$(uri "$1")" "$2" || fail "nbdcopy of $1 failed"
}
# expect_no_open EXPORT: a client must not be able to open it.
expect_no_open() {
    local rc=0
    nbdinfo "$(uri "$1")" >noopen.txt 2>&1 || rc=$?
    sed 's/^/   | /' noopen.txt | head -n 3
    ((rc != 0)) || fail "export $1 still opens"
    ok "export $1 does not open (nbdinfo exit $rc)"
}
# hold EXPORT: keep one NBD client connected to EXPORT (until killed); sets HOLD_PID.
hold() {
    rm -f held.flag
    bg_nbdsh -u "$(uri "$1")" -c 'import time, pathlib; pathlib.Path("held.flag").touch(); time.sleep(120)' &
    HOLD_PID=$!
    track_pid "$HOLD_PID"
    wait_for_file held.flag 20 || true
    [[ -e held.flag ]] || fail "could not connect a client to $1"
}
release() { kill "$HOLD_PID" 2>/dev/null || true; wait "$HOLD_PID" 2>/dev/null || true; }

start_rctd
rctctl create d --size $SIZE --granularity 64K >/dev/null
U=$(uri d)
truncate -s $SIZE img.raw

# ---------------------------------------------------------------------------
say "writes A, snapshot s1, writes B, snapshot s2, writes C"
py -m rcttest.interop.snapshots writes "$U" img.raw $((SNAPSHOTS_SEED * 3 + 0)) 40 >A.txt || fail "writing A failed"
cp img.raw A.raw
TOK1=$(rctctl snapshot d --name s1 2>s1.err) || { cat s1.err; fail "rctctl snapshot d --name s1 failed"; }
[[ "$TOK1" == rct1.* ]] || fail "snapshot s1 printed no token: '$TOK1'"
sed 's/^/   | /' s1.err
py -m rcttest.interop.snapshots writes "$U" img.raw $((SNAPSHOTS_SEED * 3 + 1)) 25 >B.txt || fail "writing B failed"
cp img.raw AB.raw
TOK2=$(rctctl snapshot d --name s2 2>/dev/null) || fail "rctctl snapshot d --name s2 failed"
py -m rcttest.interop.snapshots writes "$U" img.raw $((SNAPSHOTS_SEED * 3 + 2)) 25 >C.txt || fail "writing C failed"
cp img.raw ABC.raw
rctctl snapshots d | sed 's/^/   | /'
ok "A: $(wc -l <A.txt) writes, B: $(wc -l <B.txt), C: $(wc -l <C.txt)"

say "NBD LIST shows d@s1 and d@s2"
nbdinfo --list --json "$U" >list.json || fail "nbdinfo --list failed"
py -m rcttest.interop.snapshots listed list.json d d@s1 d@s2 || fail "NBD LIST lacks d@s1 or d@s2"
ok "listed"

say "contents: d@s1 = A, d@s2 = A+B, live = A+B+C"
read_export d@s1 got-s1.raw
read_export d@s2 got-s2.raw
read_export d got-live.raw
same_file "d@s1 vs A" got-s1.raw A.raw
same_file "d@s2 vs A+B" got-s2.raw AB.raw
same_file "live vs A+B+C" got-live.raw ABC.raw
ok "all three byte-identical to the local images"

say "diff d s1 s2 = the chunks B wrote; qemu:dirty-bitmap:s1 on d@s2 agrees"
py -m rcttest.interop.snapshots chunks $G $SIZE B.txt >want-s1-s2.txt
rctctl diff d s1 s2 >diff-s1-s2.txt || fail "rctctl diff d s1 s2 failed"
diff -u want-s1-s2.txt diff-s1-s2.txt || fail "diff s1 s2 is not exactly B's chunks (- expected, + rct)"
rctctl --json diff d "$TOK1" s2 | py -m rcttest.interop.snapshots extents-json >diff-json.txt || fail "rctctl --json diff d TOKEN(s1) s2 failed"
diff -u want-s1-s2.txt diff-json.txt || fail "diff --json from s1's token differs"
nbdinfo --json --map=qemu:dirty-bitmap:s1 "$(uri d@s2)" | map_dirty >bitmap-s1.txt ||
    fail "nbdinfo --map=qemu:dirty-bitmap:s1 on d@s2 failed"
diff -u want-s1-s2.txt bitmap-s1.txt || fail "qemu:dirty-bitmap:s1 on d@s2 is not B's chunks"
py -m rcttest.interop.snapshots chunks $G $SIZE B.txt C.txt >want-s1-live.txt
rctctl diff d s1 live >diff-s1-live.txt || fail "rctctl diff d s1 live failed"
diff -u want-s1-live.txt diff-s1-live.txt || fail "diff s1 live is not B+C's chunks"
ok "$(wc -l <want-s1-s2.txt) extents, $(awk '{s+=$2} END {print s}' want-s1-s2.txt) bytes; diff s1 live = B+C"

say "d@s2 is read-only"
nbdsh -u "$(uri d@s2)" -c '
import errno
assert h.is_read_only(), "d@s2 is not flagged read-only"
h.set_strict_mode(0)       # send the write anyway: the server must refuse it
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("a write to d@s2 succeeded")
except nbd.Error as e:
    print("   write refused:", e.string, "errno", e.errno)
    # errno is a name in this libnbd, a number in others
    assert e.errno in (errno.EPERM, "EPERM"), e.errno' || fail "d@s2 accepted a write, or refused it without EPERM"
read_export d@s2 got-s2b.raw
same_file "d@s2 after the refused write" got-s2b.raw AB.raw
ok "flagged read-only, write got EPERM, content unchanged"

say "clone d@s1 -> c1 = A, independent of d@s1"
rctctl clone d@s1 c1 | sed 's/^/   | /'
read_export c1 got-c1.raw
same_file "clone c1 vs A" got-c1.raw A.raw
nbdsh -u "$(uri c1)" -c 'h.pwrite(b"\xee" * 70000, 12345); h.flush()' || fail "writing to the clone failed"
read_export d@s1 got-s1c.raw
same_file "d@s1 after writing to its clone" got-s1c.raw A.raw
ok "clone = A; writing it leaves d@s1 alone"

say "restore d --from s1"
hold d
expect_rc 4 rctctl restore d --from s1
release
read_export d got-live2.raw
same_file "live after the refused restore" got-live2.raw ABC.raw
rctctl restore d --from s1 | sed 's/^/   | /'
read_export d got-restored.raw
same_file "live after restore vs A" got-restored.raw A.raw
read_export d@s2 got-s2c.raw
same_file "d@s2 after restoring s1" got-s2c.raw AB.raw
read_export d@s1 got-s1d.raw
same_file "d@s1 after restoring it" got-s1d.raw A.raw
py -m rcttest.interop.snapshots differing $G AB.raw A.raw >rewritten.txt
rctctl changes d --since s2 >changes-s2.txt || fail "changes --since s2 failed after restore"
covers rewritten.txt changes-s2.txt || fail "changes --since s2 misses chunks the restore rewrote"
ok "live = A, s1 = A, s2 = A+B; changes --since s2 ($(wc -l <changes-s2.txt) extents) covers the $(wc -l <rewritten.txt) rewritten chunks"
cp A.raw img.raw  # the local image follows the disk again

say "snapshot-delete d s1"
hold d@s1
expect_rc 4 rctctl snapshot-delete d s1
# ?force=true, as every other endpoint spells the flag: the client goes.
code=$(curl -s -o force.json -w '%{http_code}' -X DELETE --unix-socket "$STATE/control.sock" \
    "http://localhost/v1/disks/d/snapshots/s1?force=true")
[[ $code == 2?? ]] || { cat force.json; fail "DELETE ...?force=true of a snapshot with a client answered $code"; }
ok "DELETE /v1/disks/d/snapshots/s1?force=true while d@s1 has a client: $code"
release
rctctl --json snapshots d >snaps.json
py -m rcttest.interop.snapshots deleted snaps.json s1 s2 || fail "s1 still listed as a snapshot (or s2 gone)"
rctctl checkpoints d >cps.txt
grep -q '^s1 ' cps.txt || { cat cps.txt; fail "s1 is not kept as a checkpoint"; }
rctctl diff d s1 s2 >diff-after-del.txt || fail "diff d s1 s2 failed after deleting snapshot s1"
diff -u want-s1-s2.txt diff-after-del.txt || fail "diff s1 s2 changed after deleting snapshot s1"
expect_no_open d@s1
read_export d@s2 got-s2d.raw
same_file "d@s2 after deleting s1" got-s2d.raw AB.raw
ok "s1 is a checkpoint; diff from it unchanged; s2 intact"

say "checkpoint-delete of snapshot s2 is refused"
expect_rc 4 rctctl checkpoint-delete d s2
rctctl --json snapshots d | grep -q '"s2"' || fail "s2 disappeared after the refused checkpoint-delete"
read_export d@s2 got-s2e.raw
same_file "d@s2 after the refused checkpoint-delete" got-s2e.raw AB.raw
ok "refused; s2 intact"

# ---------------------------------------------------------------------------
say "--snapshot-store-limit 1M: overwrite 4 MiB after a snapshot"
S2=$T/limited
start_rctd_at "$S2" --snapshot-store-limit 1M
rctl2() { "$RCTCTL" --state-dir "$S2" "$@"; }
uri2() { printf 'nbd+unix:///%s?socket=%s/nbd.sock\n' "$1" "$S2"; }
rctl2 create l --size 8M --granularity 64K >/dev/null
head -c $((8 << 20)) /dev/urandom >l.raw
nbdcopy l.raw "$(uri2 l)" || fail "filling l failed"
rctl2 snapshot l --name full >/dev/null 2>&1 || fail "snapshot l failed"
head -c $((4 << 20)) /dev/urandom >new.raw
py -m rcttest.interop.snapshots overwrite "$(uri2 l)" new.raw $((2 << 20)) ||
    fail "a write was refused after the store limit was reached"
dd if=new.raw of=l.raw bs=1M seek=2 conv=notrunc status=none
rm -f got-l.raw
nbdcopy "$(uri2 l)" got-l.raw || fail "reading l back failed"
same_file "l after overwriting 4 MiB past the limit" got-l.raw l.raw
ok "every write accepted and read back"
rctl2 snapshots l | sed 's/^/   | /'
rctl2 --json snapshots l >lim.json
py -m rcttest.interop.snapshots limit-invalid lim.json full $((1 << 20)) ||
    fail "store limit: snapshot not INVALID with a reason naming the limit (or store over its limit)"
rc=0
nbdinfo "$(uri2 l@full)" >lim-open.txt 2>&1 || rc=$?
sed 's/^/   | /' lim-open.txt | head -n 3
((rc != 0)) || fail "the INVALID snapshot's export l@full still opens"
ok "full is INVALID (limit), its export refuses to open, the store stays within 1 MiB"
stop_rctd_at "$S2"

# ---------------------------------------------------------------------------
say "clean restart keeps snapshots, checkpoints and contents"
# the listing without counters that restart with the daemon
listing() {
    rctctl --json snapshots d | py -m rcttest.interop.snapshots listing
}
listing >before.txt
rctctl checkpoints d >cps-before.txt
stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT on SIGTERM"
start_rctd
listing >after.txt
rctctl checkpoints d >cps-after.txt
sed 's/^/   | /' after.txt
diff -u before.txt after.txt || fail "snapshot listing changed across a clean restart"
diff -u cps-before.txt cps-after.txt || fail "checkpoint listing changed across a clean restart"
read_export d@s2 got-s2f.raw
same_file "d@s2 after restart" got-s2f.raw AB.raw
read_export d got-live3.raw
same_file "live after restart" got-live3.raw A.raw
rctctl diff d s1 s2 >diff-restart.txt || fail "diff s1 s2 failed after restart"
diff -u want-s1-s2.txt diff-restart.txt || fail "diff s1 s2 changed across restart"
expect_no_open d@s1
start_rctd_at "$S2" --snapshot-store-limit 1M
rctl2 --json snapshots l | py -m rcttest.interop.snapshots still-limit-invalid full ||
    fail "after restart, snapshot l@full is no longer INVALID for the limit"
rc=0
nbdinfo "$(uri2 l@full)" >/dev/null 2>&1 || rc=$?
((rc != 0)) || fail "after restart, the INVALID l@full opens"
rm -f got-l2.raw
nbdcopy "$(uri2 l)" got-l2.raw || fail "reading l after restart failed"
same_file "l after restart" got-l2.raw l.raw
ok "listings, exports and contents identical after the restart"

daemon_alive
say "PASS"
