#!/bin/bash
# A real filesystem on an rctd export, through the kernel: nbdfuse turns the
# export into a file, ext4 is made on it and loop-mounted, files are written,
# the filesystem is remounted and checked, fstrim'd; then the daemon is
# restarted and the export, copied out with qemu-img, must fsck clean and
# still hold the same files.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdfuse fusermount3 mkfs.ext4 e2fsck mount umount mountpoint sha256sum qemu-img
[[ -c /dev/fuse ]] || skip "/dev/fuse does not exist"
((EUID == 0)) || skip "needs root to loop-mount"

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

start_rctd
rctctl create fs --size 256M
U=$(uri fs)

# fuse_up DIR: nbdfuse the export at DIR/disk and wait until it is ready.
fuse_up() {
    local dir=$1
    mkdir -p "$dir"
    rm -f "$T/nbdfuse.pid"
    nbdfuse -P "$T/nbdfuse.pid" "$dir/disk" "$U" >>"$T/nbdfuse.log" 2>&1 &
    FUSE_PID=$!
    track_pid "$FUSE_PID"
    track_mount "$dir"
    wait_for_file "$T/nbdfuse.pid" 20 || fail "nbdfuse did not come up within 20 s"
    [[ -f "$dir/disk" ]] || fail "nbdfuse is up but $dir/disk does not exist"
    local sz
    sz=$(stat -c %s "$dir/disk")
    ((sz == 256 << 20)) || fail "$dir/disk is $sz bytes, want $((256 << 20))"
}
# fuse_down DIR: unmount nbdfuse and wait for it to exit.
fuse_down() {
    local dir=$1
    fusermount3 -u "$dir" || fail "fusermount3 -u $dir failed"
    local rc=0
    wait "$FUSE_PID" || rc=$?
    ((rc == 0)) || fail "nbdfuse exited $rc"
}

say "nbdfuse $T/fuse/disk '$U'"
fuse_up "$T/fuse"
ok "export visible as a 256 MiB file"

say "mkfs.ext4 on the export"
mkfs.ext4 -q -F -E nodiscard "$T/fuse/disk" || fail "mkfs.ext4 failed"
ok "made"

say "mount -o loop, write files with known checksums"
mkdir -p "$T/mnt"
mount -o loop "$T/fuse/disk" "$T/mnt" || fail "mount -o loop failed"
track_mount "$T/mnt"
mkdir -p "$T/mnt/dir/sub"
head -c 1000 /dev/urandom >"$T/mnt/small"
head -c $((3 << 20)) /dev/urandom >"$T/mnt/dir/medium"
head -c $((40 << 20)) /dev/urandom >"$T/mnt/dir/sub/large"
for i in $(seq 1 200); do echo "file $i $RANDOM" >"$T/mnt/dir/many-$i"; done
dd if=/dev/urandom of="$T/mnt/sparse" bs=4k count=3 seek=10000 status=none
(cd "$T/mnt" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
echo "   $(wc -l <"$T/sums") files, $(du -sh "$T/mnt" | cut -f1)"
sync
umount "$T/mnt" || fail "umount failed"
ok "written and unmounted"

say "remount and verify the checksums"
mount -o loop "$T/fuse/disk" "$T/mnt" || fail "remount failed"
(cd "$T/mnt" && sha256sum --quiet -c "$T/sums") || fail "checksums differ after remount"
ok "all $(wc -l <"$T/sums") files intact"

say "delete a file and fstrim (TRIM through the kernel)"
rm "$T/mnt/dir/sub/large"
sed -i '\#./dir/sub/large$#d' "$T/sums"
if command -v fstrim >/dev/null; then
    fstrim -v "$T/mnt" || fail "fstrim failed"
fi
sync
umount "$T/mnt" || fail "umount failed"
ok "trimmed and unmounted"

say "unmount nbdfuse"
fuse_down "$T/fuse"
ok "nbdfuse exited cleanly"

say "restart rctd, then copy the export out with qemu-img and fsck it"
stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT on SIGTERM"
start_rctd
qemu-img convert -f raw -O raw "$U" "$T/copy.img" || fail "qemu-img convert from the export failed"
rc=0
e2fsck -fn "$T/copy.img" >"$T/fsck.out" 2>&1 || rc=$?
sed 's/^/   | /' "$T/fsck.out"
((rc == 0)) || fail "e2fsck -fn exited $rc: the filesystem is not clean"
ok "e2fsck -fn: clean"

say "mount the copy read-only and verify the checksums once more"
mkdir -p "$T/mnt2"
mount -o loop,ro "$T/copy.img" "$T/mnt2" || fail "mounting the copy failed"
track_mount "$T/mnt2"
(cd "$T/mnt2" && sha256sum --quiet -c "$T/sums") || fail "checksums differ in the copy"
[[ ! -e "$T/mnt2/dir/sub/large" ]] || fail "the deleted file is back"
umount "$T/mnt2"
ok "files intact after a daemon restart"

say "e2fsck -fn through a fresh nbdfuse on the live export"
fuse_up "$T/fuse2"
rc=0
e2fsck -fn "$T/fuse2/disk" >"$T/fsck2.out" 2>&1 || rc=$?
tail -n 1 "$T/fsck2.out" | sed 's/^/   | /'
fuse_down "$T/fuse2"
((rc == 0)) || { cat "$T/fsck2.out"; fail "e2fsck -fn on the live export exited $rc"; }
ok "clean"

daemon_alive
say "PASS"
