#!/bin/bash
# qemu:dirty-bitmap:CHECKPOINT against qemu-nbd's persistent qcow2 bitmaps
# (docs: /work/shared/reference/nbd-notes.md §2):
#  - the golden fixture of libnbd's interop/dirty-bitmap.sh, replayed on a 1M
#    rct disk (granularity 64K) through qemu-io, must map exactly like
#    `qemu-nbd -r -f qcow2 -B bitmap0 ref.qcow2`;
#  - a larger random pattern (writes, zeroes, discards, unaligned, two
#    checkpoints) on a 64M disk, the same comparison with qcow2 bitmaps of
#    granularity 65536;
#  - an unknown bitmap makes nbdinfo fail; LIST_META_CONTEXT answers the same
#    as qemu-nbd for qemu:, qemu:dirty-bitmap:, base: and friends;
#  - `qemu-img map` with x-dirty-bitmap shows exactly the dirty areas as
#    "data": false; `rctctl changes --since` equals the dirty extents;
#  - REQ_ONE block status returns exactly one extent;
#  - stale tokens (malformed, other disk, recreated disk, deleted checkpoint)
#    fail with a non-zero exit and a message that asks for a full backup.
# DIRTY_BITMAP_SEED fixes the random pattern (printed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires qemu-img qemu-io qemu-nbd nbdinfo nbdsh
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
: "${DIRTY_BITMAP_SEED:=$(( $(date +%s) % 100000 ))}"

SOCK=$STATE/nbd.sock
start_rctd

# qio TARGET FMT CMD...: qemu-io, failing on any error.
qio() {
    local target=$1 fmt=$2 c out rc=0
    shift 2
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    out=$(qemu-io -f "$fmt" "$target" "${args[@]}" 2>&1) || rc=$?
    if ((rc != 0)) || grep -qiE 'failed|error|not supported' <<<"$out"; then
        printf '%s\n' "$out" | sed 's/^/   | /'
        fail "qemu-io on $target failed: $*"
    fi
}
# map_of ARGS...: nbdinfo --map --json ARGS, normalized to "offset length type" lines.
map_of() {
    nbdinfo --json "$@" | py -m rcttest.interop.dirty_bitmap map-json
}
# same_map WHAT A B: fail unless the two normalized maps are identical.
same_map() {
    if ! diff -u "$2" "$3" >"$T/diff.txt"; then
        sed 's/^/   | /' "$T/diff.txt"
        fail "$1: rct and qemu-nbd maps differ (- rct, + qemu-nbd)"
    fi
}
# expect_full_backup WHAT CMD...: CMD must fail and say "full backup".
expect_full_backup() {
    local what=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | sed 's/^/   | /'
    ((rc != 0)) || fail "$what: '$*' succeeded"
    grep -q 'full backup' <<<"$out" || fail "$what: the message does not mention a full backup"
    ok "$what: exit $rc, asks for a full backup"
}

# ---------------------------------------------------------------------------
say "golden fixture (libnbd interop/dirty-bitmap.sh) on a 1M disk"
rctctl create d0 --size 1M --granularity 64K >/dev/null
U=$(uri d0)
qio "$U" raw 'w 0 64k'
TOKEN0=$(rctctl checkpoint d0 --name bitmap0 2>/dev/null | head -n1)
[[ "$TOKEN0" == rct1.* ]] || fail "checkpoint printed no token: $TOKEN0"
qio "$U" raw 'w 64k 64k' 'w -z 512k 64k'

qemu-img create -f qcow2 ref.qcow2 1M >/dev/null
qio ref.qcow2 qcow2 'w 0 64k'
qemu-img bitmap --add --enable -f qcow2 ref.qcow2 bitmap0
qio ref.qcow2 qcow2 'w 64k 64k' 'w -z 512k 64k'

nbdinfo --list "$U" >list.txt
grep -q 'qemu:dirty-bitmap:bitmap0' list.txt || { cat list.txt; fail "nbdinfo --list does not show qemu:dirty-bitmap:bitmap0"; }
ok "nbdinfo --list shows qemu:dirty-bitmap:bitmap0"

nbdinfo --map=qemu:dirty-bitmap:bitmap0 "$U" >rct.txt
nbdinfo --map=qemu:dirty-bitmap:bitmap0 -- [ qemu-nbd -r -f qcow2 -B bitmap0 ref.qcow2 ] >ref.txt
sed 's/^/   rct | /' rct.txt
# whitespace-normalized text
same_map "golden fixture (text)" <(awk '{$1=$1; print}' rct.txt) <(awk '{$1=$1; print}' ref.txt)
cat >golden.txt <<'EOF'
0 65536 0 clean
65536 65536 1 dirty
131072 393216 0 clean
524288 65536 1 dirty
589824 458752 0 clean
EOF
same_map "golden fixture vs the notes" <(awk '{$1=$1; print}' rct.txt) golden.txt
map_of --map=qemu:dirty-bitmap:bitmap0 "$U" >rct.json.txt
map_of --map=qemu:dirty-bitmap:bitmap0 -- [ qemu-nbd -r -f qcow2 -B bitmap0 ref.qcow2 ] >ref.json.txt
same_map "golden fixture (--json)" rct.json.txt ref.json.txt
nbdinfo --map=qemu:dirty-bitmap:bitmap0 --totals "$U" >rct.tot
nbdinfo --map=qemu:dirty-bitmap:bitmap0 --totals -- [ qemu-nbd -r -f qcow2 -B bitmap0 ref.qcow2 ] >ref.tot
same_map "golden fixture (--totals)" rct.tot ref.tot
ok "identical to qemu-nbd -B bitmap0 (text, --json and --totals)"

# ---------------------------------------------------------------------------
say "unknown bitmap"
rc=0
nbdinfo --map=qemu:dirty-bitmap:nope "$U" >nope.txt 2>&1 || rc=$?
sed 's/^/   | /' nope.txt
((rc != 0)) || fail "nbdinfo --map=qemu:dirty-bitmap:nope succeeded"
ok "nbdinfo --map=qemu:dirty-bitmap:nope exited $rc"

# ---------------------------------------------------------------------------
say "rctctl changes --since bitmap0 / the token equals the dirty extents"
# dirty_extents FILE: the type-1 lines of a normalized map, merged, as "offset length"
dirty_extents() {
    py -m rcttest.interop.dirty_bitmap dirty-extents "$1"
}
dirty_extents rct.json.txt >dirty.txt
rctctl changes d0 --since bitmap0 >changes.txt
rctctl changes d0 --since "$TOKEN0" >changes-token.txt
diff -u dirty.txt changes.txt || fail "changes --since bitmap0 differs from the dirty extents"
diff -u dirty.txt changes-token.txt || fail "changes --since TOKEN differs from the dirty extents"
rctctl --json changes d0 --since bitmap0 | py -m rcttest.interop.dirty_bitmap changes-json >changes-json.txt
diff -u dirty.txt changes-json.txt || fail "changes --json differs from the dirty extents"
sed 's/^/   | /' changes.txt
ok "changes (name, token, --json) = dirty extents"

# ---------------------------------------------------------------------------
say "qemu-img map with x-dirty-bitmap (dirty shows as \"data\": false)"
# check_qemu_img_map DISK BITMAP DIRTY_FILE
check_qemu_img_map() {
    qemu-img map --output=json --image-opts \
        "driver=nbd,server.type=unix,server.path=$SOCK,export=$1,x-dirty-bitmap=qemu:dirty-bitmap:$2" \
        >qmap.json || fail "qemu-img map with x-dirty-bitmap=qemu:dirty-bitmap:$2 failed"
    py -m rcttest.interop.dirty_bitmap qemu-img-map qmap.json "$3"
}
check_qemu_img_map d0 bitmap0 dirty.txt || fail "qemu-img map disagrees with the dirty bitmap"
ok "qemu-img map: \"data\": false exactly on the dirty extents"

# ---------------------------------------------------------------------------
say "REQ_ONE block status returns exactly one extent"
# req_one URI CONTEXT: block_status with REQ_ONE at several offsets and lengths;
# one chunk for the context, one extent in it, no longer than asked.
req_one() {
    py -m rcttest.interop.dirty_bitmap req-one "$1" "$2"
}
req_one "$U" qemu:dirty-bitmap:bitmap0 || fail "REQ_ONE on qemu:dirty-bitmap:bitmap0"
req_one "$U" base:allocation || fail "REQ_ONE on base:allocation"
# and through nbdsh, as in the notes
nbdsh -c 'h.add_meta_context("qemu:dirty-bitmap:bitmap0")' -u "$U" -c '
ext = []
def cb(ctx, off, e, err):
    if ctx.startswith("qemu:dirty-bitmap:"):
        ext.extend(zip(e[0::2], e[1::2]))
h.block_status(h.get_size(), 0, cb)
print("   full:", ext)
assert ext == [(65536, 0), (65536, 1), (393216, 0), (65536, 1), (458752, 0)], ext
ext.clear()
h.block_status(h.get_size(), 0, cb, nbd.CMD_FLAG_REQ_ONE)
print("   REQ_ONE:", ext)
assert ext == [(65536, 0)], ext' || fail "nbdsh block_status check"
ok "REQ_ONE gives one extent per context"

# ---------------------------------------------------------------------------
say "LIST_META_CONTEXT answers like qemu-nbd"
# list_contexts: one line per query: "QUERY -> sorted contexts"
LIST_PY='
for q in ([], ["qemu:"], ["qemu:dirty-bitmap:"], ["base:"], ["base:allocation"], ["x-unknown:foo"],
          ["qemu:dirty-bitmap:bitmap0"], ["qemu:dirty-bitmap:nope"], ["qemu:dirty-bitmap:", "base:"]):
    h.clear_meta_contexts()
    for c in q:
        h.add_meta_context(c)
    got = []
    h.opt_list_meta_context(lambda c: got.append(c) or 0)
    print(q, "->", sorted(got))
h.opt_abort()'
nbdsh --opt-mode -u "$U" -c "$LIST_PY" >list-rct.txt || fail "LIST_META_CONTEXT against rct failed"
nbdsh --opt-mode -c 'h.connect_systemd_socket_activation(["qemu-nbd", "-r", "-f", "qcow2", "-B", "bitmap0", "ref.qcow2"])' \
    -c "$LIST_PY" >list-ref.txt || fail "LIST_META_CONTEXT against qemu-nbd failed"
sed 's/^/   | /' list-rct.txt
diff -u list-rct.txt list-ref.txt >list.diff || { sed 's/^/   | /' list.diff; fail "LIST_META_CONTEXT answers differ from qemu-nbd's (- rct, + qemu-nbd)"; }
grep -qxF "['qemu:'] -> ['qemu:dirty-bitmap:bitmap0']" list-rct.txt || fail "qemu: does not list exactly the bitmap"
grep -qxF "['base:'] -> ['base:allocation']" list-rct.txt || fail "base: does not list base:allocation"
ok "same answers as qemu-nbd for every query"

# ---------------------------------------------------------------------------
say "token errors"
expect_full_backup "malformed token" rctctl changes d0 --since rct1.AAAA
bad=${TOKEN0:0:20}$( [[ ${TOKEN0:20:1} == A ]] && echo B || echo A )${TOKEN0:21}
expect_full_backup "token with one character changed" rctctl changes d0 --since "$bad"
expect_full_backup "truncated token" rctctl changes d0 --since "${TOKEN0:0:$((${#TOKEN0} - 3))}"

rctctl create other --size 1M >/dev/null
OTHER=$(rctctl checkpoint other --name bitmap0 2>/dev/null | head -n1)
expect_full_backup "token of another disk" rctctl changes d0 --since "$OTHER"

rctctl create again --size 1M >/dev/null
OLD=$(rctctl checkpoint again --name cp 2>/dev/null | head -n1)
rctctl changes again --since "$OLD" >/dev/null || fail "a fresh token does not work"
rctctl delete again >/dev/null
rctctl create again --size 1M >/dev/null
rctctl checkpoint again --name cp >/dev/null 2>&1
expect_full_backup "token of a deleted and recreated disk of the same name" rctctl changes again --since "$OLD"

DEL=$(rctctl checkpoint d0 --name doomed 2>/dev/null | head -n1)
rctctl changes d0 --since "$DEL" >/dev/null || fail "the doomed checkpoint's token does not work before deletion"
rctctl checkpoint-delete d0 doomed >/dev/null
expect_full_backup "token of a deleted checkpoint" rctctl changes d0 --since "$DEL"
expect_full_backup "--until with a malformed token" rctctl changes d0 --since bitmap0 --until rct1.AAAA
# the deleted checkpoint must not have disturbed bitmap0
rctctl changes d0 --since bitmap0 >changes2.txt
diff -u changes.txt changes2.txt || fail "deleting a later checkpoint changed changes --since bitmap0"
ok "bitmap0 unchanged after deleting a later checkpoint"

# ---------------------------------------------------------------------------
say "random pattern on a 64M disk, two checkpoints, against qcow2 bitmaps (seed $DIRTY_BITMAP_SEED)"
BIG=$((64 << 20))
rctctl create d1 --size $BIG --granularity 64K >/dev/null
U1=$(uri d1)
qemu-img create -f qcow2 big.qcow2 $BIG >/dev/null
# gen N: N random qemu-io commands (write, zero, zero with unmap, discard;
# unaligned offsets and lengths; some crossing chunk boundaries)
gen() {
    py -m rcttest.interop.dirty_bitmap gen "$1" "$DIRTY_BITMAP_SEED" "$BIG"
}
# apply FILE: the commands on both rct and qcow2
apply() {
    local cmds=()
    mapfile -t cmds <"$1"
    qio "$U1" raw "${cmds[@]}"
    qio big.qcow2 qcow2 "${cmds[@]}"
}
gen 40 >pre.txt
gen 150 >mid.txt
gen 100 >post.txt
apply pre.txt
T1=$(rctctl checkpoint d1 --name b1 2>/dev/null | head -n1)
qemu-img bitmap --add --enable --granularity 65536 -f qcow2 big.qcow2 b1
apply mid.txt
rctctl checkpoint d1 --name b2 >/dev/null 2>&1
qemu-img bitmap --add --enable --granularity 65536 -f qcow2 big.qcow2 b2
apply post.txt
for b in b1 b2; do
    map_of --map=qemu:dirty-bitmap:$b "$U1" >rct-$b.txt
    map_of --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -f qcow2 -B b1 -B b2 big.qcow2 ] >ref-$b.txt
    same_map "random pattern, $b (--json)" rct-$b.txt ref-$b.txt
    nbdinfo --map=qemu:dirty-bitmap:$b "$U1" | awk '{$1=$1; print}' >rct-$b.text
    nbdinfo --map=qemu:dirty-bitmap:$b -- [ qemu-nbd -r -f qcow2 -B b1 -B b2 big.qcow2 ] | awk '{$1=$1; print}' >ref-$b.text
    same_map "random pattern, $b (text)" rct-$b.text ref-$b.text
    dirty_extents rct-$b.txt >dirty-$b.txt
    rctctl changes d1 --since $b >changes-$b.txt
    diff -u dirty-$b.txt changes-$b.txt || fail "changes --since $b differs from qemu:dirty-bitmap:$b"
    check_qemu_img_map d1 $b dirty-$b.txt || fail "qemu-img map with x-dirty-bitmap $b disagrees"
    req_one "$U1" qemu:dirty-bitmap:$b >/dev/null || fail "REQ_ONE on qemu:dirty-bitmap:$b"
    ok "$b: $(wc -l <dirty-$b.txt) dirty extents, $(awk '{s+=$2} END {print s}' dirty-$b.txt) bytes; identical to qcow2"
done
# changes --since b1 --until b2 must be exactly what the mid pattern touched
py -m rcttest.interop.dirty_bitmap truth mid.txt 65536 $BIG >truth-mid.txt
rctctl changes d1 --since "$T1" --until b2 >changes-b1-b2.txt
diff -u truth-mid.txt changes-b1-b2.txt || fail "changes --since b1 --until b2 is not exactly the chunks the mid pattern touched"
ok "changes --since TOKEN(b1) --until b2 = exactly the chunks written between the checkpoints"

# multiple bitmaps are listed like qemu-nbd lists them
nbdsh --opt-mode -u "$U1" -c "$LIST_PY" >list-rct1.txt || fail "LIST_META_CONTEXT on d1"
nbdsh --opt-mode -c 'h.connect_systemd_socket_activation(["qemu-nbd", "-r", "-f", "qcow2", "-B", "b1", "-B", "b2", "big.qcow2"])' \
    -c "$LIST_PY" >list-ref1.txt || fail "LIST_META_CONTEXT on qemu-nbd (2 bitmaps)"
# bitmap0 does not exist on either: the query lines agree anyway
diff -u list-rct1.txt list-ref1.txt >list1.diff || { sed 's/^/   | /' list1.diff; fail "LIST_META_CONTEXT with two bitmaps differs from qemu-nbd"; }
ok "two bitmaps: LIST_META_CONTEXT identical to qemu-nbd"

# ---------------------------------------------------------------------------
say "other granularities and a size that is not a multiple of the granularity"
for case in "4K 4096 $(((1 << 20) + 4608))" "1M 1048576 $(((3 << 20) + 512))" "64K 65536 $(((2 << 20) - 512))"; do
    read -r gname gbytes gsize <<<"$case"
    name=g$gname
    rctctl create $name --size $gsize --granularity $gname >/dev/null
    Ug=$(uri $name)
    qemu-img create -f qcow2 $name.qcow2 $gsize >/dev/null
    cmds=("write -P 1 0 1" "write -P 2 $((gsize - 512)) 512" "write -z $((gbytes - 1)) 2"
          "discard $((gsize / 2 - gsize / 2 % 512)) 512" "write -P 3 $((gsize / 3)) $((gbytes + 1))")
    qio "$Ug" raw "write -P 9 4096 4096"
    qio $name.qcow2 qcow2 "write -P 9 4096 4096"
    rctctl checkpoint $name --name bm >/dev/null 2>&1
    qemu-img bitmap --add --enable --granularity $gbytes -f qcow2 $name.qcow2 bm
    qio "$Ug" raw "${cmds[@]}"
    qio $name.qcow2 qcow2 "${cmds[@]}"
    map_of --map=qemu:dirty-bitmap:bm "$Ug" >rct-$name.txt
    map_of --map=qemu:dirty-bitmap:bm -- [ qemu-nbd -r -f qcow2 -B bm $name.qcow2 ] >ref-$name.txt
    same_map "granularity $gname, size $gsize" rct-$name.txt ref-$name.txt
    dirty_extents rct-$name.txt >dirty-$name.txt
    rctctl changes $name --since bm >changes-$name.txt
    diff -u dirty-$name.txt changes-$name.txt || fail "granularity $gname: changes --since bm differs from the bitmap"
    ok "granularity $gname, size $gsize: $(tr '\n' ' ' <dirty-$name.txt)identical to qcow2 and to changes"
done

daemon_alive
say "PASS"
