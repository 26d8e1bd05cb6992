#!/bin/bash
# Snapshots across kill -9 (issue #4): CRASH_CYCLES (default 24) cycles of
#
#   write workload through NBD + snapshot cuts and deletes under it  ->
#   kill -9 rctd at a chosen moment  ->  restart rctd  ->  check
#
# on one 32 MiB disk (granularity 64K), prefilled with written blocks so that
# chunk copies hold data.
#
# The workload (rcttest.interop.crash_snapshots, /usr/bin/python3 + libnbd) is one process:
#  - the writer: one connection, up to 32 requests in flight, writes of 1-16
#    4 KiB blocks (5% WRITE_ZEROES, 10% FUA, a FLUSH every ~50 requests),
#    99% of them in a 2 MiB hot window that moves every 0.1-0.5 s (so each
#    snapshot keeps different chunks, and right after a cut most writes are
#    first writes waiting for a copy).
#    Each 4 KiB block of a write carries (cycle, sequence number, block
#    number), so a read-back names the write it came from; no two requests
#    in flight share a block, so the writes of one block are ordered. Every
#    request's submit and completion times (CLOCK_MONOTONIC) are logged.
#  - the controller: every 40-200 ms cuts a snapshot or deletes one (through
#    the control API on control.sock, timing each call), keeping at most 8;
#    then, once the cycle's kill time has come, it kills rctd (SIGKILL) in
#    the cycle's mode, rotating:
#      cut     during a cut call (0-80% of the shortest or of the median
#              duration of this cycle's calls after sending it),
#      cow     0-8 ms after a cut returned (first writes are held while
#              their chunks are copied),
#      delete  during a snapshot-delete call (likewise),
#      any     at a random moment;
#    and every 5th cycle ends instead with a clean stop (clean): the writer
#    drains and flushes, the store figures are noted, then SIGTERM.
#    Every 4th cycle, rctd is killed a second time 0-150 ms into its restart
#    (while it replays the store and reclaims garbage).
#
# After the restart the checks are:
#  (a) the listing: no snapshot is INVALID (there is no store limit, so a
#      crash must not invalidate any); every snapshot whose cut returned is
#      there unless its delete was started; a deleted one is gone; one whose
#      cut or delete was interrupted may be either; nothing else appears.
#  (b) every listed snapshot, read whole through NAME@SNAP, is exactly a
#      point-in-time image: per block, the write current at the cut (the last
#      one that completed before the cut call started, or one whose interval
#      overlaps the call); across blocks, one instant T in the call's window
#      must fit all (T after the submit of every write seen, before the
#      completion of every next write not seen). The content found is then
#      recorded, and in every later cycle the snapshot must read back
#      byte-identical (so a crash, a copy or a delete never disturbs it).
#  (c) the live disk: every block holds its last durable write (FUA
#      acknowledged, or acknowledged before an acknowledged FLUSH was sent)
#      or a later write of the cycle; acknowledged-but-unflushed writes that
#      are missing are counted (allowed by NBD).
#  (d) leaks: `store.bytes` is at most what the remaining snapshots can hold:
#      for each valid snapshot S_i (oldest first), one chunk copy per chunk
#      possibly written between its cut and the next one's (any write whose
#      interval overlaps), and chunks.dat's allocated space is at most
#      `store.bytes` (a restart punches out every slot no copy uses). The
#      sum of exclusive_bytes never exceeds store.bytes. After a clean stop
#      (every 5th cycle, after cuts and deletes under load), the listing and
#      the store figures (copies, bytes, exclusive_bytes) must be what they
#      were just before the stop: no garbage that only a restart frees.
#
# The summary counts the kills that found the call still in flight, and the
# first writes (unacknowledged writes to chunks not yet written since the
# last cut) that were held at the "cow" kills.
# Default run: 60-80 s here. Long run (about 3 s per cycle):
#   CRASH_CYCLES=500 RCT_TEST_TIMEOUT=8000 meson test -C build crash_snapshots \
#       --timeout-multiplier 0
# or directly: CRASH_CYCLES=500 bash tests/interop/crash_snapshots.sh
# CRASH_SEED fixes the random choices (not the timing); it is printed.
: "${CRASH_CYCLES:=24}"
: "${CRASH_SEED:=$(($(date +%s) % 1000000))}"
: "${RCT_TEST_TIMEOUT:=$((180 + CRASH_CYCLES * 15))}"
export RCT_TEST_TIMEOUT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo stat
/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

# Private copies of the binaries (a rebuild must not trip a long run).
mkdir -p "$T/bin"
cp "$RCTD" "$RCTCTL" "$T/bin/"
RCTD=$T/bin/$(basename "$RCTD") RCTCTL=$T/bin/$(basename "$RCTCTL")

DISK=cs
SIZE=$((32 << 20))
GRAN=$((64 << 10))
MAX_ALIVE=8
RANDOM=$CRASH_SEED
say "cycles $CRASH_CYCLES, seed $CRASH_SEED"

# ------------------------------------------- the workload, model and checker
# tests/rcttest/interop/crash_snapshots.py: `workload` writes, cuts, deletes
# and kills rctd, logging every call; `check` holds the model (in $T/model)
# and runs checks (a)-(d) after the restart.

# ------------------------------------------------------------------- cycles
mkdir -p "$T/model"
start_rctd
rctctl create "$DISK" --size $SIZE --granularity 64K >/dev/null
U=$(uri "$DISK")
# Every block starts as a written block (tag 1), so that chunk copies hold
# data (an all-zero chunk's copy takes no space, which would loosen the leak
# bound).
py -m rcttest.interop.crash_snapshots prefill "$U" "$T/model/base.bin" $SIZE || fail "prefilling the disk failed"
UFMT="nbd+unix:///%s?socket=$STATE/nbd.sock"
MODES=(cut cow delete any)

declare -A NKILL=([cut]=0 [cow]=0 [delete]=0 [any]=0 [clean]=0)
in_cut=0 in_delete=0 held_total=0 new_total=0 old_total=0 cuts_total=0 deletes_total=0 ops_total=0
lost_total=0 double_total=0 max_store=0
for ((i = 1; i <= CRASH_CYCLES; i++)); do
    if ((i % 5 == 0)); then
        mode=clean
    else
        mode=${MODES[(i - 1 - i / 5) % 4]}
    fi
    alive=$(rctctl --json snapshots "$DISK" | py -m rcttest.interop.crash_snapshots valid)
    after_s=$(printf '%d.%03d' $((RANDOM % 2)) $((RANDOM % 1000)))
    log=$T/log-$i.txt
    # shellcheck disable=SC2086 # $alive is a list of names
    py -m rcttest.interop.crash_snapshots workload "$U" "$log" "$CRASH_SEED" "$i" $SIZE "$STATE/control.sock" "$DISK" "$RCTD_PID" \
        "$mode" "$after_s" $MAX_ALIVE $alive 2>>"$T/workload.log" || fail "cycle $i: the workload failed (see workload.log)"
    double=0
    if [[ $mode == clean ]]; then
        stop_rctd  # reaps it; the workload has sent SIGTERM already
        ((RCTD_EXIT == 0)) || fail "cycle $i: rctd exited $RCTD_EXIT on SIGTERM"
    else
        crash_rctd_at "$STATE"  # reaps it; the workload has killed it already
    fi
    if ((i % 4 == 2)) && [[ $mode != clean ]]; then
        # a second crash while rctd opens the store (replay, reclaim, compact)
        double=$((RANDOM % 150))
        "$RCTD" --state-dir "$STATE" </dev/null >>"$T/rctd-$(basename "$STATE").log" 2>&1 &
        dpid=$!
        sleep "0.$(printf %03d $double)"
        kill -KILL $dpid 2>/dev/null || true
        wait $dpid 2>/dev/null || true
        double_total=$((double_total + 1))
    fi
    start_rctd
    rc=0
    out=$(py -m rcttest.interop.crash_snapshots check "$T/model" "$log" "$i" "$UFMT" "$RCTCTL" "$STATE" "$DISK" $SIZE $GRAN 2>&1) || rc=$?
    res=$(grep '^RESULT' <<<"$out" || true)
    [[ -n "$res" ]] || { printf '%s\n' "$out"; fail "cycle $i: the checker crashed"; }
    declare -A R=()
    for kv in ${res#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    printf '   cycle %3d: kill %-6s (in flight: %s), %5d writes (%5d acked, %4d durable blocks), %2d cuts, %2d deletes, %2d first writes held%s; %2d snapshots verified (%d new); store %7d B (bound %8d, allocated %7d), index %6d B\n' \
        "$i" "${R[mode]}" "${R[call]}" "${R[ops]}" "${R[acked]}" "${R[durable_blocks]}" "${R[cuts]}" "${R[deletes]}" \
        "${R[held]}" "$( ((double == 0)) || echo ", killed again ${double} ms into the restart")" \
        "$((${R[new]} + ${R[old]}))" "${R[new]}" "${R[store]}" "${R[bound]}" "${R[alloc]}" "${R[index]}"
    if ((rc != 0)); then
        printf '%s\n' "$out" | grep -v '^RESULT' | head -n 40
        KEEP_TMP=1
        fail "cycle $i failed (seed $CRASH_SEED; evidence kept in $T: log-$i.txt, model/, state/, rctd-state.log)"
    fi
    NKILL[$mode]=$((NKILL[$mode] + 1))
    [[ "${R[call]}" == C ]] && in_cut=$((in_cut + 1))
    [[ "${R[call]}" == D ]] && in_delete=$((in_delete + 1))
    held_total=$((held_total + ${R[held]}))
    new_total=$((new_total + ${R[new]})) old_total=$((old_total + ${R[old]}))
    cuts_total=$((cuts_total + ${R[cuts]})) deletes_total=$((deletes_total + ${R[deletes]}))
    ops_total=$((ops_total + ${R[ops]})) lost_total=$((lost_total + ${R[lost_acked]}))
    ((${R[store]} > max_store)) && max_store=${R[store]}
    daemon_alive "cycle $i"
done

printf 'SUMMARY: cycles=%d kills: cut=%d (call in flight %d) cow=%d (first writes held at the kill: %d) delete=%d (call in flight %d) any=%d; clean stops=%d; double=%d writes=%d cuts=%d deletes=%d snapshots_verified=%d (new %d, re-read %d) lost_unflushed=%d store_max=%d (seed %d)\n' \
    "$CRASH_CYCLES" "${NKILL[cut]}" "$in_cut" "${NKILL[cow]}" "$held_total" "${NKILL[delete]}" "$in_delete" \
    "${NKILL[any]}" "${NKILL[clean]}" "$double_total" "$ops_total" "$cuts_total" "$deletes_total" "$((new_total + old_total))" \
    "$new_total" "$old_total" "$lost_total" "$max_store" "$CRASH_SEED"
say "PASS"
