"""The workload, the model and its checker of tests/interop/crash_snapshots.sh
(snapshots across kill -9)."""
import json
import math
import os
import random
import signal
import struct
import sys
import threading
import time
from array import array

import nbd

from rcttest import cli
from rcttest.control import call as control_call
from rcttest.nbdio import prefill_blocks
from rcttest.patterns import block_is, block_pattern
from rcttest.rctctl import run as rctctl_run


def figures(j):
    """The store figures a restart must not change, as one word (j: rctctl
    --json snapshots, or GET /v1/disks/NAME/snapshots)."""
    return ",".join(["%s:%s:%s" % (x["name"], x["valid"], x["exclusive_bytes"]) for x in j["snapshots"]] +
                    ["copies:%s" % j["store"]["copies"], "bytes:%s" % j["store"]["bytes"]])


def prefill(argv):
    """prefill URI BASE SIZE: the whole disk as blocks of tag 1; BASE (the
    model's base.bin) says so."""
    uri, base, size = argv[1], argv[2], int(argv[3])
    h = nbd.NBD()
    h.connect_uri(uri)
    prefill_blocks(h, 0, size, tag=1)
    open(base, "wb").write(array("Q", [1] * (size // 4096)).tobytes())


def valid(argv):
    """valid < SNAPS_JSON: the names of the valid snapshots, on one line."""
    print(" ".join(s["name"] for s in json.load(sys.stdin)["snapshots"] if s["valid"]))


def workload(argv):
    """workload URI LOG SEED CYCLE SIZE CONTROL_SOCK DISK PID MODE KILL_AFTER_S MAX_ALIVE [ALIVE...]
    Writes (32 in flight), cuts and deletes until it kills rctd (pid PID);
    then writes LOG:
      W tag kind blk nblk fua submit complete ok   (complete = -1 if never acked)
      F submit complete ok
      C name start end status   (end = -1, status = -1: in flight at the kill)
      D name start end status
      K time mode in_flight_call last_cut_end
      S figures   (mode clean: the store figures before the SIGTERM)"""
    (uri, logpath, seed, cycle, size, ctl, disk, pid, mode, kill_after, max_alive) = (
        argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6],
        argv[7], int(argv[8]), argv[9], float(argv[10]), int(argv[11]))
    alive = list(argv[12:])
    sys.setswitchinterval(0.0002)  # the controller's sleeps must be precise
    BS = 4096
    NBLK = size // BS
    QD = 32
    rng = random.Random(seed * 1000003 + cycle)
    crng = random.Random(seed * 7919 + cycle)
    mono = time.monotonic
    lines = []
    lock = threading.Lock()

    def pattern(tag, blk, n):
        return block_pattern(tag, blk, n, BS)

    def call(method, path, body=None):
        return control_call(ctl, method, path, body, timeout=30)

    durations = {"C": [0.01], "D": [0.01]}
    pause = threading.Event()
    writer_done = threading.Event()

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
        nonlocal seq, inflight
        if rng.random() < 0.02:
            op = ["F", mono(), -1.0, 0]
            def done(err, op=op):
                nonlocal inflight
                op[2] = mono()
                op[3] = 1 if err.value == 0 else 0
                inflight -= 1
                return 1
            ops.append(op)
            inflight += 1
            h.aio_flush(completion=done)
            return
        nonlocal hot, hot_until
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
            nonlocal inflight
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



def check(argv):
    """check MODEL LOG CYCLE URI_FMT RCTCTL STATE DISK SIZE GRAN: after the
    restart, checks cycle CYCLE (its workload log LOG) against the model:
    (a) the listing, (b) every valid snapshot's content (point in time, or
    unchanged since verified), (c) the live disk, (d) no leak in the store.
    MODEL is a directory keeping what earlier cycles established:
      base.bin           the live disk's block tags after the last check
      snaps.json         known snapshots: name -> {cs, ce, state, verified}
      snap-NAME.bin      a verified snapshot's block tags
      hist.json          writes possibly relevant to the leak bound
    Prints problems and one line
      RESULT mode=.. call=.. ops=.. acked=.. ... problems=..
    and exits 1 on any problem."""
    (model, logpath, cycle, uri_prefix, rctctl, state, disk, size, gran) = (
        argv[1], argv[2], int(argv[3]), argv[4], argv[5], argv[6],
        argv[7], int(argv[8]), int(argv[9]))
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
            if nb != b or not block_is(blk, t, b, BS):
                bad += 1
                if bad <= 5:
                    problem("%s: block %d holds neither zeroes nor a whole written block (tag %#x, block %d)"
                            % (what, b, t, nb))
                t = 0xFFFFFFFFFFFFFFFF
            tags[b] = t
        return tags

    # ---- (a) the listing
    p = rctctl_run(rctctl, state, "--json", "snapshots", disk)
    if p.returncode != 0:
        problem("rctctl snapshots failed: %s" % p.stderr.strip())
        listing = {"snapshots": [], "store": {}}
    else:
        listing = json.loads(p.stdout)
        if before_stop is not None:
            after = figures(listing)
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


COMMANDS = {"prefill": prefill, "valid": valid, "workload": workload, "check": check}

if __name__ == "__main__":
    cli.run(COMMANDS)
