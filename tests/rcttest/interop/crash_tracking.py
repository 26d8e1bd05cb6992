"""The workload and the checker of tests/interop/crash_tracking.sh (change
tracking across kill -9)."""
import argparse
import json
import random
import struct
import sys
import threading
import time
from array import array

import nbd

from rcttest import cli
from rcttest.nbdio import read_range
from rcttest.patterns import crash_tag, sector_pattern
from rcttest.rctctl import run as rctctl_run


def writer(argv):
    """writer URI LOG SEED CYCLE SIZE MID RCTCTL STATE DISK: two connections
    on two threads, each on its own half of the disk, write (some with FUA),
    zero and trim until the server goes away, FLUSHing every few requests;
    with MID not "-", a third thread takes checkpoint MID mid-workload with
    rctctl. Every line of LOG is flushed at once:
      R                              the workload starts
      I seq thread op off len fua ts an operation is sent (op w, z or t)
      A seq                          ... and acknowledged
      F seq thread / FA seq          a FLUSH sent / acknowledged
      X thread ts error              the connection ended
      CS / CD token / CF rc error    the checkpoint call: started / done / failed
      END"""
    uri, logpath = argv[1], argv[2]
    seed, cycle, size = int(argv[3]), int(argv[4]), int(argv[5])
    mid, rctctl, state, disk = argv[6], argv[7], argv[8], argv[9]
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

    def pattern(s, off, n):
        return sector_pattern(crash_tag(seed, cycle, s), off, n)

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
        p = rctctl_run(rctctl, state, "checkpoint", disk, "--name", mid)
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


def check(argv):
    """check ARGS (see the options): after the restart, checks the cycle whose
    writer log is --log: (a) data, (b) coverage, (c) excess, (mid) the
    mid-workload checkpoint, as tests/interop/crash_tracking.sh describes.
    Prints details of every problem, then one line
      RESULT age=.. regions=.. ops=.. acked=.. data_writes=.. sectors=.. misses=.. excess=.. ...
    and exits 1 on any problem."""
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
    args = ap.parse_args(argv[1:])

    G, SIZE, SECT = args.gran, args.size, 512
    NCHUNK = (SIZE + G - 1) // G
    NSECT = SIZE // SECT
    problems = []
    notes = []

    def problem(msg):
        problems.append(msg)
        print("   MISS/ERROR: " + msg)

    def rctctl(*a, check=True):
        p = rctctl_run(args.rctctl, args.state, *a)
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
        return sector_pattern(crash_tag(args.seed, args.cycle, s), off, n)

    def expected(s, sector):
        o = ops[s]
        if o["op"] == "z":
            return bytes(SECT)
        return pattern(s, sector * SECT, SECT)

    def read(off, n):
        return read_range(h, off, n, 32 << 20)

    # ---- (a) data
    last_dur = array("l", [-1]) * NSECT
    last_any = array("l", [-1]) * NSECT
    for s in order:
        o = ops[s]
        a, b = o["off"] // SECT, (o["off"] + o["len"]) // SECT
        last_any[a:b] = array("l", [s]) * (b - a)
        if o["durable"]:
            last_dur[a:b] = array("l", [s]) * (b - a)
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
        nonlocal misses, unacked_absent, indeterminate
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


COMMANDS = {"writer": writer, "check": check}

if __name__ == "__main__":
    cli.run(COMMANDS)
