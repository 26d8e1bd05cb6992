#!/bin/sh
# /init of the guest initramfs (busybox sh). Sets up the minimal system the
# scenarios need, runs the one named on the kernel command line
# (rct.scenario=NAME) and powers off. Results reach the host as RCT-* lines
# on the serial console; see lib.sh.

/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
# CONFIG_DEVTMPFS_MOUNT is off in Debian's kernels: mount it ourselves.
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t tmpfs -o size=1536m tmp /tmp
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mkdir -p /dev/pts /dev/shm /root
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm

scenario=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        rct.scenario=*) scenario=${arg#rct.scenario=} ;;
        # A scenario's settings from the host (run.sh: RCT_<SCENARIO>_*).
        rct.env.*=*) arg=${arg#rct.env.}; export "${arg%%=*}=${arg#*=}" ;;
    esac
done

echo "RCT-BOOT kernel $(uname -r), $(nproc) cpus, scenario '$scenario'"
if [ -z "$scenario" ] || [ ! -f "/rct/scenarios/$scenario.sh" ]; then
    echo "RCT-RESULT fail no scenario '$scenario' in the initramfs"
else
    cd /tmp
    /usr/bin/bash "/rct/scenarios/$scenario.sh"
    echo "RCT-EXIT $?"
fi
sync
poweroff -f
