"""The writer and the per-snapshot checker of tests/interop/snapshots_load.sh
(50 snapshots under full-speed writes)."""
import hashlib
import json
import math
import random
import struct
import sys
import threading
import time

import nbd

from rcttest import cli
from rcttest.control import UnixHTTP
from rcttest.nbdio import prefill_blocks
from rcttest.patterns import block_is, block_pattern
from rcttest.rctctl import run as rctctl_run


def prefill(argv):
    """prefill URI LO HI: [LO, HI) as whole blocks of tag 1 (the verifiable
    region's copies then hold data)."""
    uri, lo, hi = argv[1], int(argv[2]), int(argv[3])
    h = nbd.NBD()
    h.connect_uri(uri)
    prefill_blocks(h, lo, hi, tag=1)


def load(argv):
    """load URI_FMT CONTROL_SOCK LOG NSNAP LO HI: the verifiable writer on
    [LO, HI) (16 requests in flight; writes of 1-16 4 KiB blocks, each block
    carrying (sequence number, block number)) and NSNAP cuts 30-120 ms apart
    through the control API; right after each cut the whole export d@SNAP is
    read and its sha256 noted. LOG gets one line per cut and per write:
      C name cut_start cut_end sha256 read_seconds
      W tag block nblocks submit complete   (complete = -1: failed)
      X what went wrong"""
    ufmt, ctl, logpath, nsnap, lo, hi = argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), int(argv[6])
    sys.setswitchinterval(0.0002)
    BS, QD = 4096, 16
    B0, B1 = lo // BS, hi // BS
    mono = time.monotonic
    rng = random.Random(4)
    lines = []
    stop = threading.Event()

    def controller():
        try:
            for k in range(1, nsnap + 1):
                time.sleep(rng.uniform(0.03, 0.12))
                name = "s%d" % k
                c = UnixHTTP(ctl, timeout=60)
                s = mono()
                c.request("POST", "/v1/disks/d/snapshots", body=json.dumps({"name": name}),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                body = r.read()
                e = mono()
                c.close()
                if r.status != 201:
                    lines.append("X cut %s: HTTP %d %s" % (name, r.status, body))
                    return
                # the checksum at the cut: read the whole snapshot now, under the load
                h = nbd.NBD()
                h.connect_uri(ufmt % ("d@" + name))
                size = h.get_size()
                m = hashlib.sha256()
                for off in range(0, size, 8 << 20):
                    m.update(h.pread(min(8 << 20, size - off), off))
                h.shutdown()
                lines.append("C %s %.6f %.6f %s %.6f" % (name, s, e, m.hexdigest(), mono() - e))
        except Exception as ex:
            lines.append("X controller: %s" % str(ex).replace("\n", " "))
        finally:
            stop.set()

    h = nbd.NBD()
    h.connect_uri(ufmt % "d")
    busy = bytearray(B1)
    ops = []
    inflight = 0
    seq = 1

    def submit():
        nonlocal seq, inflight
        for _ in range(20):
            n = rng.choice((1, 1, 2, 4, 8, 16))
            b = rng.randrange(B0, B1 - n + 1)
            if not any(busy[b:b + n]):
                break
        else:
            return
        seq += 1
        tag = seq
        busy[b:b + n] = b"\x01" * n
        op = [tag, b, n, mono(), -1.0]
        def done(err, op=op, b=b, n=n):
            nonlocal inflight
            if err.value == 0:
                op[4] = mono()
            busy[b:b + n] = bytes(n)
            inflight -= 1
            return 1
        ops.append(op)
        inflight += 1
        data = block_pattern(tag, b, n, BS)
        h.aio_pwrite(data, b * BS, completion=done)

    th = threading.Thread(target=controller)
    th.start()
    while not stop.is_set():
        while inflight < QD:
            submit()
        h.poll(-1)
    while inflight > 0:
        h.poll(-1)
    h.flush()
    th.join()
    with open(logpath, "w") as f:
        for l in lines:
            f.write(l + "\n")
        for op in ops:
            f.write("W %d %d %d %.6f %.6f\n" % tuple(op))
    bad = [op for op in ops if op[4] < 0]
    if bad:
        sys.exit("%d writes failed" % len(bad))


def verify(argv):
    """verify LOG URI_FMT RCTCTL STATE SIZE GRAN IMG NAME PREV: checks one
    snapshot (read from the nbdcopy image IMG), comparing it with the previous
    one's image PREV.raw if PREV is not "-". Prints one line
      RESULT vblocks=.. fioblocks=.. fio_written=.. changed=.. fio_changed=.. problems=..
    and exits 1 on any problem."""
    (logpath, ufmt, rctctl, state, size, gran, img, name, prev) = (
        argv[1], argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]),
        argv[7], argv[8], argv[9])
    BS = 4096
    NBLK = size // BS
    HALFB = NBLK // 2
    INF = math.inf
    problems = []
    def problem(m):
        problems.append(m)
        if len(problems) <= 8:
            print("   PROBLEM: %s: %s" % (name, m))

    cut = None
    writes = []
    for line in open(logpath):
        w = line.split()
        if w[0] == "C" and w[1] == name:
            cut = (float(w[2]), float(w[3]), w[4])
        elif w[0] == "W":
            e = float(w[5])
            writes.append((int(w[1]), int(w[2]), int(w[3]), float(w[4]), INF if e < 0 else e))
    if cut is None:
        sys.exit("no cut %s in the log" % name)
    cs, ce, sum_at_cut = cut
    data = open(img, "rb").read()
    if len(data) != size:
        problem("the nbdcopy image is %d bytes, want %d" % (len(data), size))

    # (a) the checksum at the cut
    if hashlib.sha256(data).hexdigest() != sum_at_cut:
        problem("whole export sha256 differs from the one read right after the cut")

    # (b) verifiable region
    per_block = {}
    for i, (tag, b, n, s, e) in enumerate(writes):
        for x in range(b, b + n):
            per_block.setdefault(x, []).append(i)
    lo, hi = cs, ce
    vblocks = 0
    for b in range(HALFB, NBLK):
        blk = data[b * BS:(b + 1) * BS]
        t, nb = struct.unpack_from("<QQ", blk)
        if nb != b or not block_is(blk, t, b, BS):
            problem("block %d holds neither a whole written block nor the prefill" % b)
            continue
        lst = per_block.get(b, [])
        cands = {}
        prev_j = -1
        for j, i in enumerate(lst):
            _, _, _, s, e = writes[i]
            if e < cs:
                prev_j = j
            elif s < ce:
                cands[writes[i][0]] = j
        cands[1 if prev_j < 0 else writes[lst[prev_j]][0]] = prev_j
        if t not in cands:
            problem("block %d reads write %d; candidates %s (cut call %.6f..%.6f)" % (
                b, t, {k: (writes[lst[j]][3:] if j >= 0 else "prefill") for k, j in cands.items()}, cs, ce))
            continue
        j = cands[t]
        if j >= 0:
            lo = max(lo, writes[lst[j]][3])
        if j + 1 < len(lst):
            hi = min(hi, writes[lst[j + 1]][4])
        vblocks += 1
    if not lo < hi:
        problem("not a point-in-time image: no instant in the cut call %.6f..%.6f fits every block "
                "(latest submit seen %.6f, earliest completion of a write not seen %.6f)" % (cs, ce, lo, hi))

    # (c) fio region: zeroes or whole fio blocks for their offset
    zero = bytes(BS)
    fio_written = 0
    for b in range(HALFB):
        blk = data[b * BS:(b + 1) * BS]
        if blk == zero:
            continue
        magic, vt, ln, seed, off = struct.unpack_from("<HHIQQ", blk)
        if magic != 0xACCA or ln != BS or off != b * BS or hashlib.md5(blk[56:]).digest() != blk[40:56]:
            problem("fio block %d is not a whole fio block of its offset (magic %#x len %d offset %d)" % (b, magic, ln, off))
            continue
        fio_written += 1
    h = nbd.NBD()
    h.connect_uri(ufmt % ("d@" + name))
    again = h.pread(HALFB * BS, 0)
    if again != data[:HALFB * BS]:
        problem("a second read of the fio region differs from the first")

    # (d) against the previous snapshot and change tracking
    changed = fio_changed = 0
    if prev != "-":
        old = open(prev + ".raw", "rb").read()
        p = rctctl_run(rctctl, state, "--json", "diff", "d", prev, name, "--limit", "1000000")
        if p.returncode != 0:
            problem("rctctl diff d %s %s failed: %s" % (prev, name, p.stderr.strip()))
        else:
            dirty = bytearray(size // gran)
            for e in json.loads(p.stdout)["extents"]:
                for c in range(e["offset"] // gran, (e["offset"] + e["length"] + gran - 1) // gran):
                    dirty[c] = 1
            for b in range(NBLK):
                if data[b * BS:(b + 1) * BS] != old[b * BS:(b + 1) * BS]:
                    changed += 1
                    fio_changed += b < HALFB
                    if not dirty[b * BS // gran]:
                        problem("block %d differs from %s but its chunk is not in diff %s %s" % (b, prev, prev, name))
        if fio_changed == 0:
            problem("the fio region did not change since %s: was fio writing?" % prev)
    print("RESULT vblocks=%d fioblocks=%d fio_written=%d changed=%d fio_changed=%d problems=%d" % (
        vblocks, HALFB, fio_written, changed, fio_changed, len(problems)))
    sys.exit(1 if problems else 0)


COMMANDS = {"prefill": prefill, "load": load, "verify": verify}

if __name__ == "__main__":
    cli.run(COMMANDS)
