#!/bin/bash
# ext4 across snapshots (issue #4), through the kernel: the export is a file
# through nbdfuse, ext4 on it is loop-mounted and kept mounted throughout:
#  - write files (set 1), fsfreeze -f, snapshot s1, fsfreeze -u;
#  - change the tree (new files, an overwritten file, a deleted file, a file
#    grown in place), fsfreeze -f, snapshot s2, fsfreeze -u;
#  - change it again (so the live disk differs from both snapshots), with a
#    snapshot mounted while the live filesystem is written.
# Then each snapshot's export NAME@SNAP, through `nbdfuse --readonly`, must
# pass `e2fsck -fn`, mount with `-o ro,loop`, and hold exactly the files
# (paths and sha256) the filesystem had at its cut; the live filesystem must
# hold its own files, and fsck clean once unmounted.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdfuse fusermount3 mkfs.ext4 e2fsck mount umount mountpoint sha256sum fsfreeze
[[ -c /dev/fuse ]] || skip "/dev/fuse does not exist"
((EUID == 0)) || skip "needs root to loop-mount and fsfreeze"

say "can this machine loop-mount ext4? (probe with a scratch image)"
truncate -s 16M "$T/probe.img"
mkfs.ext4 -q -F "$T/probe.img" || skip "mkfs.ext4 on a scratch file failed"
mkdir -p "$T/probe"
if ! mount -o loop "$T/probe.img" "$T/probe" 2>"$T/probe.err"; then
    skip "cannot loop-mount here: $(cat "$T/probe.err")"
fi
umount "$T/probe"
rm -f "$T/probe.img"
ok "loop mounts work"

SIZE=$((256 << 20))
start_rctd
rctctl create fs --size $SIZE >/dev/null

# fuse_up DIR URI [ARGS...]: nbdfuse URI at DIR/disk, wait until it is ready;
# sets FUSE_PID.
fuse_up() {
    local dir=$1 u=$2
    shift 2
    mkdir -p "$dir"
    rm -f "$dir.pid"
    nbdfuse "$@" -P "$dir.pid" "$dir/disk" "$u" >>"$T/nbdfuse.log" 2>&1 &
    FUSE_PID=$!
    track_pid "$FUSE_PID"
    track_mount "$dir"
    wait_for_file "$dir.pid" 20 || fail "nbdfuse $u did not come up within 20 s"
    [[ -f "$dir/disk" ]] || fail "nbdfuse is up but $dir/disk does not exist"
    local sz
    sz=$(stat -c %s "$dir/disk")
    ((sz == SIZE)) || fail "$dir/disk is $sz bytes, want $SIZE"
}
fuse_down() {
    local dir=$1 pid=$2 rc=0
    fusermount3 -u "$dir" || fail "fusermount3 -u $dir failed"
    wait "$pid" || rc=$?
    ((rc == 0)) || fail "nbdfuse at $dir exited $rc"
}
# sums DIR OUT: "sha256  ./path" of every file under DIR, sorted.
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) >"$2"; }
# cut NAME: freeze the filesystem, snapshot, thaw; the sums of the tree at the
# cut go to sums-NAME.
cut() {
    sync
    sums "$MNT" "$T/sums-$1"
    fsfreeze -f "$MNT" || fail "fsfreeze -f failed"
    local rc=0
    rctctl snapshot fs --name "$1" >"$T/cut-$1.out" 2>&1 || rc=$?
    fsfreeze -u "$MNT" || fail "fsfreeze -u failed"
    ((rc == 0)) || { cat "$T/cut-$1.out"; fail "rctctl snapshot fs --name $1 failed"; }
    ok "snapshot $1 of a frozen filesystem: $(wc -l <"$T/sums-$1") files"
}

say "mkfs.ext4 through nbdfuse, mount -o loop"
fuse_up "$T/fuse" "$(uri fs)"
LIVE_FUSE=$FUSE_PID
mkfs.ext4 -q -F -E nodiscard "$T/fuse/disk" || fail "mkfs.ext4 failed"
MNT=$T/mnt
mkdir -p "$MNT"
mount -o loop "$T/fuse/disk" "$MNT" || fail "mount -o loop failed"
track_mount "$MNT"
ok "mounted"

say "set 1, then snapshot s1"
mkdir -p "$MNT/dir/sub"
head -c 1000 /dev/urandom >"$MNT/small"
head -c $((3 << 20)) /dev/urandom >"$MNT/dir/medium"
head -c $((20 << 20)) /dev/urandom >"$MNT/dir/sub/large"
head -c $((1 << 20)) /dev/urandom >"$MNT/grows"
for i in $(seq 1 100); do echo "one $i $RANDOM" >"$MNT/dir/many-$i"; done
cut s1

say "set 2 (new, overwritten, deleted, grown files), then snapshot s2"
head -c $((8 << 20)) /dev/urandom >"$MNT/dir/new-in-2"
dd if=/dev/urandom of="$MNT/dir/medium" bs=64k count=10 seek=7 conv=notrunc status=none
rm "$MNT/dir/many-7" "$MNT/dir/sub/large"
head -c $((2 << 20)) /dev/urandom >>"$MNT/grows"
for i in $(seq 1 50); do echo "two $i $RANDOM" >"$MNT/dir/many-$i"; done
cut s2
cmp -s "$T/sums-s1" "$T/sums-s2" && fail "the tree did not change between s1 and s2 (the test would prove nothing)"

say "set 3 on the live filesystem"
head -c $((5 << 20)) /dev/urandom >"$MNT/after-2"
echo changed >"$MNT/small"
rm -r "$MNT/dir/many-1"
sync
sums "$MNT" "$T/sums-live"
rctctl snapshots fs | sed 's/^/   | /'

# check_snapshot NAME: nbdfuse --readonly NAME's export, e2fsck -fn, mount
# ro,loop, compare the files with sums-NAME. Writes to the live filesystem
# meanwhile.
check_snapshot() {
    local s=$1 dir=$T/fuse-$1 m=$T/mnt-$1 rc=0
    say "fs@$s: nbdfuse --readonly, e2fsck -fn, mount -o ro,loop, compare"
    fuse_up "$dir" "$(uri "fs@$s")" --readonly
    local pid=$FUSE_PID
    [[ ! -w "$dir/disk" ]] || [[ "$(stat -c %A "$dir/disk")" != *w* ]] ||
        fail "the read-only nbdfuse file of fs@$s is writable"
    e2fsck -fn "$dir/disk" >"$T/fsck-$s.out" 2>&1 || rc=$?
    tail -n 1 "$T/fsck-$s.out" | sed 's/^/   | /'
    ((rc == 0)) || { cat "$T/fsck-$s.out"; fail "e2fsck -fn of fs@$s exited $rc"; }
    mkdir -p "$m"
    mount -o ro,loop "$dir/disk" "$m" 2>"$T/mount-$s.err" ||
        { cat "$T/mount-$s.err"; fail "mount -o ro,loop of fs@$s failed"; }
    track_mount "$m"
    # the live filesystem keeps working while the snapshot is mounted
    head -c $((1 << 20)) /dev/urandom >"$MNT/while-$s-mounted"
    sync
    sums "$m" "$T/got-$s"
    diff -u "$T/sums-$s" "$T/got-$s" >"$T/diff-$s" || {
        head -n 20 "$T/diff-$s"
        fail "fs@$s does not hold exactly the files of its cut (- at the cut, + in the snapshot)"
    }
    umount "$m" || fail "umount of fs@$s failed"
    fuse_down "$dir" "$pid"
    ok "clean; $(wc -l <"$T/got-$s") files, every path and sha256 as at the cut"
}
check_snapshot s1
check_snapshot s2
sums "$MNT" "$T/sums-live"

say "the live filesystem: its files, then unmounted and fsck'd"
umount "$MNT" || fail "umount of the live filesystem failed"
mount -o loop "$T/fuse/disk" "$MNT" || fail "remounting the live filesystem failed"
sums "$MNT" "$T/got-live"
diff -u "$T/sums-live" "$T/got-live" || fail "the live filesystem lost files across the snapshots"
umount "$MNT" || fail "umount failed"
rc=0
e2fsck -fn "$T/fuse/disk" >"$T/fsck-live.out" 2>&1 || rc=$?
tail -n 1 "$T/fsck-live.out" | sed 's/^/   | /'
((rc == 0)) || { cat "$T/fsck-live.out"; fail "e2fsck -fn of the live export exited $rc"; }
fuse_down "$T/fuse" "$LIVE_FUSE"
ok "$(wc -l <"$T/got-live") files intact; clean"

daemon_alive
say "PASS"
