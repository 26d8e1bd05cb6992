#!/bin/bash
# `meson install` into a scratch root (DESTDIR): the binaries, the systemd
# units, the man pages, bash completion and the example configuration land
# where docs/operations.md says, and the installed rctd runs from there: it
# checks the installed example file and prints its version.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires meson man
BUILD=$(cd "$(dirname "$RCTD")/.." && pwd)
ROOT=$T/root
DESTDIR=$ROOT meson install -C "$BUILD" --no-rebuild --quiet >"$T/install.log" 2>&1 ||
    { tail -20 "$T/install.log"; fail "meson install failed"; }
prefix=$(meson introspect "$BUILD" --buildoptions | py -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
P=$ROOT$prefix
for f in sbin/rctd bin/rctctl bin/rct-backup lib/systemd/system/rctd.service lib/systemd/system/rctd.socket \
    share/man/man8/rctd.8 share/man/man8/rctctl.8 share/man/man5/rctd.conf.5 share/man/man1/rct-backup.1 \
    share/bash-completion/completions/rctctl share/doc/rct/rctd.conf.example; do
    [[ -e $P/$f ]] || fail "meson install did not install $prefix/$f"
done
ok "binaries, units, man pages, completion and the example configuration installed under $prefix"
out=$("$P/sbin/rctd" --version) || fail "the installed rctd does not run"
ok "$out"
"$P/sbin/rctd" --config "$P/share/doc/rct/rctd.conf.example" --check-config >"$T/eff.conf" ||
    fail "the installed example configuration does not check"
grep -qx 'max_connections = 1024' "$T/eff.conf" || fail "the example's settings are not the defaults"
ok "the installed example configuration checks"
man -l "$P/share/man/man5/rctd.conf.5" 2>/dev/null | grep -q 'configuration file of rctd' ||
    fail "rctd.conf(5) does not render"
ok "rctd.conf(5) renders"
say "PASS"
