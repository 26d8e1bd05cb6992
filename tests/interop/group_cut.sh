#!/bin/bash
# Consistency groups: rctctl snapshot --group cuts three disks at one
# instant under a causal writer (each write issued after the previous one,
# to another disk, completed) and random writers beside it; every one of 20
# cuts must be a causally closed prefix. A group whose name one member
# already has is refused whole. Logic: tests/rcttest/interop/group_cut.py.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

start_rctd
for d in a b c; do
    rctctl create "$d" --size 64M >/dev/null
done
say "20 group snapshots of a, b, c under a causal writer"
py -m rcttest.interop.group_cut causal "$STATE/nbd.sock" "$STATE/control.sock" 20 a b c

say "a group refused whole"
rctctl checkpoint b --name taken >/dev/null
rc=0
out=$(rctctl snapshot --group taken a b c 2>&1) || rc=$?
((rc == 4)) || fail "a group whose name disk b already has exited $rc, not 4 (exists): $out"
[[ $out == *"disk b already has a checkpoint named taken"* ]] || fail "the refusal does not name the member: $out"
for d in a c; do
    rctctl checkpoints "$d" | grep -qw taken && fail "disk $d got a checkpoint of the refused group"
done
rc=0
out=$(rctctl snapshot a b 2>&1) || rc=$?
((rc == 2)) || fail "two disks without --group exited $rc, not 2: $out"
rctctl --json checkpoint --group k a c | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
assert [m["disk"] for m in j["members"]] == ["a", "c"], j
assert all(m["name"] == "k" and m["token"].startswith("rct1.") for m in j["members"]), j' ||
    fail "rctctl --json checkpoint --group k a c did not report both members"
say "   refused whole (exit 4, nothing cut on a or c); several disks need --group; a group checkpoint"
say "PASS"
