#!/bin/bash
# Change tracking across kill -9: CRASH_CYCLES (default 20) cycles of
#
#   checkpoint c<i>  ->  write workload through NBD  ->  kill -9 rctd at a
#   random moment  ->  restart rctd  ->  check
#
# on one 256 MiB disk (granularity 64K) served with --intent-region 1M and a
# --persist-interval drawn at random (50-500 ms) at every start, so that the
# kill lands in every phase of the persister (intent commit, map persist,
# intent clear, checkpoint seal).
#
# The workload (rcttest.interop.crash_tracking, /usr/bin/python3 + libnbd; two connections on
# two threads, each on its own half of the disk) logs every operation before
# sending it ("I") and after its reply ("A"), FLUSHes every few writes ("F",
# "FA"), sends some writes with FUA, and mixes in WRITE_ZEROES and TRIM. Each
# 512-byte sector of a write carries (seed, sequence number, sector offset), so
# a read-back tells which write a sector came from. In some cycles a
# checkpoint m<i> is taken mid-workload by a background `rctctl checkpoint`.
#
# After the restart the checks are:
#  (a) data: every write acknowledged before its connection's last
#      acknowledged FLUSH, and every acknowledged FUA write, reads back intact
#      (unless a later write of this cycle, which may or may not have landed,
#      covers the sector: then any of those candidates is accepted);
#  (b) coverage: `changes --since TOKEN(c<i>)` covers every chunk of every
#      acknowledged operation, and of every unacknowledged one that landed
#      (an unacknowledged write that never reached the disk may be missing);
#      the `qemu:dirty-bitmap:c<i>` context says exactly the same;
#      `changes --since c<i-1>` never shrinks across crashes;
#  (c) excess: reported minus truly written chunk bytes, printed per cycle;
#      every excess chunk must lie in a 1M intent region written this cycle,
#      and the total must not exceed the recovery excess `rctctl info` shows;
#  (mid) an acknowledged mid-workload checkpoint survives with its token; an
#      unacknowledged one is either there with a working token or cleanly
#      absent; writes acknowledged before it started are in
#      `changes --since c<i> --until m<i>`, writes issued after it returned
#      are in `changes --since m<i>`.
# Every 5th cycle also stops rctd cleanly first and checks that the clean
# restart changed nothing; every 7th kills rctd a second time 0-80 ms into
# its restart (while it recovers).
#
# Long run (about 2.5 s per cycle):
#   CRASH_CYCLES=1000 RCT_TEST_TIMEOUT=4000 meson test -C build crash_tracking \
#       --timeout-multiplier 0
# or directly: CRASH_CYCLES=1000 bash tests/interop/crash_tracking.sh
# CRASH_SEED fixes the random choices (not the timing); it is printed.
: "${CRASH_CYCLES:=20}"
: "${CRASH_SEED:=$(( $(date +%s) % 1000000 ))}"
: "${RCT_TEST_TIMEOUT:=$((240 + CRASH_CYCLES * 12))}"
export RCT_TEST_TIMEOUT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
requires nbdinfo

/usr/bin/python3 -c 'import nbd' 2>/dev/null || skip "/usr/bin/python3 has no nbd module (python3-libnbd)"

# Private copies of the binaries: a long run must not trip over a rebuild of
# the shared build directory (a relinking binary is briefly not executable).
mkdir -p "$T/bin"
cp "$RCTD" "$RCTCTL" "$T/bin/"
RCTD=$T/bin/$(basename "$RCTD") RCTCTL=$T/bin/$(basename "$RCTCTL")

DISK=crash
SIZE=$((256 << 20))
GRAN=$((64 << 10))
REGION=$((1 << 20))
RANDOM=$CRASH_SEED
say "cycles $CRASH_CYCLES, seed $CRASH_SEED"

# The writer and the checker: tests/rcttest/interop/crash_tracking.py
# (`writer` logs every operation, `check` runs checks (a)-(c) and (mid)).

# ------------------------------------------------------------------- cycles
rand_interval() { echo $((50 + RANDOM % 451)); }
start_tracked() {
    PI=$(rand_interval)
    start_rctd --intent-region 1M --persist-interval "$PI"
}

start_tracked
rctctl create "$DISK" --size $SIZE --granularity 64K >/dev/null
U=$(uri "$DISK")

total_ops=0 total_acked=0 total_data=0 total_sectors=0 total_misses=0
max_excess=0 sum_excess=0
prev_cp=- prev_rep=-
for ((i = 1; i <= CRASH_CYCLES; i++)); do
    if ((i % 5 == 0)); then
        # clean stop and start: must change nothing
        before=$(rctctl changes "$DISK" --since "$prev_cp")
        stop_rctd
        ((RCTD_EXIT == 0)) || fail "cycle $i: clean stop exited $RCTD_EXIT"
        start_tracked
        after=$(rctctl changes "$DISK" --since "$prev_cp")
        [[ "$before" == "$after" ]] || fail "cycle $i: a clean restart changed 'changes --since $prev_cp'"
        rctctl --json info "$DISK" | grep -q '"recovered_after_crash": false' ||
            fail "cycle $i: after a clean restart, info still says recovered after a crash: $(rctctl info "$DISK")"
    fi
    cpname=c$i
    TOKEN=$(rctctl checkpoint "$DISK" --name "$cpname" 2>/dev/null | head -n1)
    [[ "$TOKEN" == rct1.* ]] || fail "cycle $i: checkpoint printed no token: '$TOKEN'"
    mid=-
    ((RANDOM % 3 == 0)) && mid=m$i
    log=$T/ops-$i.txt
    /usr/bin/python3 -m rcttest.interop.crash_tracking writer "$U" "$log" "$CRASH_SEED" "$i" $SIZE "$mid" "$RCTCTL" "$STATE" "$DISK" \
        2>>"$T/writer.log" &
    wpid=$!
    until grep -q '^R$' "$log" 2>/dev/null; do
        kill -0 $wpid 2>/dev/null || fail "cycle $i: the writer died before starting (see writer.log)"
        sleep 0.02
    done
    ms=$((200 + RANDOM % 1301))
    sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
    crash_rctd_at "$STATE"
    for ((w = 0; w < 100; w++)); do
        kill -0 $wpid 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 $wpid 2>/dev/null; then
        kill -KILL $wpid
        fail "cycle $i: the writer did not notice the crash within 10 s"
    fi
    wait $wpid || true
    killed_pi=$PI
    double=0
    if ((i % 7 == 3)); then
        # A second crash while rctd is starting up and recovering.
        double=$((RANDOM % 80))
        "$RCTD" --state-dir "$STATE" --intent-region 1M --persist-interval 100 </dev/null \
            >>"$T/rctd-$(basename "$STATE").log" 2>&1 &
        dpid=$!
        sleep "0.$(printf %03d $double)"
        kill -KILL $dpid 2>/dev/null || true
        wait $dpid 2>/dev/null || true
    fi
    start_tracked
    rc=0
    out=$(/usr/bin/python3 -m rcttest.interop.crash_tracking check --log "$log" --uri "$U" --rctctl "$RCTCTL" --state "$STATE" \
        --disk "$DISK" --seed "$CRASH_SEED" --cycle "$i" --size $SIZE --gran $GRAN --region $REGION \
        --cp "$cpname" --token "$TOKEN" --mid "$mid" --prev-cp "$prev_cp" --prev-rep "$prev_rep" \
        --save-rep "$T/rep-$i.bin" --interval "$killed_pi" --double "$double" 2>&1) || rc=$?
    res=$(grep '^RESULT' <<<"$out" || true)
    [[ -n "$res" ]] || { printf '%s\n' "$out"; fail "cycle $i: the checker crashed"; }
    declare -A R=()
    for kv in ${res#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    printf '   cycle %3d: interval %3d ms, kill at %4d ms: %5d ops (%5d acked), %5d durable writes, %7d sectors checked, %3d regions written, excess %9d B (recovery %9d B, oldest %5.3f s), mid %s%s, misses %d\n' \
        "$i" "$killed_pi" "$ms" "${R[ops]}" "${R[acked]}" "${R[data_writes]}" "${R[sectors]}" "${R[regions]}" "${R[excess]}" \
        "${R[rec_excess]}" "${R[age]}" "${R[mid]}" "$( ((double == 0)) || echo ", killed again ${double} ms into the restart")" "${R[misses]}"
    if ((rc != 0)); then
        printf '%s\n' "$out" | grep -v '^RESULT' | head -n 60
        KEEP_TMP=1  # keep $T (op log, state dir, rctd log) for a post-mortem
        fail "cycle $i failed (seed $CRASH_SEED; evidence kept in $T: ops-$i.txt, state/, rctd-state.log)"
    fi
    grep -q '^   note' <<<"$out" && grep '^   note' <<<"$out"
    total_ops=$((total_ops + ${R[ops]}))
    total_acked=$((total_acked + ${R[acked]}))
    total_data=$((total_data + ${R[data_writes]}))
    total_sectors=$((total_sectors + ${R[sectors]}))
    total_misses=$((total_misses + ${R[misses]}))
    sum_excess=$((sum_excess + ${R[excess]}))
    ((${R[excess]} > max_excess)) && max_excess=${R[excess]}
    # Keep only this cycle's checkpoint (the next cycle checks it again).
    if ((i > 1)); then
        rctctl checkpoint-delete "$DISK" "c$((i - 1))" >/dev/null || fail "cycle $i: cannot delete c$((i - 1))"
        rm -f "$T/ops-$((i - 1)).txt" "$T/rep-$((i - 1)).bin"
    fi
    if [[ "$mid" != - ]] && rctctl checkpoints "$DISK" | grep -q "^$mid "; then
        rctctl checkpoint-delete "$DISK" "$mid" >/dev/null || fail "cycle $i: cannot delete $mid"
    fi
    prev_cp=$cpname prev_rep=$T/rep-$i.bin
    daemon_alive "cycle $i"
done

mean=$((sum_excess / CRASH_CYCLES))
printf 'SUMMARY: cycles=%d ops_checked=%d acked=%d durable_writes_verified=%d sectors_verified=%d misses=%d excess_max=%d excess_mean=%d (bytes; seed %d)\n' \
    "$CRASH_CYCLES" "$total_ops" "$total_acked" "$total_data" "$total_sectors" "$total_misses" \
    "$max_excess" "$mean" "$CRASH_SEED"
((total_misses == 0)) || fail "$total_misses missed changes"
say "PASS"
