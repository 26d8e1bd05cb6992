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
# The workload (a /usr/bin/python3 program using libnbd, two connections on
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

# ---------------------------------------------------------------- the writer
cat >"$T/writer.py" <<'PY'
# writer.py URI LOG SEED CYCLE SIZE MID RCTCTL STATE DISK
# Writes until the server goes away; every line of LOG is flushed at once.
import nbd, os, random, struct, subprocess, sys, threading, time

uri, logpath = sys.argv[1], sys.argv[2]
seed, cycle, size = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mid, rctctl, state, disk = sys.argv[6], sys.argv[7], sys.argv[8], sys.argv[9]
NTHREADS = 2
log = open(logpath, "w")
lock = threading.Lock()
seq = [0]

def emit(line, new_seq=False):
    with lock:
        s = None
        if new_seq:
            seq[0] += 1
            s = seq[0]
            line = line.format(s)
        log.write(line + "\n")
        log.flush()
        return s

def tag(s):
    return (seed << 40) | (cycle << 24) | s

def pattern(s, off, n):
    t = tag(s)
    return b"".join(struct.pack("<QQ", t, off + i) * 32 for i in range(0, n, 512))

def worker(t, handles, ready):
    rng = random.Random(seed * 1000003 + cycle * 101 + t)
    h = handles[t]
    lo, hi = t * size // NTHREADS, (t + 1) * size // NTHREADS
    hot = rng.randrange(lo, hi - (4 << 20), 512)
    k = rng.randint(3, 64)
    # Locality varies by cycle: the intent-region excess depends on it.
    p_random = (0.0, 0.002, 0.05, 0.3)[cycle % 4]
    n = 0
    ready.wait()
    try:
        while True:
            r = rng.random()
            op = "w" if r < 0.85 else ("z" if r < 0.95 else "t")
            length = rng.randint(8, 128) * 512
            if rng.random() >= p_random:
                off = hot + rng.randrange(0, 4 << 20)
            else:
                off = rng.randrange(lo, hi)
            off -= off % (4096 if rng.random() < 0.5 else 512)
            off = max(lo, min(off, hi - length))
            fua = op != "t" and rng.random() < 0.15
            if rng.random() < 0.005:
                hot = rng.randrange(lo, hi - (4 << 20), 512)
            s = emit("I {} %d %s %d %d %d %.6f" % (t, op, off, length, fua, time.monotonic()), new_seq=True)
            flags = nbd.CMD_FLAG_FUA if fua else 0
            if op == "w":
                h.pwrite(pattern(s, off, length), off, flags)
            elif op == "z":
                h.zero(length, off, flags)
            else:
                h.trim(length, off)
            emit("A %d" % s)
            n += 1
            if n % k == 0:
                f = emit("F {} %d" % t, new_seq=True)
                h.flush()
                emit("FA %d" % f)
    except Exception as e:
        emit("X %d %.6f %s" % (t, time.monotonic(), str(e).replace("\n", " ")))

def checkpointer(ready):
    rng = random.Random(seed * 7 + cycle)
    ready.wait()
    time.sleep(rng.uniform(0.02, 1.0))
    emit("CS")
    p = subprocess.run([rctctl, "--state-dir", state, "checkpoint", disk, "--name", mid],
                       capture_output=True, text=True)
    if p.returncode == 0:
        emit("CD %s" % p.stdout.splitlines()[0].strip())
    else:
        emit("CF %d %s" % (p.returncode, p.stderr.strip().replace("\n", " ")))

handles = []
for t in range(NTHREADS):
    h = nbd.NBD()
    h.connect_uri(uri)
    handles.append(h)
ready = threading.Event()
threads = [threading.Thread(target=worker, args=(t, handles, ready)) for t in range(NTHREADS)]
if mid != "-":
    threads.append(threading.Thread(target=checkpointer, args=(ready,)))
for th in threads:
    th.start()
emit("R")
ready.set()
for th in threads:
    th.join()
emit("END")
PY

# --------------------------------------------------------------- the checker
cat >"$T/checker.py" <<'PY'
# checker.py ARGS (see main); prints details of every problem, then one line
#   RESULT ops=.. acked=.. data_writes=.. sectors=.. misses=.. excess=.. ...
# and exits 1 on any problem.
import argparse, json, nbd, struct, subprocess, sys
from array import array

ap = argparse.ArgumentParser()
ap.add_argument("--log", required=True)
ap.add_argument("--uri", required=True)
ap.add_argument("--rctctl", required=True)
ap.add_argument("--state", required=True)
ap.add_argument("--disk", required=True)
ap.add_argument("--seed", type=int, required=True)
ap.add_argument("--cycle", type=int, required=True)
ap.add_argument("--size", type=int, required=True)
ap.add_argument("--gran", type=int, required=True)
ap.add_argument("--region", type=int, required=True)
ap.add_argument("--cp", required=True)          # checkpoint name of this cycle
ap.add_argument("--token", required=True)       # its token
ap.add_argument("--mid", default="-")           # mid-workload checkpoint name
ap.add_argument("--prev-cp", default="-")       # previous cycle's checkpoint name
ap.add_argument("--prev-rep", default="-")      # its reported chunks, saved last cycle
ap.add_argument("--save-rep", required=True)    # where to save this cycle's
ap.add_argument("--interval", type=int, required=True)  # persist interval of the killed daemon (ms)
ap.add_argument("--double", type=int, default=0)  # ms: rctd was killed again this long into its restart
args = ap.parse_args()

G, SIZE, SECT = args.gran, args.size, 512
NCHUNK = (SIZE + G - 1) // G
NSECT = SIZE // SECT
problems = []
notes = []

def problem(msg):
    problems.append(msg)
    print("   MISS/ERROR: " + msg)

def rctctl(*a, check=True):
    p = subprocess.run([args.rctctl, "--state-dir", args.state] + list(a), capture_output=True, text=True)
    if check and p.returncode != 0:
        problem("rctctl %s failed (%d): %s" % (" ".join(a), p.returncode, p.stderr.strip()))
    return p

def changes(since, until=None):
    a = ["--json", "changes", args.disk, "--since", since, "--limit", "1000000"]
    if until:
        a += ["--until", until]
    p = rctctl(*a)
    if p.returncode != 0:
        return None
    chunks = bytearray(NCHUNK)
    for e in json.loads(p.stdout)["extents"]:
        o, l = e["offset"], e["length"]
        if o % G or (l % G and o + l != SIZE) or l <= 0 or o + l > SIZE:
            problem("changes --since %s: extent (%d, %d) is not chunk aligned or outside the disk" % (since, o, l))
        for c in range(o // G, (o + l + G - 1) // G):
            if chunks[c]:
                problem("changes --since %s: chunk %d reported twice (overlapping extents)" % (since, c))
            chunks[c] = 1
    return chunks

# ---- parse the log
ops = {}          # seq -> dict
order = []        # op seqs in issue order
pending = {}      # thread -> acked ops not yet covered by a flush
flush_snap = {}
cp = {"start": None, "done": None, "token": None, "fail": None}
last_seq = 0
crash_ts = float("inf")   # when the first connection saw the server go away
with open(args.log) as f:
    for line in f:
        w = line.split()
        if not w:
            continue
        k = w[0]
        if k == "I":
            s = int(w[1])
            o = dict(seq=s, t=int(w[2]), op=w[3], off=int(w[4]), len=int(w[5]), fua=w[6] == "1", ts=float(w[7]),
                     acked=False, durable=False, after_cp=cp["done"] is not None)
            ops[s] = o
            order.append(s)
            last_seq = s
        elif k == "A":
            o = ops[int(w[1])]
            o["acked"] = True
            o["acked_before_cs"] = cp["start"] is None
            if o["fua"] and o["op"] in "wz":
                o["durable"] = True
            pending.setdefault(o["t"], []).append(o)
        elif k == "F":
            t = int(w[2])
            flush_snap[int(w[1])] = pending.get(t, [])
            pending[t] = []
        elif k == "FA":
            for o in flush_snap.pop(int(w[1])):
                o["durable"] = True
        elif k == "X":
            crash_ts = min(crash_ts, float(w[2]))
            msg = " ".join(w[3:])
            # Only the kill may end a connection: a transport error, not an
            # error reply from the server.
            if not any(e in msg for e in ("ECONNRESET", "ENOTCONN", "EPIPE", "ECONNABORTED",
                                          "disconnected", "EOF", "end of file")):
                problem("connection %s failed with something other than the kill: %s" % (w[1], msg))
        elif k == "CS":
            cp["start"] = last_seq
        elif k == "CD":
            cp["done"] = last_seq
            cp["token"] = w[1]
        elif k == "CF":
            cp["fail"] = " ".join(w[1:])
for o in ops.values():
    o.setdefault("acked_before_cs", False)

h = nbd.NBD()
h.add_meta_context("qemu:dirty-bitmap:" + args.cp)
h.connect_uri(args.uri)

def pattern(s, off, n):
    t = (args.seed << 40) | (args.cycle << 24) | s
    return b"".join(struct.pack("<QQ", t, off + i) * 32 for i in range(0, n, 512))

def expected(s, sector):
    o = ops[s]
    if o["op"] == "z":
        return bytes(SECT)
    return pattern(s, sector * SECT, SECT)

def read(off, n):
    out = []
    while n > 0:
        m = min(n, 32 << 20)
        out.append(h.pread(m, off))
        off += m
        n -= m
    return b"".join(out)

# ---- (a) data
last_dur = array("l", [-1]) * NSECT
last_any = array("l", [-1]) * NSECT
for s in order:
    o = ops[s]
    a, b = o["off"] // SECT, (o["off"] + o["len"]) // SECT
    last_any[a:b] = array("l", [s]) * (b - a)
    if o["durable"]:
        last_dur[a:b] = array("l", [s]) * (b - a)
late = {}  # sector -> ops after its durable one (rare)
data_writes = sum(1 for o in ops.values() if o["durable"])
sectors = skipped = 0
sect = 0
while sect < NSECT:
    d = last_dur[sect]
    if d < 0:
        sect += 1
        continue
    # a run of sectors with the same durable op
    e = sect
    while e < NSECT and last_dur[e] == d:
        e += 1
    got = read(sect * SECT, (e - sect) * SECT)
    o = ops[d]
    if o["op"] == "z":
        want = bytes((e - sect) * SECT)
    else:
        want = pattern(d, sect * SECT, (e - sect) * SECT)
    if got == want:
        sectors += e - sect
        sect = e
        continue
    for x in range(sect, e):
        g = got[(x - sect) * SECT:(x - sect + 1) * SECT]
        cands = [d]
        if last_any[x] != d:
            cands += [s for s in order if s > d and ops[s]["off"] // SECT <= x < (ops[s]["off"] + ops[s]["len"]) // SECT]
        if any(ops[s]["op"] == "t" for s in cands):
            skipped += 1
            continue
        sectors += 1
        if not any(g == expected(s, x) for s in cands):
            t, sq, so = struct.unpack("<QQ", g[:16]) if any(g) else (0, 0, 0)
            problem("data: sector at %d (durable op %s) reads %s; candidates %s" % (
                x * SECT, o, ("tag %#x offset %d" % (t, so)) if any(g) else "zeroes",
                [(s, ops[s]["op"], ops[s]["acked"]) for s in cands]))
            if len(problems) > 30:
                break
    sect = e

# ---- (b) coverage since this cycle's checkpoint (by token)
rep = changes(args.token)
by_name = changes(args.cp)
if rep is not None and by_name is not None and rep != by_name:
    problem("changes --since TOKEN and --since %s differ" % args.cp)
truth = bytearray(NCHUNK)
touched_regions = {}    # region -> when it was last written
misses = 0
unacked_absent = indeterminate = 0
def covered(chunks, o):
    c0, c1 = o["off"] // G, (o["off"] + o["len"] - 1) // G
    return [c for c in range(c0, c1 + 1) if not chunks[c]]

def landed(o):
    """Did an unacknowledged op reach the disk? True, False or None (cannot tell)."""
    if o["op"] != "w":
        return None
    a, b = o["off"] // SECT, (o["off"] + o["len"]) // SECT
    got = read(o["off"], o["len"])
    return any(got[(x - a) * SECT:(x - a + 1) * SECT] == expected(o["seq"], x) for x in range(a, b))

def must_cover(chunks, o, what):
    """Every acknowledged op, and every unacknowledged one that landed, must be covered."""
    global misses, unacked_absent, indeterminate
    miss = covered(chunks, o)
    if not miss:
        return
    if o["acked"]:
        misses += 1
        problem("tracking: acknowledged op %s: chunks %s not in %s" % (o, miss, what))
        return
    l = landed(o)
    if l:
        misses += 1
        problem("tracking: unacknowledged write %s landed but chunks %s are not in %s" % (o, miss, what))
    elif l is None:
        indeterminate += 1
        notes.append("unacknowledged op %s is not in %s; cannot tell whether it landed" % (o, what))
    else:
        unacked_absent += 1

for s in order:
    o = ops[s]
    c0, c1 = o["off"] // G, (o["off"] + o["len"] - 1) // G
    for c in range(c0, c1 + 1):
        truth[c] = 1
    for r in range(o["off"] // args.region, (o["off"] + o["len"] - 1) // args.region + 1):
        touched_regions[r] = o["ts"]
    if rep is not None:
        must_cover(rep, o, "changes --since c%d" % args.cycle)

excess = 0
max_age = 0.0
AGE_SLACK = 1.0
if rep is not None:
    bad_excess = []
    for c in range(NCHUNK):
        if rep[c] and not truth[c]:
            excess += G
            if (c * G) // args.region not in touched_regions:
                bad_excess.append(c)
            elif crash_ts != float("inf"):
                max_age = max(max_age, crash_ts - touched_regions[(c * G) // args.region])
    if bad_excess:
        problem("excess: %d reported chunks lie in intent regions not written this cycle, e.g. %s" % (
            len(bad_excess), [c * G for c in bad_excess[:8]]))
    # A region's intent bit is cleared by the second persist after its last
    # write at the latest; allow 2 intervals plus a generous second for
    # slow fsyncs on a loaded machine.
    if max_age > 2 * args.interval / 1000 + AGE_SLACK:
        problem("excess: a region last written %.3f s before the crash is still counted (persist interval %d ms)"
                % (max_age, args.interval))
    with open(args.save_rep, "wb") as f:
        f.write(rep)

    # the NBD context must say exactly the same
    if not h.can_meta_context("qemu:dirty-bitmap:" + args.cp):
        problem("export does not offer qemu:dirty-bitmap:%s" % args.cp)
    else:
        bm = bytearray(NCHUNK)
        pos = 0
        while pos < SIZE:
            got = []
            def cb(ctx, off, ents, err):
                if ctx == "qemu:dirty-bitmap:" + args.cp:
                    got.extend(zip(ents[0::2], ents[1::2]))
                return 0
            h.block_status(min(SIZE - pos, 1 << 30), pos, cb)
            if not got:
                problem("block_status returned no extents at %d" % pos)
                break
            for ln, fl in got:
                if fl & ~1:
                    problem("dirty bitmap flags %#x (only bit 0 allowed)" % fl)
                if fl & 1:
                    if pos % G or (ln % G and pos + ln < SIZE):
                        problem("dirty extent (%d, %d) not chunk aligned" % (pos, ln))
                    for c in range(pos // G, min(NCHUNK, (pos + ln + G - 1) // G)):
                        bm[c] = 1
                pos += ln
        if bm != rep:
            diff = [c * G for c in range(NCHUNK) if bm[c] != rep[c]]
            problem("qemu:dirty-bitmap:%s differs from changes --since at %d chunks, e.g. %s" % (
                args.cp, len(diff), diff[:8]))

# recovery excess reported by info
info = json.loads(rctctl("--json", "info", args.disk).stdout or "{}").get("tracking", {})
rec_excess = info.get("recovery_excess_bytes", -1)
if not info.get("recovered_after_crash", False):
    problem("rctctl info does not say the disk was recovered after a crash: %s" % info)
# (After a second crash during recovery, the first recovery may already have
# moved the intent regions into the persisted map.)
if rep is not None and excess > rec_excess and not args.double:
    problem("excess %d bytes exceeds the recovery excess %d that rctctl info reports" % (excess, rec_excess))
if rec_excess > len(touched_regions) * args.region:
    problem("rctctl info counts %d bytes of intent regions, but only %d regions of %d bytes were written" % (
        rec_excess, len(touched_regions), args.region))

# ---- previous checkpoint: never shrinks, covers this cycle too
if args.prev_cp != "-":
    prev = changes(args.prev_cp)
    if prev is not None:
        old = open(args.prev_rep, "rb").read()
        lost = [c * G for c in range(NCHUNK) if old[c] and not prev[c]]
        if lost:
            problem("changes --since %s shrank across the crash: %d chunks lost, e.g. %s" % (
                args.prev_cp, len(lost), lost[:8]))
        if rep is not None:
            lost = [c * G for c in range(NCHUNK) if rep[c] and not prev[c]]
            if lost:
                problem("changes --since %s lacks %d chunks that --since %s has, e.g. %s" % (
                    args.prev_cp, len(lost), args.cp, lost[:8]))

# ---- mid-workload checkpoint
midinfo = "-"
if args.mid != "-":
    cps = json.loads(rctctl("--json", "checkpoints", args.disk).stdout or '{"checkpoints": []}')["checkpoints"]
    there = [c for c in cps if c["name"] == args.mid]
    if cp["token"]:
        midinfo = "acked"
        if not there:
            problem("acknowledged checkpoint %s (token %s) is gone after the crash" % (args.mid, cp["token"]))
        elif there[0]["token"] != cp["token"]:
            problem("checkpoint %s has token %s after the crash, %s before" % (args.mid, there[0]["token"], cp["token"]))
    elif there:
        midinfo = "unacked-present"
    elif cp["start"] is not None:
        midinfo = "unacked-absent"
        p = rctctl("changes", args.disk, "--since", args.mid, check=False)
        if p.returncode == 0 or "no checkpoint named" not in p.stderr:
            problem("absent checkpoint %s: changes --since it gave rc %d, %r" % (args.mid, p.returncode, p.stderr))
    else:
        midinfo = "not-started"
        if there:
            problem("checkpoint %s exists although its rctctl call never started" % args.mid)
    if there:
        tok = there[0]["token"]
        after = changes(tok)
        before = changes(args.cp, args.mid)
        if after is not None and before is not None:
            union = bytearray(a | b for a, b in zip(after, before))
            if rep is not None and union != rep:
                problem("changes c%d..%s plus since %s differ from since c%d" % (args.cycle, args.mid, args.mid, args.cycle))
            for s in order:
                o = ops[s]
                if o["acked_before_cs"]:
                    m = covered(before, o)
                    if m:
                        misses += 1
                        problem("op %s acknowledged before checkpoint %s started is not in changes --since c%d --until %s: chunks %s"
                                % (o, args.mid, args.cycle, args.mid, m))
                if o["after_cp"]:
                    must_cover(after, o, "changes --since %s (issued after it returned)" % args.mid)

for n in notes:
    print("   note: " + n)
acked = sum(1 for o in ops.values() if o["acked"])
print("RESULT age=%.3f regions=%d ops=%d acked=%d data_writes=%d sectors=%d skipped=%d misses=%d excess=%d rec_excess=%d "
      "truth=%d unacked_absent=%d indeterminate=%d mid=%s problems=%d" % (
      max_age, len(touched_regions), len(ops), acked, data_writes, sectors, skipped, misses, excess, rec_excess,
      sum(truth) * G, unacked_absent, indeterminate, midinfo, len(problems)))
sys.exit(1 if problems else 0)
PY

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
    /usr/bin/python3 "$T/writer.py" "$U" "$log" "$CRASH_SEED" "$i" $SIZE "$mid" "$RCTCTL" "$STATE" "$DISK" \
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
    out=$(/usr/bin/python3 "$T/checker.py" --log "$log" --uri "$U" --rctctl "$RCTCTL" --state "$STATE" \
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
