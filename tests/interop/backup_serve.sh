#!/bin/bash
# rct-backup serve: file-level restore. An ext4 disk backed up (full, then
# inc after its files changed); the first point served read-only, mounted
# through nbdfuse + a read-only loop mount, its files equal the originals; the
# second point served on TCP reads back as the image written then; restored
# over NBD to another disk and to a loop device, it equals that image.
# Logic: tests/rcttest/interop/backup_serve.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${RCT_BACKUP:=$REPO_ROOT/build/tools/rct-backup}"
[[ -x "$RCT_BACKUP" ]] || fail "RCT_BACKUP=$RCT_BACKUP is not an executable (build first: ninja -C build)"
requires qemu-img qemu-nbd nbdcopy nbdfuse fusermount3 mkfs.ext4 mount umount truncate
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"
[[ -c /dev/fuse ]] || skip "/dev/fuse does not exist"
((EUID == 0)) || skip "needs root to loop-mount"
truncate -s 16M "$T/probe.img"
mkfs.ext4 -q -F "$T/probe.img" || skip "mkfs.ext4 on a scratch file failed"
mkdir -p "$T/probe"
mount -o ro,loop "$T/probe.img" "$T/probe" 2>"$T/probe.err" || skip "cannot loop-mount here: $(cat "$T/probe.err")"
umount "$T/probe"
W=$T/work
mkdir -p "$W"

start_rctd
rctctl create d --size 64M >/dev/null
rctctl create target --size 64M >/dev/null
say "ext4 backed up twice; serve each point; restore to NBD and a block device"
py -m rcttest.interop.backup_serve run "$RCT_BACKUP" "$STATE" d "$(uri d)" "$W" "$(uri target)"
daemon_alive
say "PASS"
