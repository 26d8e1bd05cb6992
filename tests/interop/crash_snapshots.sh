#!/bin/bash
# Snapshots across kill -9 (issue #4): CRASH_CYCLES (default 24) cycles of
#
#   write workload through NBD + snapshot cuts and deletes under it  ->
#   kill -9 rctd at a chosen moment  ->  restart rctd  ->  check
#
# on one 32 MiB disk (granularity 64K), prefilled with written blocks so that
# chunk copies hold data.
#
# The workload (workload.py, /usr/bin/python3 + libnbd) is one process:
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

# ------------------------------------------------------------- the workload
cat >"$T/workload.py" <<'PY'
# workload.py URI LOG SEED CYCLE SIZE CONTROL_SOCK DISK PID MODE KILL_AFTER_S MAX_ALIVE [ALIVE...]
# Writes, cuts and deletes until it kills rctd (pid PID); then writes LOG:
#   W tag kind blk nblk fua submit complete ok   (complete = -1 if never acked)
#   F submit complete ok
#   C name start end status   (end = -1, status = -1: in flight at the kill)
#   D name start end status
#   K time mode in_flight_call last_cut_end
#   S figures   (mode clean: the store figures before the SIGTERM)
import http.client, json, nbd, os, random, signal, socket, struct, sys, threading, time

(uri, logpath, seed, cycle, size, ctl, disk, pid, mode, kill_after, max_alive) = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
    sys.argv[7], int(sys.argv[8]), sys.argv[9], float(sys.argv[10]), int(sys.argv[11]))
alive = list(sys.argv[12:])
sys.setswitchinterval(0.0002)  # the controller's sleeps must be precise
BS = 4096
NBLK = size // BS
QD = 32
rng = random.Random(seed * 1000003 + cycle)
crng = random.Random(seed * 7919 + cycle)
mono = time.monotonic
lines = []
lock = threading.Lock()
dead = threading.Event()

def pattern(tag, blk, n):
    return b"".join(struct.pack("<QQ", tag, blk + i) * (BS // 16) for i in range(n))

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def call(method, path, body=None):
    c = UnixHTTP(ctl)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        c.close()

durations = {"C": [0.01], "D": [0.01]}
pause = threading.Event()
writer_done = threading.Event()

def figures(j):
    """The store figures a restart must not change, as one word."""
    return ",".join(["%s:%s:%s" % (x["name"], x["valid"], x["exclusive_bytes"]) for x in j["snapshots"]] +
                    ["copies:%s" % j["store"]["copies"], "bytes:%s" % j["store"]["bytes"]])

def action(kind, name, kill_in=None):
    """Run one cut (C) or delete (D); with kill_in, kill rctd that long after
    sending it. Returns (status, killed_in_flight)."""
    res = {}
    def run():
        try:
            if kind == "C":
                res["st"], res["body"] = call("POST", "/v1/disks/%s/snapshots" % disk, {"name": name})
            else:
                res["st"], res["body"] = call("DELETE", "/v1/disks/%s/snapshots/%s" % (disk, name))
        except Exception as e:
            res["exc"] = str(e)
        res["end"] = mono()
    th = threading.Thread(target=run)
    start = mono()
    th.start()
    in_flight = None
    if kill_in is not None:
        time.sleep(kill_in)
        in_flight = "end" not in res
        kt = mono()
        os.kill(pid, signal.SIGKILL)
    th.join()
    if "exc" in res or kill_in is not None and in_flight:
        end, st = -1, -1
    else:
        end, st = res["end"], res["st"]
        if st >= 300:
            print("control call %s %s failed: %s %s" % (kind, name, st, res.get("body")), file=sys.stderr)
        else:
            durations[kind].append(end - start)
    with lock:
        lines.append("%s %s %.6f %.6f %d" % (kind, name, start, end, st))
    if kill_in is not None:
        return st, in_flight, kt
    return st, None, None

def est(kind):
    """How long a call of this kind takes: the shortest or the median of the
    recent ones (half the time each; their durations vary a lot)."""
    d = sorted(durations[kind][1:][-20:] or durations[kind])
    return d[0] if crng.random() < 0.5 else d[len(d) // 2]

def controller():
    t0 = mono()
    k = 0
    last_cut_end = -1.0
    try:
        while True:
            time.sleep(crng.uniform(0.04, 0.2))
            armed = mono() - t0 >= kill_after
            if armed and mode == "clean":
                # no kill: quiesce the writer, note the store figures, SIGTERM
                pause.set()
                writer_done.wait(30)
                st, body = call("GET", "/v1/disks/%s/snapshots" % disk)
                j = json.loads(body)
                lines.append("S " + figures(j))
                kt = mono()
                os.kill(pid, signal.SIGTERM)
                lines.append("K %.6f clean - %.6f" % (kt, last_cut_end))
                return
            if armed and mode == "any":
                kt = mono()
                os.kill(pid, signal.SIGKILL)
                lines.append("K %.6f any - %.6f" % (kt, last_cut_end))
                return
            delete = alive and (len(alive) >= max_alive or crng.random() < 0.3)
            if armed and mode == "delete":
                delete = bool(alive)
            if armed and mode == "cut":
                delete = False
            if delete:
                # the oldest half the time, else any
                name = alive.pop(0 if crng.random() < 0.5 else crng.randrange(len(alive)))
                if armed and mode == "delete":
                    st, infl, kt = action("D", name, crng.uniform(0, 0.8 * est("D")))
                    lines.append("K %.6f delete %s %.6f" % (kt, "D" if infl else "-", last_cut_end))
                    return
                st, _, _ = action("D", name)
            else:
                k += 1
                name = "c%ds%d" % (cycle, k)
                if armed and mode == "cut":
                    st, infl, kt = action("C", name, crng.uniform(0, 0.8 * est("C")))
                    lines.append("K %.6f cut %s %.6f" % (kt, "C" if infl else "-", last_cut_end))
                    return
                st, _, _ = action("C", name)
                if st < 300:
                    alive.append(name)
                    last_cut_end = mono()
                if armed and mode == "cow":
                    time.sleep(crng.uniform(0, 0.008))
                    kt = mono()
                    os.kill(pid, signal.SIGKILL)
                    lines.append("K %.6f cow - %.6f" % (kt, last_cut_end))
                    return
            if mono() - t0 > kill_after + 20:
                lines.append("X controller never killed rctd")
                return
    except Exception as e:
        lines.append("X controller: %s" % str(e).replace("\n", " "))
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

h = nbd.NBD()
h.connect_uri(uri)
busy = bytearray(NBLK)   # blocks of requests in flight
ops = []                 # [line prefix, submit, complete, ok]
seq = 0
inflight = 0
# Most writes go to a 2 MiB hot window that moves every 0.1-0.5 s, so that
# what each snapshot keeps differs (and a leak shows against the bound).
HOT = (2 << 20) // BS
hot, hot_until = 0, 0.0
err_seen = [None]

def submit_one():
    global seq, inflight
    if rng.random() < 0.02:
        op = ["F", mono(), -1.0, 0]
        def done(err, op=op):
            global inflight
            op[2] = mono()
            op[3] = 1 if err.value == 0 else 0
            inflight -= 1
            return 1
        ops.append(op)
        inflight += 1
        h.aio_flush(completion=done)
        return
    global hot, hot_until
    if mono() > hot_until:
        hot = rng.randrange(0, NBLK - HOT + 1)
        hot_until = mono() + rng.uniform(0.1, 0.5)
    for _ in range(20):
        n = rng.choice((1, 1, 1, 2, 3, 4, 8, 16))
        if rng.random() < 0.01:
            b = rng.randrange(0, NBLK - n + 1)
        else:
            b = hot + rng.randrange(0, HOT - n + 1)
        if not any(busy[b:b + n]):
            break
    else:
        return
    seq += 1
    tag = (cycle << 32) | seq
    zero = rng.random() < 0.05
    fua = rng.random() < 0.1
    busy[b:b + n] = b"\x01" * n
    op = ["W %d %s %d %d %d" % (tag, "z" if zero else "w", b, n, fua), mono(), -1.0, 0]
    def done(err, op=op, b=b, n=n):
        global inflight
        op[2] = mono()
        op[3] = 1 if err.value == 0 else 0
        if err.value != 0 and err_seen[0] is None:
            err_seen[0] = err.value
        busy[b:b + n] = bytes(n)
        inflight -= 1
        return 1
    ops.append(op)
    inflight += 1
    flags = nbd.CMD_FLAG_FUA if fua else 0
    if zero:
        h.aio_zero(n * BS, b * BS, completion=done, flags=flags)
    else:
        h.aio_pwrite(pattern(tag, b, n), b * BS, completion=done, flags=flags)

ctl_thread = threading.Thread(target=controller)
ctl_thread.start()
why = "?"
try:
    while True:
        if pause.is_set():
            while inflight > 0:
                h.poll(-1)
            op = ["F", mono(), -1.0, 0]
            h.flush()
            op[2], op[3] = mono(), 1
            ops.append(op)
            why = "paused"
            writer_done.set()
            h.poll(-1)  # until the server goes away
            break
        while inflight < QD:
            submit_one()
        h.poll(-1)
        if err_seen[0] is not None:
            why = "a request failed with errno %d" % err_seen[0]
            break
except nbd.Error as e:
    why = str(e) if why != "paused" else why
writer_done.set()
ctl_thread.join()
with open(logpath, "w") as f:
    for l in lines:
        f.write(l + "\n")
    for op in ops:
        f.write("%s %.6f %.6f %d\n" % (op[0], op[1], op[2] if op[3] else -1.0, op[3]))
    f.write("E %s\n" % why.replace("\n", " "))
PY

# --------------------------------------------------------------- the checker
cat >"$T/checker.py" <<'PY'
# checker.py MODEL LOG CYCLE URI_PREFIX SOCK RCTCTL STATE DISK SIZE GRAN
# MODEL is a directory keeping what earlier cycles established:
#   base.bin           the live disk's block tags after the last check
#   snaps.json         known snapshots: name -> {cs, ce, state, verified}
#   snap-NAME.bin      a verified snapshot's block tags
#   hist.bin           writes possibly relevant to the leak bound
# Prints problems and one line
#   RESULT ops=.. acked=.. durable=.. snaps=.. new=.. ... problems=..
import json, math, os, struct, subprocess, sys
from array import array
import nbd

(model, logpath, cycle, uri_prefix, rctctl, state, disk, size, gran) = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6],
    sys.argv[7], int(sys.argv[8]), int(sys.argv[9]))
BS = 4096
NBLK = size // BS
NCHUNK = (size + gran - 1) // gran
INF = math.inf
problems = []
notes = []

def problem(m):
    problems.append(m)
    print("   PROBLEM: " + m)

def mp(n):
    return os.path.join(model, n)

def load_tags(path):
    a = array("Q")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a

def save_tags(path, a):
    with open(path + ".tmp", "wb") as f:
        f.write(a.tobytes())
    os.rename(path + ".tmp", path)

base = load_tags(mp("base.bin")) if os.path.exists(mp("base.bin")) else array("Q", bytes(8 * NBLK))
snaps = json.load(open(mp("snaps.json"))) if os.path.exists(mp("snaps.json")) else {}
hist = json.load(open(mp("hist.json"))) if os.path.exists(mp("hist.json")) else []  # [c0, c1, s, e]

# ---- the cycle's log
writes = []   # dict(tag, z, b, n, fua, s, e)
flush_s = []  # submit times of acknowledged flushes
cuts, deletes = [], []
kill = None
end_why = None
before_stop = None
for line in open(logpath):
    w = line.split()
    if not w:
        continue
    k = w[0]
    if k == "W":
        e = float(w[7])
        writes.append(dict(tag=int(w[1]), z=w[2] == "z", b=int(w[3]), n=int(w[4]), fua=w[5] == "1",
                           s=float(w[6]), e=INF if e < 0 else e, ok=w[8] == "1"))
    elif k == "F":
        if w[3] == "1":
            flush_s.append(float(w[1]))
    elif k == "C":
        cuts.append(dict(name=w[1], s=float(w[2]), e=float(w[3]), st=int(w[4])))
    elif k == "D":
        deletes.append(dict(name=w[1], s=float(w[2]), e=float(w[3]), st=int(w[4])))
    elif k == "K":
        kill = dict(t=float(w[1]), mode=w[2], call=w[3], last_cut_end=float(w[4]))
    elif k == "S":
        before_stop = w[1]
    elif k == "X":
        problem("workload: " + " ".join(w[1:]))
    elif k == "E":
        end_why = " ".join(w[1:])
if kill is None:
    problem("the workload did not kill rctd (log ends: %s)" % end_why)
    kill = dict(t=INF, mode="?", call="-", last_cut_end=-1)
if kill["mode"] == "clean":
    if end_why != "paused":
        problem("the writer stopped for %s, not the clean stop" % end_why)
    if any(not w["ok"] for w in writes):
        problem("a write failed or went unanswered before the clean stop")
elif end_why and not any(x in end_why for x in ("ENOTCONN", "ECONNRESET", "EPIPE", "disconnected", "DEAD",
                                                 "end of file", "EOF", "errno 107", "errno 104", "errno 32")):
    problem("the writer stopped for something other than the kill: %s" % end_why)
last_flush = max(flush_s) if flush_s else -INF

for c in cuts:
    if c["st"] >= 300:
        problem("cut %s failed with HTTP %d" % (c["name"], c["st"]))
    if c["st"] < 0:
        snaps[c["name"]] = dict(cs=c["s"], ce=None, state="maybe", verified=False, cycle=cycle)
    else:
        snaps[c["name"]] = dict(cs=c["s"], ce=c["e"], state="yes", verified=False, cycle=cycle)
for d in deletes:
    s = snaps.get(d["name"])
    if s is None:
        problem("deleted %s, which the model does not know" % d["name"])
        continue
    if d["st"] >= 300:
        problem("delete of %s failed with HTTP %d" % (d["name"], d["st"]))
    elif d["st"] < 0:
        s["state"] = "maybe-deleted"
    else:
        s["state"] = "deleted"

# ---- per-block history of this cycle (writes of a block never overlap)
per_block = [None] * NBLK
for i, w in enumerate(writes):
    for b in range(w["b"], w["b"] + w["n"]):
        if per_block[b] is None:
            per_block[b] = []
        per_block[b].append(i)

def tag_of(i):
    return 0 if writes[i]["z"] else writes[i]["tag"]

h = nbd.NBD()

def read_all(name):
    h2 = nbd.NBD()
    h2.connect_uri(uri_prefix % name)
    if h2.get_size() != size:
        problem("%s is %d bytes, want %d" % (name, h2.get_size(), size))
    out = []
    for off in range(0, size, 8 << 20):
        out.append(h2.pread(min(8 << 20, size - off), off))
    h2.shutdown()
    return b"".join(out)

def decode(data, what):
    """Block tags of an image; a block that is neither zeroes nor a whole
    pattern of the right block is reported."""
    tags = array("Q", bytes(8 * NBLK))
    zero = bytes(BS)
    bad = 0
    for b in range(NBLK):
        blk = data[b * BS:(b + 1) * BS]
        if blk == zero:
            continue
        t, nb = struct.unpack_from("<QQ", blk)
        if nb != b or blk != struct.pack("<QQ", t, b) * (BS // 16):
            bad += 1
            if bad <= 5:
                problem("%s: block %d holds neither zeroes nor a whole written block (tag %#x, block %d)"
                        % (what, b, t, nb))
            t = 0xFFFFFFFFFFFFFFFF
        tags[b] = t
    return tags

# ---- (a) the listing
p = subprocess.run([rctctl, "--state-dir", state, "--json", "snapshots", disk], capture_output=True, text=True)
if p.returncode != 0:
    problem("rctctl snapshots failed: %s" % p.stderr.strip())
    listing = {"snapshots": [], "store": {}}
else:
    listing = json.loads(p.stdout)
    if before_stop is not None:
        after = ",".join(["%s:%s:%s" % (x["name"], x["valid"], x["exclusive_bytes"]) for x in listing["snapshots"]] +
                         ["copies:%s" % listing["store"]["copies"], "bytes:%s" % listing["store"]["bytes"]])
        if after != before_stop:
            problem("a clean restart changed the snapshots or the store figures (garbage that only a restart "
                    "frees?): before %s, after %s" % (before_stop, after))
listed = {s["name"]: s for s in listing["snapshots"]}
for n, s in listed.items():
    if not s["valid"]:
        problem("snapshot %s is INVALID after a crash: %s" % (n, s.get("invalid_reason")))
for n, s in list(snaps.items()):
    st = s["state"]
    if st == "yes" and n not in listed:
        problem("snapshot %s (cut returned, never deleted) is gone" % n)
    elif st == "deleted" and n in listed:
        problem("snapshot %s was deleted (the call returned) but is listed" % n)
    elif st == "gone" and n in listed:
        problem("snapshot %s was absent after an earlier restart but is back" % n)
    if n not in listed:
        s["state"] = "gone"
for n in listed:
    if n not in snaps:
        problem("listed snapshot %s was never cut" % n)
for n in listed:
    if n in snaps and snaps[n]["state"] in ("maybe", "maybe-deleted"):
        snaps[n]["state"] = "yes"

# ---- (b) snapshot contents
verified_new = verified_old = 0
for n in sorted(listed, key=lambda x: snaps.get(x, {}).get("cs", 0)):
    s = snaps.get(n)
    if s is None or not listed[n]["valid"]:
        continue
    got = decode(read_all("%s@%s" % (disk, n)), "snapshot " + n)
    if s["verified"]:
        want = load_tags(mp("snap-%s.bin" % n))
        if got != want:
            diff = [b for b in range(NBLK) if got[b] != want[b]]
            problem("snapshot %s changed since it was verified: %d blocks, e.g. %s (tags %s, were %s)" % (
                n, len(diff), diff[:5], [hex(got[b]) for b in diff[:3]], [hex(want[b]) for b in diff[:3]]))
        verified_old += 1
        continue
    if s["cycle"] != cycle:
        problem("snapshot %s of cycle %d was never verified" % (n, s["cycle"]))
        continue
    cs, ce = s["cs"], s["ce"] if s["ce"] is not None else INF
    lo, hi = cs, ce
    wrong = 0
    for b in range(NBLK):
        lst = per_block[b] or []
        # candidates: the last write completed before the call, and any overlapping it
        cands = {}  # tag -> indices in lst (-1: the base); zero writes all read as tag 0
        prev = -1  # index in lst of the last write completed before cs; -1: the base
        for j, i in enumerate(lst):
            w = writes[i]
            if w["e"] < cs:
                prev = j
            elif w["s"] < ce:
                cands.setdefault(tag_of(i), []).append(j)
        cands.setdefault(base[b] if prev < 0 else tag_of(lst[prev]), []).append(prev)
        if got[b] not in cands:
            wrong += 1
            if wrong <= 5:
                problem("snapshot %s block %d reads tag %#x; candidates %s (cut call %.6f..%.6f)" % (
                    n, b, got[b], [(hex(t), [(writes[lst[j]]["s"], writes[lst[j]]["e"]) if j >= 0 else "base"
                                              for j in js]) for t, js in cands.items()], cs, ce))
            continue
        if len(cands[got[b]]) > 1:
            continue  # zeroes from more than one write: no time bound from this block
        j = cands[got[b]][0]
        if j >= 0:
            lo = max(lo, writes[lst[j]]["s"])
        if j + 1 < len(lst):
            hi = min(hi, writes[lst[j + 1]]["e"])
    if not wrong and not lo < hi:
        problem("snapshot %s is not a point-in-time image: no instant in the cut call %.6f..%.6f fits every "
                "block (latest submit seen %.6f, earliest completion of a write not seen %.6f)" % (n, cs, ce, lo, hi))
    save_tags(mp("snap-%s.bin" % n), got)
    s["verified"] = True
    verified_new += 1

# ---- (c) the live disk
live = decode(read_all(disk), "the live disk")
durable = lost_acked = 0
bad_live = 0
for b in range(NBLK):
    lst = per_block[b]
    if not lst:
        if live[b] != base[b]:
            bad_live += 1
            if bad_live <= 5:
                problem("live block %d changed (tag %#x, was %#x) though no write touched it" % (b, live[b], base[b]))
        continue
    d = -1
    a = -1
    for j, i in enumerate(lst):
        w = writes[i]
        if w["ok"] and (w["fua"] or w["e"] < last_flush):
            d = j
        if w["ok"]:
            a = j
    cands = [tag_of(i) for i in lst[max(d, 0):]]
    if d < 0:
        cands.append(base[b])
    else:
        durable += 1
    if live[b] not in cands:
        bad_live += 1
        if bad_live <= 5:
            problem("live block %d reads tag %#x; its last durable write is %s, candidates %s" % (
                b, live[b], hex(tag_of(lst[d])) if d >= 0 else "none", [hex(t) for t in cands]))
    elif a >= 0 and live[b] not in [tag_of(i) for i in lst[a:]]:
        lost_acked += 1
save_tags(mp("base.bin"), live)

# ---- (d) leaks
# An unacknowledged write cannot land after rctd died (half a second after
# the kill, to be safe; the next cycle's cuts come later).
for w in writes:
    hist.append([w["b"] * BS // gran, ((w["b"] + w["n"]) * BS - 1) // gran, w["s"],
                 w["e"] if w["e"] != INF else kill["t"] + 0.5])
alive = sorted((snaps[n]["cs"], snaps[n]["ce"] if snaps[n]["ce"] is not None else INF, n)
               for n in listed if n in snaps and listed[n]["valid"])
if alive:
    oldest = alive[0][0]
    hist = [x for x in hist if x[3] > oldest]  # no interval can use the rest
bound = 0
for i, (cs, ce, n) in enumerate(alive):
    nxt = alive[i + 1][1] if i + 1 < len(alive) else INF
    touched = bytearray(NCHUNK)
    for c0, c1, s, e in hist:
        if e > cs and s < nxt:
            touched[c0:c1 + 1] = b"\x01" * (c1 - c0 + 1)
    bound += sum(touched) * gran
store = listing.get("store", {})
sbytes = store.get("bytes", -1)
excl = sum(s.get("exclusive_bytes", 0) for s in listing["snapshots"])
if sbytes < 0:
    problem("rctctl snapshots shows no store.bytes")
elif sbytes > bound:
    problem("leak: the store holds %d bytes, but the %d remaining snapshots can need at most %d" % (
        sbytes, len(alive), bound))
if excl > max(sbytes, 0):
    problem("the snapshots' exclusive_bytes add up to %d, more than the store's %d bytes" % (excl, sbytes))
chunks = os.path.join(state, "disks", disk, "snapshots", "chunks.dat")
alloc = fsize = 0
if os.path.exists(chunks):
    # data extents (SEEK_DATA/SEEK_HOLE), not st_blocks: that counts the
    # filesystem's extent tree too
    fd = os.open(chunks, os.O_RDONLY)
    fsize = os.fstat(fd).st_size
    pos = 0
    while pos < fsize:
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        hole = os.lseek(fd, d, os.SEEK_HOLE)
        alloc += hole - d
        pos = hole
    os.close(fd)
    if alloc > max(sbytes, 0):
        problem("leak: chunks.dat has %d bytes allocated, but the store says it uses %d" % (alloc, sbytes))
elif sbytes > 0:
    problem("the store says it uses %d bytes but %s does not exist" % (sbytes, chunks))
index = os.path.join(state, "disks", disk, "snapshots", "index.log")
isize = os.path.getsize(index) if os.path.exists(index) else 0

json.dump(snaps, open(mp("snaps.json.tmp"), "w"))
os.rename(mp("snaps.json.tmp"), mp("snaps.json"))
json.dump(hist, open(mp("hist.json.tmp"), "w"))
os.rename(mp("hist.json.tmp"), mp("hist.json"))

# how many first writes were waiting for a copy at the kill: unacknowledged
# writes to chunks that no earlier write had touched since the last cut
fw = 0
lce = kill["last_cut_end"]
if lce > 0:
    seen = bytearray(NCHUNK)
    for w in writes:
        if w["s"] < lce:
            continue
        c0, c1 = w["b"] * BS // gran, ((w["b"] + w["n"]) * BS - 1) // gran
        if w["e"] == INF and not all(seen[c0:c1 + 1]):
            fw += 1
        seen[c0:c1 + 1] = b"\x01" * (c1 - c0 + 1)
for m in notes:
    print("   note: " + m)
print("RESULT mode=%s call=%s ops=%d acked=%d durable_blocks=%d lost_acked=%d cuts=%d deletes=%d listed=%d "
      "new=%d old=%d held=%d store=%d bound=%d alloc=%d fsize=%d index=%d problems=%d" % (
      kill["mode"], kill["call"], len(writes), sum(1 for w in writes if w["ok"]), durable, lost_acked,
      len(cuts), len(deletes), len(listed), verified_new, verified_old, fw, sbytes, bound, alloc, fsize,
      isize, len(problems)))
sys.exit(1 if problems else 0)
PY

# ------------------------------------------------------------------- cycles
mkdir -p "$T/model"
start_rctd
rctctl create "$DISK" --size $SIZE --granularity 64K >/dev/null
U=$(uri "$DISK")
# Every block starts as a written block (tag 1), so that chunk copies hold
# data (an all-zero chunk's copy takes no space, which would loosen the leak
# bound).
py - "$U" "$T/model/base.bin" $SIZE <<'PY' || fail "prefilling the disk failed"
import nbd, struct, sys
from array import array
uri, base, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
for off in range(0, size, 1 << 20):
    h.pwrite(b"".join(struct.pack("<QQ", 1, b) * 256 for b in range(off // 4096, (off + (1 << 20)) // 4096)), off)
h.flush()
open(base, "wb").write(array("Q", [1] * (size // 4096)).tobytes())
PY
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
    alive=$(rctctl --json snapshots "$DISK" | py -c '
import json, sys
print(" ".join(s["name"] for s in json.load(sys.stdin)["snapshots"] if s["valid"]))')
    after_s=$(printf '%d.%03d' $((RANDOM % 2)) $((RANDOM % 1000)))
    log=$T/log-$i.txt
    # shellcheck disable=SC2086 # $alive is a list of names
    py "$T/workload.py" "$U" "$log" "$CRASH_SEED" "$i" $SIZE "$STATE/control.sock" "$DISK" "$RCTD_PID" \
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
    out=$(py "$T/checker.py" "$T/model" "$log" "$i" "$UFMT" "$RCTCTL" "$STATE" "$DISK" $SIZE $GRAN 2>&1) || rc=$?
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
