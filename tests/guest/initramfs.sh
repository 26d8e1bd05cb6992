#!/bin/bash
# Build the guest's initramfs: busybox-static as the userland, the guest
# scripts (init.sh as /init, lib.sh, scenarios/), the kernel modules, and the
# dynamically linked tools the scenarios need together with every shared
# library ldd names (and the dynamic loader), at the paths ldd prints.
#
# Usage: initramfs.sh KERNEL_DIR OUT.cpio
#   KERNEL_DIR  from kernel.sh (modules/*.ko, modules/order)
# Environment: RCTD, RCTCTL  the binaries under test
#              RCT_POWERCUT   the power-cut scenario's helper (optional: that
#                             scenario skips without it)
#
# The archive is an uncompressed newc cpio: the kernel unpacks it faster
# under TCG than it would decompress it, and it is rebuilt every run (a
# second or two), so it always carries the current rctd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kdir=$1
out=$2
: "${RCTD:?RCTD must name the rctd binary}"
: "${RCTCTL:?RCTCTL must name the rctctl binary}"

# Host tools copied into the guest (the rest comes from busybox).
TOOLS=(bash nbd-client mkfs.ext4 e2fsck filefrag fio)
# Copied when the host has them; the scenarios that need them skip without.
OPTIONAL_TOOLS=(dmsetup)

root=$(mktemp -d "${TMPDIR:-/tmp}/rct-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT

# copy_with_libs SRC DEST: copy executable SRC to DEST inside the root, and
# every library it loads to the same path inside the root.
copy_with_libs() {
    local src=$1 dest=$2 lib
    install -D -m 0755 "$(readlink -f "$src")" "$root$dest"
    # ldd lines: "libx.so => /path (addr)", "/lib64/ld-linux... (addr)",
    # "linux-vdso.so.1 (addr)" (no file: skipped).
    while read -r lib; do
        [[ -e "$root$lib" ]] && continue
        install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,rct/modules}
install -m 0755 /bin/busybox "$root/bin/busybox"
# The applets are linked at boot (busybox --install -s), but /init needs sh.
ln -s busybox "$root/bin/sh"

for t in "${TOOLS[@]}"; do
    path=$(command -v "$t") || { echo "initramfs.sh: $t is not installed" >&2; exit 1; }
    copy_with_libs "$path" "/usr/bin/$t"
done
for t in "${OPTIONAL_TOOLS[@]}"; do
    path=$(command -v "$t") || continue
    copy_with_libs "$path" "/usr/bin/$t"
done
copy_with_libs "$RCTD" /usr/bin/rctd
[[ -z "${RCT_POWERCUT:-}" || ! -x "$RCT_POWERCUT" ]] || copy_with_libs "$RCT_POWERCUT" /usr/bin/rct-powercut
copy_with_libs "$RCTCTL" /usr/bin/rctctl

# /etc: mke2fs's defaults (so the guest's ext4 matches the host's), mtab for
# e2fsck's "is it mounted" check, and a root user for tools that ask.
[[ ! -f /etc/mke2fs.conf ]] || cp /etc/mke2fs.conf "$root/etc/"
ln -s /proc/mounts "$root/etc/mtab"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

cp "$kdir"/modules/*.ko "$kdir/modules/order" "$root/rct/modules/"
install -m 0755 "$here/init.sh" "$root/init"
install -m 0644 "$here/lib.sh" "$root/rct/lib.sh"
mkdir -p "$root/rct/scenarios"
install -m 0755 "$here"/scenarios/*.sh "$root/rct/scenarios/"

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$out"
