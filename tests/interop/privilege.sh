#!/bin/bash
# Least privilege (docs/security.md): rctd started under umask 000 leaves
# nothing under its state dir open to group or others; an unprivileged user
# (nobody, through setpriv) can neither connect to its sockets nor read a
# disk's or a snapshot's data; with --socket-group a member can; an import
# reads only what its caller could (a symbolic link, a file the caller
# cannot read, --move of another user's file are refused, the file left as
# it was); a symbolic link planted at a metadata path is never followed and
# does not block the write; --api-readers and --export-group restrict as
# documented. Logic: tests/rcttest/interop/privilege.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v setpriv >/dev/null || skip "setpriv (util-linux) is missing"
((EUID == 0)) || skip "needs root (it switches to nobody with setpriv)"
getent passwd nobody >/dev/null && getent group nogroup >/dev/null || skip "no user nobody / group nogroup"
MEMBERS=users
getent group "$MEMBERS" >/dev/null || skip "no group '$MEMBERS' to use as the socket group"
GID=$(getent group "$MEMBERS" | cut -d: -f3)
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

# nobody may pass through $T, so that only rctd's own modes keep it out.
chmod 0711 "$T"
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
as_member() { setpriv --reuid=nobody --regid=nogroup --groups="$GID" "$@"; }
CTL=$STATE/control.sock
head -c 4M /dev/urandom >"$T/pattern.raw"
chmod 0644 "$T/pattern.raw"

say "umask 000, default access: root only"
umask 000
start_rctd --persist-interval 100
umask 077
rctctl import a --from "$T/pattern.raw" >/dev/null
rctctl checkpoint a --name c1 >/dev/null
rctctl snapshot a --name s1 >/dev/null
nbdsh -u "$(uri a)" -c 'h.pwrite(b"\0" * 65536, 0)'   # copies the chunk into chunks.dat
rctctl create b --size 16M >/dev/null
sleep 0.5   # a persist interval: current.map exists
py -m rcttest.interop.privilege modes "$STATE"
as_nobody /usr/bin/python3 -m rcttest.interop.privilege outsider "$STATE/nbd.sock" "$CTL" "$CTL.fd" \
    "$STATE/disks/a/data.raw" "$STATE/disks/a/snapshots/chunks.dat" "$STATE/disks/a/disk.json"
expect_rc 5 as_nobody "$RCTCTL" --state-dir "$STATE" list

say "a planted link at a metadata path is not followed"
printf 'precious\n' >"$T/victim"
ln -s "$T/victim" "$STATE/disks/b/disk.json.tmp"
rctctl resize b --size 32M >/dev/null || fail "a planted link at disk.json.tmp made the resize fail"
[[ "$(cat "$T/victim")" == precious ]] || fail "rctd wrote through a link planted at disk.json.tmp"
ok "resize done, the link's target untouched"
stop_rctd
truncate -s 16M "$T/victim2"
rm "$STATE/disks/b/data.raw"
ln -s "$T/victim2" "$STATE/disks/b/data.raw"
umask 000
start_rctd --persist-interval 100 --socket-group "$MEMBERS"
umask 077
if rctctl info b >/dev/null 2>&1; then fail "a data.raw that is a link was served"; fi
ok "a disk whose data.raw is a link is quarantined"
rm "$STATE/disks/b/data.raw"
rm -r "$STATE/disks/b"

say "--socket-group $MEMBERS: members connect, others still cannot"
py -m rcttest.interop.privilege modes "$STATE" "$GID"
as_member /usr/bin/python3 -m rcttest.interop.privilege member "$CTL" "$(uri a@s1)" "$T/pattern.raw"
as_nobody /usr/bin/python3 -m rcttest.interop.privilege outsider "$STATE/nbd.sock" "$CTL" "$CTL.fd"

say "imports use the caller's authority"
head -c 1M /dev/urandom >"$T/secret.raw"
chmod 0600 "$T/secret.raw"
expect_rc 1 as_member "$RCTCTL" --state-dir "$STATE" import stolen --from "$T/secret.raw"
ln -s "$T/secret.raw" "$T/link.raw"
expect_rc 2 rctctl import vialink --from "$T/link.raw"
mkdir "$T/real" && cp "$T/secret.raw" "$T/real/copy.raw" && ln -s "$T/real" "$T/linkdir"
py -m rcttest.interop.privilege path_form "$CTL" "$T/link.raw" "$T/linkdir/copy.raw" "$T/real/copy.raw"
mkdir "$T/pub" && chown nobody:nogroup "$T/pub"
cp "$T/pattern.raw" "$T/pub/roots.raw" && chmod 0644 "$T/pub/roots.raw"
sum_before=$(sha256sum <"$T/pub/roots.raw")
expect_rc 2 as_member "$RCTCTL" --state-dir "$STATE" import taken --from "$T/pub/roots.raw" --move
[[ "$(stat -c %u "$T/pub/roots.raw")" == 0 && "$(sha256sum <"$T/pub/roots.raw")" == "$sum_before" ]] ||
    fail "--move of root's file by nobody changed it"
ok "root's file is where it was, unchanged"
as_member "$RCTCTL" --state-dir "$STATE" import copied --from "$T/pub/roots.raw" >/dev/null ||
    fail "a member could not copy a file it can read"
as_nobody cp "$T/pattern.raw" "$T/pub/mine.raw"
as_member "$RCTCTL" --state-dir "$STATE" import moved --from "$T/pub/mine.raw" --move >/dev/null ||
    fail "a member could not move its own file in"
[[ ! -e "$T/pub/mine.raw" ]] || fail "the moved file is still there"
for d in stolen vialink via-link via-dir taken; do
    rctctl info "$d" >/dev/null 2>&1 && fail "disk $d exists"
done
ok "a member copies what it can read and moves what it owns; nothing else became a disk"
py -m rcttest.interop.privilege modes "$STATE" "$GID"
stop_rctd

say "--api-readers nogroup, --export-group a=root"
start_rctd --socket-group "$MEMBERS" --api-readers nogroup --export-group a=root
as_nobody /usr/bin/python3 -m rcttest.interop.privilege reader "$CTL"
as_member /usr/bin/python3 -m rcttest.interop.privilege export_denied "$(uri a)"
as_member /usr/bin/python3 -m rcttest.interop.privilege export_denied "$(uri a@s1)"
as_member nbdinfo "$(uri copied)" >/dev/null || fail "a member could not open an unrestricted export"
nbdinfo "$(uri a)" >/dev/null || fail "root could not open a restricted export"
ok "root opens a, members open the others"
stop_rctd
say "PASS"
