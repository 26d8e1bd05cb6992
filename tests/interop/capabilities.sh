#!/bin/bash
# What rctd advertises: nbdinfo --json on an export, --list over several disks,
# and systemd socket activation (nbdinfo -- [ rctd ... ]).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo

start_rctd
rctctl create alpha --size 1G
rctctl create beta --size 64M
rctctl create gamma --size 3M

say "nbdinfo --json $(uri alpha)"
nbdinfo --json "$(uri alpha)" >"$T/alpha.json" || fail "nbdinfo --json failed"
cat "$T/alpha.json"
py - "$T/alpha.json" alpha $((1 << 30)) <<'PY' || fail "capabilities differ from what rctd must advertise"
import json, sys
doc = json.load(open(sys.argv[1]))
name, size = sys.argv[2], int(sys.argv[3])
bad = 0
def check(what, got, want):
    global bad
    if got == want:
        print(f"   ok: {what} = {got!r}")
    else:
        print(f"   FAIL: {what} = {got!r}, want {want!r}")
        bad += 1
check("protocol", doc.get("protocol"), "newstyle-fixed")
check("structured", doc.get("structured"), True)
exports = doc.get("exports", [])
check("number of exports described", len(exports), 1)
e = exports[0] if exports else {}
check("export-name", e.get("export-name"), name)
check("export-size", e.get("export-size"), size)
for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
             "can_multi_conn", "can_cache"):
    check(flag, e.get(flag), True)
check("is_read_only", e.get("is_read_only"), False)
check("block_size_minimum", e.get("block_size_minimum"), 1)
check("block_size_preferred", e.get("block_size_preferred"), 4096)
check("block_size_maximum", e.get("block_size_maximum"), 33554432)
check("'base:allocation' in contexts", "base:allocation" in e.get("contexts", []), True)
sys.exit(1 if bad else 0)
PY

say "nbdinfo --size and --can/--is exit codes"
got=$(nbdinfo --size "$(uri beta)") || fail "nbdinfo --size failed"
[[ "$got" == $((64 << 20)) ]] || fail "beta: nbdinfo --size printed '$got', want $((64 << 20))"
ok "beta is $got bytes"
nbdinfo --can multi-conn "$(uri beta)" || fail "nbdinfo --can multi-conn: not advertised"
ok "multi-conn advertised"
rc=0; nbdinfo --is read-only "$(uri beta)" || rc=$?
((rc == 2)) || fail "nbdinfo --is read-only exited $rc (0 = read-only, 1 = error), want 2 (writable)"
ok "not read-only"

say "nbdinfo --list shows every disk"
nbdinfo --list --json "$(uri alpha)" >"$T/list.json" || fail "nbdinfo --list failed"
py - "$T/list.json" alpha:$((1 << 30)) beta:$((64 << 20)) gamma:$((3 << 20)) <<'PY' || fail "nbdinfo --list is incomplete"
import json, sys
doc = json.load(open(sys.argv[1]))
found = {e.get("export-name"): e.get("export-size") for e in doc.get("exports", [])}
print("   listed:", found)
bad = 0
for arg in sys.argv[2:]:
    name, size = arg.split(":")
    if name not in found:
        print(f"   FAIL: {name} not listed"); bad += 1
    elif found[name] != int(size):
        print(f"   FAIL: {name} listed with size {found[name]}, want {size}"); bad += 1
    else:
        print(f"   ok: {name} listed, {size} bytes")
sys.exit(1 if bad else 0)
PY

say "an unknown export name is refused, and the daemon keeps serving"
if nbdinfo "$(uri no-such-disk)" >"$T/nosuch.out" 2>&1; then
    cat "$T/nosuch.out"
    fail "nbdinfo on an unknown export succeeded"
fi
ok "$(head -n 1 "$T/nosuch.out")"
nbdinfo --size "$(uri gamma)" >/dev/null || fail "nbdinfo after the refused export failed"
ok "still serving"

say "socket activation: nbdinfo -- [ rctd --state-dir STATE2 ] on a state dir with one disk"
start_rctd_at "$T/state2"
"$RCTCTL" --state-dir "$T/state2" create solo --size 96M
stop_rctd_at "$T/state2"
got=$(nbdinfo --size -- [ "$RCTD" --state-dir "$T/state2" ]) || fail "socket-activated nbdinfo --size failed"
[[ "$got" == $((96 << 20)) ]] || fail "socket activation: size '$got', want $((96 << 20))"
ok "socket-activated rctd served the only disk (default export), $got bytes"
nbdinfo --json -- [ "$RCTD" --state-dir "$T/state2" ] >"$T/solo.json" || fail "socket-activated nbdinfo --json failed"
py - "$T/solo.json" <<'PY' || fail "socket-activated export is missing capabilities"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
missing = [f for f in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn") if e.get(f) is not True]
print("   export-size", e.get("export-size"), "missing:", missing)
sys.exit(1 if missing else 0)
PY
ok "socket-activated export advertises flush/fua/trim/zero/multi-conn"

daemon_alive
say "PASS"
