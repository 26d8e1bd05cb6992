#!/bin/bash
# Fetch and cache the guest kernel: the newest Debian 12 linux-image-6.12
# cloud kernel (the 6.1 default kernel has no ublk_drv), unpacked without
# installing anything.
#
# Usage: kernel.sh            prints the cache dir of the kernel to use; it
#                             holds vmlinuz, modules/*.ko (decompressed) and
#                             modules/order (insmod order, dependencies first)
# Exit:  0 ok, 77 the kernel cannot be fetched (no network, apt refuses),
#        1 anything else.
#
# Environment:
#   RCT_GUEST_CACHE    cache dir (default /var/cache/rct-guest)
#   RCT_GUEST_REFRESH  1: look for a newer kernel even if the cached one is
#                      recent (by default the archive is asked at most once
#                      a day; a cached kernel is used when it cannot be asked)
#
# apt runs with a private sources list, lists dir and cache dir under the
# cache, so the host's apt state (/var/lib/apt/lists, /var/cache/apt) is
# never touched.
set -euo pipefail

CACHE=${RCT_GUEST_CACHE:-/var/cache/rct-guest}
# nbd, ublk: the frontends; brd, dm_mod, dm_log_writes: the power-cut
# scenario's RAM disks and write log. A cached kernel unpacked with fewer
# modules is unpacked again (cache_complete).
MODULES=(nbd ublk_drv brd dm_mod dm_log_writes)
# Refresh the package lists at most this often (minutes).
REFRESH_MINUTES=1440

log() { printf 'kernel.sh: %s\n' "$*" >&2; }
skip() { printf 'SKIP: %s\n' "$*" >&2; exit 77; }

APT_DIR=$CACHE/apt
APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::State::extended_states=$APT_DIR/extended_states"
    -o "Debug::NoLocking=1"
    -o "APT::Get::List-Cleanup=0"
)

# write_sources: the mirrors this machine uses for Debian itself (the host's
# own lists may carry third-party repos we do not want).
write_sources() {
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    cat >"$APT_DIR/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SRC
}

# lists_fresh: the private lists were updated within REFRESH_MINUTES.
lists_fresh() {
    [[ "${RCT_GUEST_REFRESH:-0}" != 1 ]] || return 1
    [[ -e "$APT_DIR/updated" ]] || return 1
    [[ -z "$(find "$APT_DIR/updated" -mmin +"$REFRESH_MINUTES")" ]]
}

# newest_package: name of the newest 6.12 cloud kernel package in the lists.
newest_package() {
    apt-cache "${APT_OPTS[@]}" search --names-only \
        '^linux-image-6\.12\..*-cloud-amd64-unsigned$' |
        awk '{print $1}' | sort -V | tail -1
}

# add_module MDIR NAME OUT: decompress module NAME (busybox insmod cannot
# read .ko.xz) and its dependencies into OUT, appending each to OUT/order
# after what it depends on.
add_module() {
    local mdir=$1 name=${2//-/_} out=$3 file dep deps
    ! grep -qx "$name.ko" "$out/order" || return 0
    file=$(find "$mdir" -name "$name.ko*" -o -name "${name//_/-}.ko*" | head -1)
    [[ -n "$file" ]] || { log "module $name is not in $mdir"; return 1; }
    case "$file" in
        *.xz) xz -dc "$file" >"$out/$name.ko" ;;
        *) cp "$file" "$out/$name.ko" ;;
    esac
    deps=$(tr '\0' '\n' <"$out/$name.ko" | sed -n 's/^depends=//p' | head -1)
    for dep in ${deps//,/ }; do
        add_module "$mdir" "$dep" "$out" || return 1
    done
    echo "$name.ko" >>"$out/order"
}

# unpack PKG DEB: extract the kernel and the modules we need into
# $CACHE/PKG, atomically (a half-extracted dir is never used).
unpack() {
    local pkg=$1 deb=$2 tmp dest=$CACHE/$1
    tmp=$(mktemp -d "$CACHE/.unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp/root"
    local kver
    kver=$(ls "$tmp/root/lib/modules")
    [[ $(wc -w <<<"$kver") == 1 ]] || { log "unexpected modules dirs: $kver"; return 1; }
    local mdir=$tmp/root/lib/modules/$kver
    mkdir -p "$tmp/out/modules"
    cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
    echo "$kver" >"$tmp/out/version"
    # The package ships no modules.dep (depmod runs at install time), so
    # follow each module's own "depends=" field, dependencies first.
    : >"$tmp/out/modules/order"
    local m
    for m in "${MODULES[@]}"; do
        add_module "$mdir" "$m" "$tmp/out/modules" || return 1
    done
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    rm -rf "$tmp"
    ln -sfn "$pkg" "$CACHE/current.tmp"
    mv -T "$CACHE/current.tmp" "$CACHE/current"
    log "unpacked $pkg ($kver): $(tr '\n' ' ' <"$dest/modules/order")"
}

# cache_complete DIR: the unpacked kernel in DIR has every module of MODULES.
cache_complete() {
    local m
    for m in "${MODULES[@]}"; do
        grep -qx "${m//-/_}.ko" "$1/modules/order" 2>/dev/null || return 1
    done
}

main() {
    mkdir -p "$CACHE" 2>/dev/null || skip "cannot create the cache dir $CACHE (set RCT_GUEST_CACHE)"
    # One fetch at a time (several build dirs may share the cache).
    exec 9>"$CACHE/.lock"
    flock 9

    local have=""
    [[ -L "$CACHE/current" && -f "$CACHE/current/vmlinuz" ]] && have=$(readlink "$CACHE/current")
    # A kernel cached before MODULES grew: usable if the archive cannot be
    # asked, but fetched again otherwise.
    local complete=1
    [[ -z "$have" ]] || cache_complete "$CACHE/$have" || { complete=0; log "the cached $have lacks modules of: ${MODULES[*]}"; }
    command -v apt-get >/dev/null || { [[ -n "$have" ]] && { echo "$CACHE/$have"; return; }; skip "no apt-get"; }

    write_sources
    if ! lists_fresh; then
        log "refreshing private package lists in $APT_DIR"
        if apt-get "${APT_OPTS[@]}" -q update >"$APT_DIR/update.log" 2>&1 &&
            ! grep -qE '^(W|E): ' "$APT_DIR/update.log"; then
            touch "$APT_DIR/updated"
        else
            log "apt-get update failed: $(grep -E '^(W|E): ' "$APT_DIR/update.log" | head -3 | tr '\n' ' ')"
            if [[ -n "$have" ]]; then
                log "using the cached $have"
                echo "$CACHE/$have"
                return
            fi
            skip "cannot fetch the guest kernel: apt-get update failed (see $APT_DIR/update.log)"
        fi
    fi

    local pkg
    pkg=$(newest_package)
    if [[ -z "$pkg" ]]; then
        [[ -n "$have" ]] && { echo "$CACHE/$have"; return; }
        skip "apt-cache finds no linux-image-6.12.*-cloud-amd64-unsigned"
    fi
    if [[ "$pkg" == "$have" ]] && ((complete)); then
        echo "$CACHE/$pkg"
        return
    fi

    log "downloading $pkg"
    local dl=$APT_DIR/download
    rm -rf "$dl"
    mkdir -p "$dl"
    # apt-get download writes into the working directory.
    if ! (cd "$dl" && apt-get "${APT_OPTS[@]}" -q download "$pkg") >"$APT_DIR/download.log" 2>&1; then
        log "apt-get download $pkg failed: $(tail -2 "$APT_DIR/download.log" | tr '\n' ' ')"
        [[ -n "$have" ]] && { echo "$CACHE/$have"; return; }
        skip "cannot download $pkg (see $APT_DIR/download.log)"
    fi
    local deb
    deb=$(ls "$dl"/*.deb)
    unpack "$pkg" "$deb"
    rm -rf "$dl"
    # Keep only the current kernel.
    local d
    for d in "$CACHE"/linux-image-*; do
        [[ "$(basename "$d")" == "$pkg" ]] || rm -rf "$d"
    done
    echo "$CACHE/$pkg"
}

main "$@"
