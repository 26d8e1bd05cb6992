#!/bin/bash
# Guest scenario: the kernel's nbd client against rctd (Unix socket).
#
# cut_workload (lib.sh) on /dev/nbd0 -> disk d: files A, checkpoint c1,
# files B, fsfreeze + snapshot s1, files C; changes --since c1 covers B and
# C. Then clone d@s1 -> d2 on /dev/nbd1 and the snapshot export d@s1
# read-only on /dev/nbd2 both hold exactly A+B (e2fsck -fn clean), and
# nbd-client -d removes the devices. Last, an rctd crash under a connected
# /dev/nbd0 (see the comment there).
# shellcheck source=../lib.sh
source /rct/lib.sh

SIZE=$((256 << 20))

load_module nbd nbds_max=4
start_rctd
rctctl create d --size 256M >/dev/null
nbd_connect /dev/nbd0 d
[[ $(blockdev --getsize64 /dev/nbd0) == "$SIZE" ]] || fail "nbd0 is not 256 MiB"
step "rctd serves d; /dev/nbd0 connected, 256 MiB"

cut_workload /dev/nbd0 /mnt/d d "$SIZE"

indent rctctl clone d@s1 d2
nbd_connect /dev/nbd1 d2
check_cut /dev/nbd1 "clone d@s1 -> d2"

nbd_connect /dev/nbd2 d@s1 -readonly
check_cut /dev/nbd2 "export d@s1 (read-only)" ro

for dev in /dev/nbd2 /dev/nbd1 /dev/nbd0; do
    nbd_disconnect "$dev"
done
step "nbd-client -d: nbd0..2 disconnected"

# What the kernel nbd client sees across an rctd restart (nbd-client 3.24,
# kernel 6.12), found here:
#  - netlink (the default), with or without -persist: the socket dies, the
#    device keeps its size, and every I/O fails with EIO ("Dead connection,
#    failed to find a fallback") - also after rctd is back; nbd-client
#    never reconnects (it exited right after the netlink setup).
#  - -nonetlink -persist (ioctl mode; nbd-client stays as a daemon): it exits
#    when the socket dies and the device drops to size 0, both over the Unix
#    socket and over TCP, even when rctd is back within a second.
# So a restart is not transparent to the kernel nbd client: whoever holds
# the device must `nbd-client -d` it and connect again (a mounted
# filesystem sees I/O errors in between). Asserted below: after kill -9 and
# a restart, a reconnected device reads back the data flushed before the
# crash. The EIO of the stale device is reported, not asserted.
nbd_connect /dev/nbd0 d2
dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 status=none
dd if=/tmp/pattern of=/dev/nbd0 bs=1M seek=100 oflag=direct conv=fsync status=none
kill_rctd
start_rctd
rc=0
timeout 30 dd if=/dev/nbd0 of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null || rc=$?
info "after kill -9 + restart of rctd, a read of the still-connected nbd0 exits $rc (size $(cat /sys/block/nbd0/size) sectors)"
nbd_disconnect /dev/nbd0
nbd_connect /dev/nbd0 d2
dd if=/dev/nbd0 of=/tmp/readback bs=1M skip=100 count=4 iflag=direct status=none
cmp -s /tmp/pattern /tmp/readback || fail "data flushed before the crash differs after reconnecting"
nbd_disconnect /dev/nbd0
step "rctd kill -9 + restart: nbd-client -d and reconnect gives back the 4 MiB flushed before the crash"

pass
