#!/bin/bash
# Disk lifecycle through rctctl and the control API: create, list, info,
# --json, the documented exit codes (2 usage/bad size, 3 not found,
# 4 conflict/busy, 5 daemon unreachable), resize (shrink needs --force),
# import (copy and --move), delete (refused while a client is connected,
# forced delete cuts the client off), the HTTP API with curl, bash
# completion of commands and disk names, and state surviving a clean
# restart and a kill -9.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo nbdcopy nbdsh curl cmp

M=$((1 << 20))

# json_disk FILE NAME: print the size of disk NAME found anywhere in the JSON
# document in FILE (a list, {"disks": [...]}, or a single object); fails
# if absent.
json_disk() {
    py -m rcttest.interop.rctctl_lifecycle json-disk "$1" "$2"
}

# nbd_size NAME: export size as seen by a fresh NBD client.
nbd_size() { nbdinfo --size "$(uri "$1")"; }

start_rctd

say "create"
expect_rc 0 rctctl create a --size 64M
expect_rc 0 rctctl create b --size 1G
[[ $(nbd_size a) == $((64 * M)) ]] || fail "export a is $(nbd_size a) bytes, want $((64 * M))"
ok "export a is 64 MiB"

say "bash completion (tools/completion/rctctl.bash)"
complete() { :; }  # the script registers itself; not an interactive shell here
# shellcheck source=../../tools/completion/rctctl.bash
source "$REPO_ROOT/tools/completion/rctctl.bash"
unset -f complete
comp() {
    COMP_WORDS=("$@")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMPREPLY=()
    PATH=$(dirname "$RCTCTL"):$PATH _rctctl
    echo "${COMPREPLY[*]}"
}
got=$(comp rctctl --state-dir "$STATE" snap)
[[ $got == "snapshot snapshots snapshot-delete" ]] || fail "completing 'snap' gave '$got'"
got=$(comp rctctl --state-dir "$STATE" info "")
[[ $got == "a b" ]] || fail "completing a disk name gave '$got', want 'a b'"
got=$(comp rctctl --state-dir "$STATE" --js)
[[ $got == "--json" ]] || fail "completing '--js' gave '$got'"
ok "commands, options and the daemon's disk names complete"

say "list and info (text)"
rctctl list | tee "$T/list.txt" | sed 's/^/   | /'
grep -qw a "$T/list.txt" || fail "rctctl list does not show a"
grep -qw b "$T/list.txt" || fail "rctctl list does not show b"
rctctl info a | tee "$T/info.txt" | sed 's/^/   | /'
grep -qw a "$T/info.txt" || fail "rctctl info a does not name the disk"
ok "list shows a and b; info a works"

say "--json list and info"
rctctl --json list >"$T/list.json" || fail "rctctl --json list failed"
sed 's/^/   | /' "$T/list.json"
[[ $(json_disk "$T/list.json" a) == $((64 * M)) ]] || fail "--json list: a has the wrong size"
[[ $(json_disk "$T/list.json" b) == $((1024 * M)) ]] || fail "--json list: b has the wrong size"
rctctl --json info a >"$T/info.json" || fail "rctctl --json info a failed"
sed 's/^/   | /' "$T/info.json"
[[ $(json_disk "$T/info.json" a) == $((64 * M)) ]] || fail "--json info: a has the wrong size"
ok "JSON lists both disks with their sizes in bytes"

say "exit codes: conflict 4, usage/bad size 2, not found 3"
expect_rc 4 rctctl create a --size 64M
expect_rc 2 rctctl create c --size banana
expect_rc 2 rctctl create c --size 12Q
expect_rc 2 rctctl create c
expect_rc 2 rctctl resize a --size -5G
expect_rc 2 rctctl frobnicate
expect_rc 3 rctctl info nope
expect_rc 3 rctctl delete nope
expect_rc 3 rctctl resize nope --size 1G
rc=0
rctctl create ../evil --size 1M >"$T/evil.out" 2>&1 || rc=$?
((rc != 0)) || fail "rctctl create ../evil succeeded"
[[ ! -e "$T/evil" && ! -e "$STATE/evil" ]] || fail "a disk name escaped the disks directory"
ok "create ../evil refused (exit $rc)"
[[ $(json_disk <(rctctl --json info a) a) == $((64 * M)) ]] || fail "the refused create changed a"
expect_rc 3 rctctl info c
ok "none of the refused commands created or changed anything"

say "resize: grow, shrink refused without --force, allowed with it"
nbdsh -u "$(uri a)" -c 'h.pwrite(b"\x42" * 4096, 0); h.pwrite(b"\x43" * 4096, 60 << 20); h.flush()'
expect_rc 0 rctctl resize a --size 128M
[[ $(nbd_size a) == $((128 * M)) ]] || fail "after growing, export a is $(nbd_size a) bytes"
[[ $(json_disk <(rctctl --json info a) a) == $((128 * M)) ]] || fail "info disagrees after growing"
nbdsh -u "$(uri a)" -c '
assert h.pread(4096, 0) == b"\x42" * 4096, "data at 0 lost by growing"
assert h.pread(4096, 100 << 20) == bytes(4096), "grown area is not zero"
h.pwrite(b"\x44" * 4096, 120 << 20)
' || fail "grown disk is wrong"
ok "grown to 128M, old data kept, new area zero and writable"
rc=0
rctctl resize a --size 32M >"$T/shrink.out" 2>&1 || rc=$?
sed 's/^/   | /' "$T/shrink.out"
((rc != 0)) || fail "shrinking without --force succeeded"
[[ $(nbd_size a) == $((128 * M)) ]] || fail "the refused shrink changed the size to $(nbd_size a)"
ok "shrink without --force refused (exit $rc), size unchanged"
expect_rc 0 rctctl resize a --size 32M --force
[[ $(nbd_size a) == $((32 * M)) ]] || fail "after a forced shrink, export a is $(nbd_size a) bytes"
nbdsh -u "$(uri a)" -c 'assert h.pread(4096, 0) == b"\x42" * 4096, "data at 0 lost by shrinking"' ||
    fail "shrinking lost data below the new end"
ok "shrunk to 32M with --force, data below the end kept"

say "import a file (copy), and another with --move"
head -c $((8 * M)) /dev/urandom >"$T/img1.raw"
truncate -s $((12 * M)) "$T/img1.raw" # a sparse tail
cp "$T/img1.raw" "$T/img1.orig"
expect_rc 0 rctctl import imp --from "$T/img1.raw"
[[ -f "$T/img1.raw" ]] || fail "import without --move removed the source"
[[ $(nbd_size imp) == $((12 * M)) ]] || fail "imported disk is $(nbd_size imp) bytes, want $((12 * M))"
nbdcopy "$(uri imp)" "$T/imp.out" || fail "nbdcopy out of the imported disk failed"
cmp "$T/img1.orig" "$T/imp.out" || fail "imported disk differs from its source"
ok "imported copy matches the file"
head -c $((4 * M)) /dev/urandom >"$T/img2.raw"
cp "$T/img2.raw" "$T/img2.orig"
expect_rc 0 rctctl import moved --from "$T/img2.raw" --move
[[ ! -e "$T/img2.raw" ]] || fail "import --move left the source file in place"
nbdcopy "$(uri moved)" - | cmp - "$T/img2.orig" || fail "moved disk differs from its source"
ok "import --move took the file and serves the same bytes"
expect_rc 4 rctctl import imp --from "$T/img1.orig"
rc=0
rctctl import ghost --from "$T/does-not-exist" >/dev/null 2>&1 || rc=$?
((rc != 0)) || fail "import from a missing file succeeded"
ok "import from a missing file refused (exit $rc)"

say "the HTTP control API: curl --unix-socket control.sock http://localhost/v1/disks"
code=$(curl -sS --unix-socket "$STATE/control.sock" -o "$T/api.json" -w '%{http_code}' http://localhost/v1/disks) ||
    fail "curl to the control socket failed"
sed 's/^/   | /' "$T/api.json"
[[ "$code" == 200 ]] || fail "GET /v1/disks returned HTTP $code"
for d in a b imp moved; do
    json_disk "$T/api.json" "$d" >/dev/null || fail "GET /v1/disks does not list $d"
done
ok "HTTP 200 with a, b, imp and moved"
code=$(curl -sS --unix-socket "$STATE/control.sock" -o /dev/null -w '%{http_code}' http://localhost/v1/disks/nope) ||
    fail "curl failed"
[[ "$code" == 404 ]] || fail "GET /v1/disks/nope returned HTTP $code, want 404"
ok "GET /v1/disks/nope: 404"

say "delete is refused while a client is connected, --force cuts it off"
nbdsh -u "$(uri b)" -c 'h.pwrite(b"\x77" * 4096, 0); h.flush()'
(bg_nbdsh -u "$(uri b)" -c "
import os, time
open('$T/connected', 'w').write('1')
deadline = time.monotonic() + 30
while not os.path.exists('$T/go') and time.monotonic() < deadline:
    time.sleep(0.05)
try:
    h.pread(4096, 0)
    print('read-ok')
except nbd.Error as e:
    print('read-failed', e.string)
") >"$T/holder.out" 2>&1 &
holder=$!
track_pid "$holder"
wait_for_file "$T/connected" 20 || fail "the background nbdsh client did not connect"
expect_rc 4 rctctl delete b
expect_rc 0 rctctl info b
ok "delete refused while connected; b still exists"
expect_rc 0 rctctl delete b --force
touch "$T/go"
wait "$holder" || true
sed 's/^/   | holder: /' "$T/holder.out"
grep -q '^read-failed' "$T/holder.out" || fail "the connected client could still read after a forced delete"
ok "the connected client was cut off"
expect_rc 3 rctctl info b
rctctl --json list >"$T/list2.json"
if json_disk "$T/list2.json" b >/dev/null 2>&1; then fail "b is still listed after delete"; fi
if nbdinfo "$(uri b)" >/dev/null 2>&1; then fail "export b is still served after delete"; fi
ok "b is gone from list, info and NBD"
expect_rc 0 rctctl create b --size 1G
nbdsh -u "$(uri b)" -c 'assert h.pread(4096, 0) == bytes(4096), "a recreated disk shows the old data"' ||
    fail "recreated b is not blank"
ok "recreated b is blank"
expect_rc 0 rctctl delete b

say "SIGTERM: clean exit, rctctl then says unreachable (5), state survives a restart"
stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT on SIGTERM, want 0"
ok "rctd exited 0"
expect_rc 5 rctctl list
expect_rc 5 "$RCTCTL" --socket "$T/nothing-here.sock" list
start_rctd
[[ $(json_disk <(rctctl --json info a) a) == $((32 * M)) ]] || fail "a has the wrong size after restart"
nbdcopy "$(uri imp)" - | cmp - "$T/img1.orig" || fail "imp differs after restart"
nbdsh -u "$(uri a)" -c 'assert h.pread(4096, 0) == b"\x42" * 4096, "a lost data across restart"' ||
    fail "a lost data across restart"
expect_rc 3 rctctl info b
ok "disks, sizes and data survived the restart; the deleted disk stayed deleted"

say "kill -9: rctctl says unreachable (5) on the stale socket; a new rctd starts and has the flushed data"
expect_rc 0 rctctl create late --size 8M
nbdsh -u "$(uri late)" -c 'h.pwrite(b"\x61" * 65536, 1 << 20); h.flush()'
crash_rctd_at "$STATE"
expect_rc 5 rctctl list
start_rctd
nbdsh -u "$(uri late)" -c 'assert h.pread(65536, 1 << 20) == b"\x61" * 65536, "flushed data lost"' ||
    fail "data flushed before kill -9 is gone"
[[ $(json_disk <(rctctl --json info a) a) == $((32 * M)) ]] || fail "a has the wrong size after kill -9"
ok "restarted over stale sockets; flushed data and disks intact"

daemon_alive
say "PASS"
