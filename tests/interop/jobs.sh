#!/bin/bash
# Long management calls as jobs (docs/control-api.md, "Jobs"): an import
# from a slow source (nbdkit's pattern plugin behind its delay filter, seen
# as a file through nbdfuse, as a network-backed image would be) runs as a
# job that shows its progress and can be cancelled, leaving no disk, no
# staging directory and no thread; rctctl follows it with a progress bar on
# a terminal, plain lines elsewhere, JSON events with --json, and cancels it
# on Ctrl-C (exit 130); a live upgrade is refused while a job runs; stopping
# rctd cancels a running job and leaves nothing; a job that runs to its end
# gives the disk, byte for byte.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdkit nbdfuse fusermount3 nbdcopy script

SRC_SIZE=$((256 << 20))
slow_source() {
    nbdkit -U "$T/slow.sock" -P "$T/nbdkit.pid" --filter=delay pattern "$SRC_SIZE" rdelay=20ms
    wait_for_file "$T/nbdkit.pid" 20 || fail "nbdkit did not start"
    track_pid "$(cat "$T/nbdkit.pid")"
    mkdir -p "$T/fuse"
    nbdfuse -P "$T/nbdfuse.pid" "$T/fuse/src" "nbd+unix:///?socket=$T/slow.sock" >>"$T/nbdfuse.log" 2>&1 &
    track_pid $!
    track_mount "$T/fuse"
    wait_for_file "$T/nbdfuse.pid" 20 || fail "nbdfuse did not come up within 20 s"
    [[ $(stat -c %s "$T/fuse/src") == "$SRC_SIZE" ]] || fail "the slow source is not $SRC_SIZE bytes"
}
slow_source
SRC=$T/fuse/src
start_rctd

say "a job's progress; cancel; an upgrade refused meanwhile"
py -m rcttest.interop.jobs cancel "$STATE/control.sock" "$STATE" "$SRC" "$RCTD_PID" ||
    fail "the job progress/cancel check failed"

say "rctctl follows a job: plain lines off a terminal"
"$RCTCTL" --state-dir "$STATE" import plain --from "$SRC" >"$T/plain.out" 2>"$T/plain.err" &
follower=$!
sleep 6.5
kill -INT "$follower"
rc=0
wait "$follower" || rc=$?
sed 's/^/   | /' "$T/plain.err"
((rc == 130)) || fail "rctctl import exited $rc after Ctrl-C, want 130"
grep -q "^import plain: .* MiB (.*%), .* MiB/s, ETA" "$T/plain.err" || fail "no plain progress line"
grep -q "cancelling job" "$T/plain.err" || fail "rctctl did not say it cancels the job"
expect_rc 3 "$RCTCTL" --state-dir "$STATE" info plain
ok "a progress line every 5 s; Ctrl-C cancelled the job (exit 130) and no disk is left"

say "rctctl on a terminal: a progress bar redrawn in place"
script -qefc "$RCTCTL --state-dir $STATE import tty --from $SRC" "$T/tty.log" >/dev/null 2>&1 &
follower=$!
sleep 3
pkill -INT -f "^$RCTCTL --state-dir $STATE import tty" || true
wait "$follower" || true
tr '\r' '\n' <"$T/tty.log" | grep -c "import tty: .* MiB/s, ETA" >"$T/redraws" || true
(($(cat "$T/redraws") >= 3)) || fail "the bar was drawn $(cat "$T/redraws") times in 3 s: $(head -c 400 "$T/tty.log")"
grep -q $'\r' "$T/tty.log" || fail "the bar is not redrawn in place (no carriage return)"
ok "redrawn $(cat "$T/redraws") times in 3 s"

say "--json: progress events, one per line, then the disk"
head -c $((8 << 20)) /dev/urandom >"$T/small.raw"
rctctl --json import small --from "$T/small.raw" >"$T/json.out" || fail "rctctl --json import failed"
py -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert lines[-1]["name"] == "small" and lines[-1]["size"] == 8 << 20, lines[-1]
assert all(l["event"] == "progress" and l["operation"] == "import small" for l in lines[:-1]), lines[:-1]
assert lines[-2]["final"] and lines[-2]["done_bytes"] == lines[-2]["total_bytes"] == 8 << 20, lines[-2]
' "$T/json.out" || fail "rctctl --json import printed: $(head -c 600 "$T/json.out")"
nbdcopy "$(uri small)" "$T/small.back" && cmp "$T/small.raw" "$T/small.back" || fail "the imported disk differs"
ok "$(wc -l <"$T/json.out") lines; the disk reads back exactly"
py -m rcttest.interop.jobs done "$STATE/control.sock" "$T/small.raw" small2 || fail "an import job did not finish"
"$RCTCTL" --state-dir "$STATE" clone small@none copy 2>/dev/null && fail "a clone of a missing snapshot succeeded"
rctctl snapshot small --name s1 >/dev/null
rctctl clone small@s1 copy >"$T/clone.out" || fail "rctctl clone (a job) failed"
grep -q "cloned disk copy" "$T/clone.out" || fail "rctctl clone printed: $(cat "$T/clone.out")"
nbdcopy "$(uri copy)" "$T/copy.back" && cmp "$T/small.raw" "$T/copy.back" || fail "the clone differs"
ok "clone runs as a job too, byte for byte"

say "rctd stopping cancels a running job"
rctctl import late --from "$SRC" --detach | grep -q "started job" || fail "--detach did not print the job"
sleep 1
stop_rctd
((RCTD_EXIT == 0)) || fail "rctd exited $RCTD_EXIT with a job running"
left=$(ls -A "$STATE/disks" | grep late || true)
[[ -z $left ]] || fail "the stopped job left $left"
start_rctd
expect_rc 3 "$RCTCTL" --state-dir "$STATE" info late
[[ $(rctctl --json jobs) == *'"jobs": []'* ]] || fail "a restarted rctd lists old jobs"
ok "stopped cleanly; nothing of the job left"

daemon_alive
say "PASS"
