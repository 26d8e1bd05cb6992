"""bench/upgrade.sh: what a live upgrade (rctctl upgrade) costs rctd's NBD
clients, and how long it takes.

Variants, each its own rctd (state dir) so that an upgrade of one never
closes or opens another's disks:
  nbd    a small disk (SIZE), BUSY connections doing 4k random I/O
  big    the same load on a 1 TiB sparse disk (64 KiB chunks) with
         CHECKPOINTS checkpoints, each epoch holding SEAL_WRITES scattered
         4 KiB writes, and LIVE_WRITES more in the live epoch (a large map)
  conns  like nbd, with IDLE more connections open that ask nothing
  dirty  (only if asked for) like nbd, with DIRTY bytes written
         (acknowledged, never flushed) through one more connection just
         before each upgrade: what the page cache may hold when one comes
With --peer RCTD, every variant also runs on that build (rows KIND-peer),
alternating with the first.

Every busy connection is one libnbd handle in a process of its own, kept
for the whole run (never reconnected): QD requests in flight at most, at
RATE requests per second, WRITE_PCT% 4k writes of a self-describing
pattern into its own region (REGION bytes), the rest 4k reads of it, each
read checked against the last acknowledged write of its block; every
request's issue and completion times (CLOCK_MONOTONIC) are kept. Rounds
alternate the variants (reversed every other round: the machine drifts).
In a round, a variant's load runs, and every GAP_MS (at least twice the
last call, plus 100 ms) one `rctctl --json upgrade` runs. Per upgrade:

  pause     the longest any request took among those in flight at some
            moment between the call's start and its end (issued before the
            end, completed after the start): what a client saw
  baseline  the same over a window as long, in the middle of the gap after
            the upgrade: the normal tail under this load
  held_ms   the daemon's own measure: freeze start to the new rctd serving
  took_ms   the daemon's: the call's arrival to the new rctd's
            confirmation that it serves (just after the commit)
  freeze    from the old rctd's log ("frozen N NBD connection(s) in X
            ms (Y ms of it handing the disks off)"): freezing the connections
            and handing the disks off, and the latter alone

Fails (exit 1) when an upgrade fails or does not move every connection, a
request fails or reads wrong data, a connection is not the same one at the
end, a region differs from its last acknowledged writes, or the big disk's
checkpoints or changes differ after the upgrades.

Run as `/usr/bin/python3 -m rcttest.bench.upgrade [--quick] [--variants
nbd,big,conns[,dirty]] [--peer RCTD] [--out FILE]` (bench/upgrade.sh);
sizes and counts are RCT_UPGRADE_* environment variables (SETTINGS).
"""
import argparse
import ctypes
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from bisect import bisect_left

import nbd

from rcttest import control, nbdio
from rcttest.patterns import BLOCK, block_is, block_pattern

MIB = 1 << 20

# name: (default, --quick default, what)
SETTINGS = {
    "COUNT": (30, 6, "upgrades per variant"),
    "ROUNDS": (3, 2, "rounds the upgrades are split into"),
    "GAP_MS": (300, 300, "time between upgrades (ms)"),
    "BUSY": (4, 4, "busy connections"),
    "QD": (8, 8, "requests in flight per busy connection, at most"),
    "RATE": (1000, 1000, "requests per second per busy connection (0: as fast as it goes)"),
    "WRITE_PCT": (50, 50, "share of writes among the busy connections' requests (%)"),
    "REGION": ("32M", "8M", "bytes each busy connection reads and writes"),
    "SIZE": ("1G", "256M", "size of the nbd and conns variants' disk"),
    "IDLE": (64, 16, "idle connections of the conns variant"),
    "DIRTY": ("128M", "64M", "what the dirty variant writes, never flushed, before each upgrade"),
    "BIG_SIZE": ("1T", "1T", "size of the big variant's disk"),
    "GRANULARITY": ("64K", "64K", "the big disk's chunk size"),
    "CHECKPOINTS": (200, 50, "checkpoints of the big disk"),
    "SEAL_WRITES": (250, 100, "scattered 4 KiB writes in each of its sealed epochs"),
    "LIVE_WRITES": (100000, 20000, "scattered 4 KiB writes in its live epoch"),
}
VARIANTS = ("nbd", "big", "conns", "dirty")
DEFAULT_VARIANTS = ("nbd", "big", "conns")


FROZEN = re.compile(r"upgrade: frozen \d+ NBD connection\(s\) in (\d+) ms(?: \((\d+) ms of it (?:closing|handing) the disks(?: off)?\))?")


class BenchError(Exception):
    pass


def size_bytes(s):
    s = str(s).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(s[:-1]) * mult[s[-1]] if s and s[-1] in mult else int(s)


def settings(quick):
    out = {}
    for name, (full, short, _) in SETTINGS.items():
        v = os.environ.get("RCT_UPGRADE_" + name, short if quick else full)
        out[name] = size_bytes(v) if isinstance(full, str) else int(v)
    return out


def pct(values, p):
    """Nearest-rank percentile (over 30 upgrades, p99 is the largest)."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, -(-p * len(v) // 100) - 1))]


def ms(ns):
    return ns / 1e6


# ---------------------------------------------------------------- the daemon

class Daemon:
    """One rctd and its successors, in a state dir of its own."""

    def __init__(self, name, root, rctd, rctctl):
        self.name = name
        self.state = os.path.join(root, name)
        self.rctd, self.rctctl = rctd, rctctl
        self.log_path = self.state + ".log"
        self.log_pos = 0
        self.first = None  # the first rctd, our child; its successors are reparented to us
        self.pid = None

    def sock(self):
        return os.path.join(self.state, "nbd.sock")

    def uri(self, disk):
        return f"nbd+unix:///{disk}?socket={self.sock()}"

    def start(self):
        os.makedirs(self.state)
        with open(self.log_path, "ab") as log:
            self.first = subprocess.Popen([self.rctd, "--state-dir", self.state], stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=log)
        self.pid = self.first.pid
        deadline = time.monotonic() + 20
        while self.ctl("list").returncode != 0:
            if self.first.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{self.name}: rctd did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n=8):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def ctl(self, *args):
        return subprocess.run([self.rctctl, "--state-dir", self.state, *args], capture_output=True, text=True)

    def api(self, method, path, body=None):
        status, data = control.call(os.path.join(self.state, "control.sock"), method, "/v1" + path, body,
                                    timeout=120)
        if status >= 300:
            raise BenchError(f"{self.name}: {method} {path}: HTTP {status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def upgrade(self, connections):
        """One `rctctl --json upgrade`, checked; its numbers."""
        t0 = time.monotonic_ns()
        r = self.ctl("--json", "upgrade")
        t1 = time.monotonic_ns()
        if r.returncode != 0:
            raise BenchError(f"{self.name}: rctctl upgrade exited {r.returncode}: {r.stdout}{r.stderr}"
                             f"\n{self.log_tail()}")
        j = json.loads(r.stdout)
        old, new = j["old"]["pid"], j["new"]["pid"]
        if not j.get("upgraded") or old != self.pid or new == old:
            raise BenchError(f"{self.name}: unexpected upgrade reply (rctd was pid {self.pid}): {r.stdout}")
        self.pid = new  # whatever else is wrong, this one serves now
        if self.first is not None and self.first.pid == old:
            status, self.first = self.first.wait(30), None
        else:
            status = reap(old)
        if status != 0:
            raise BenchError(f"{self.name}: the old rctd (pid {old}) exited with {status}")
        if j.get("held_ms") is None:
            raise BenchError(f"{self.name}: the new rctd did not confirm that it serves: {r.stdout}")
        if j["connections"] != connections:
            raise BenchError(f"{self.name}: the upgrade moved {j['connections']} NBD connection(s), "
                             f"not {connections}:\n{self.log_tail()}")
        freeze, closing = self.freeze_log()
        return {"t0": t0, "t1": t1, "held_ms": j["held_ms"], "took_ms": j["took_ms"], "freeze_ms": freeze,
                "close_ms": closing}

    def freeze_log(self):
        """The old rctd's "frozen N NBD connection(s) in X ms (Y ms of it
        closing the disks)" since the last call: (X, Y), None where absent."""
        with open(self.log_path, errors="replace") as f:
            f.seek(self.log_pos)
            text = f.read()
            self.log_pos = f.tell()
        found = FROZEN.findall(text)
        if not found:
            return None, None
        x, y = found[-1]
        return float(x), float(y) if y else None

    def stop(self):
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.first and self.first.pid == pid:
            try:
                self.first.wait(15)
            except subprocess.TimeoutExpired:
                self.first.kill()
                self.first.wait()
        else:
            reap(pid, kill_after=15)


def reap(pid, kill_after=30):
    """Wait for a former rctd (reparented to this process, a subreaper);
    its exit status, a negative signal number, or None if it is not our
    child."""
    deadline = time.monotonic() + kill_after
    while True:
        try:
            p, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None  # not our child: its end is not ours to know
        if p == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.01)


def become_subreaper():
    """So that an rctd started by an rctd that exited is ours to wait for."""
    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


# ---------------------------------------------------------------- the load

def loader_main(ctl, uri, index, lo, length, qd, rate, write_pct, seed):
    """A busy connection, in a process of its own, driven over pipe ctl:
    run, pause (answers with the requests' times), verify, stop."""
    try:
        Loader(ctl, uri, index, lo, length, qd, rate, write_pct, seed).serve()
    except Exception as e:  # the parent fails the bench with it
        ctl.send(("error", f"connection {index}: {e!r}"))


class Loader:
    def __init__(self, ctl, uri, index, lo, length, qd, rate, write_pct, seed):
        self.ctl, self.index, self.qd = ctl, index, qd
        self.writes = write_pct / 100
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.fd = self.h.aio_get_fd()
        self.first, self.blocks = lo // BLOCK, length // BLOCK
        self.rng = random.Random(seed)
        self.interval = 1e9 / rate if rate else 0
        self.tag0 = index << 40
        self.expected = {}  # block -> the tag of its last acknowledged write (else tag0)
        self.busy = set()   # blocks with a request in flight: never two at once
        self.seq = 0
        self.errors, self.mismatches, self.last_error = 0, 0, ""
        self.issued, self.done = array("q"), array("q")
        self.prefill()

    def prefill(self):
        step = MIB // BLOCK
        for b in range(0, self.blocks, step):
            n = min(step, self.blocks - b)
            self.h.pwrite(block_pattern(self.tag0, self.first + b, n), (self.first + b) * BLOCK)
        self.h.flush()

    def serve(self):
        self.ctl.send(("ready",))
        running, next_t = False, 0
        while True:
            if running:
                next_t = self.issue_due(next_t)
                self.wait(next_t)
            if not running or self.ctl.poll():
                cmd = self.ctl.recv()
                if cmd == "stop":
                    same = self.h.aio_get_fd() == self.fd and self.h.aio_is_ready()
                    self.h.shutdown()
                    self.ctl.send(("stopped", same))
                    return
                running = self.command(cmd)
                next_t = time.monotonic_ns()

    def command(self, cmd):
        """run, pause or verify; whether the load runs on."""
        if cmd == "pause":
            self.drain()
            self.ctl.send(("times", self.issued, self.done, self.errors, self.mismatches, self.last_error))
            self.issued, self.done = array("q"), array("q")
        elif cmd == "verify":
            self.ctl.send(("verified", self.verify()))
        return cmd == "run"

    def wait(self, next_t):
        """Until a request completes or the next one is due."""
        if not self.interval:
            self.h.poll(-1)  # QD requests are in flight
            return
        timeout = max(0, int(-(-(next_t - time.monotonic_ns()) // 1000000)))
        if self.h.aio_in_flight() > 0:
            self.h.poll(timeout)
        elif timeout > 0:
            time.sleep(timeout / 1e3)

    def issue_due(self, next_t):
        now = time.monotonic_ns()
        while self.h.aio_in_flight() < self.qd and next_t <= now:
            self.issue()
            if not self.interval:
                continue
            next_t += self.interval
            # After a pause, go on at the rate rather than in a burst.
            next_t = max(next_t, now - 10_000_000)
        return next_t

    def issue(self):
        b = self.rng.randrange(self.blocks)
        while b in self.busy:
            b = self.rng.randrange(self.blocks)
        self.busy.add(b)
        blk = self.first + b
        off = blk * BLOCK
        t = time.monotonic_ns()
        if self.rng.random() < self.writes:
            self.seq += 1
            tag = self.tag0 | self.seq
            buf = nbd.Buffer.from_bytearray(bytearray(block_pattern(tag, blk, 1)))

            def written(err, buf=buf):  # buf must live until then
                self.finished(t, b, err, "write")
                if not err.value:
                    self.expected[b] = tag
                return 1
            self.h.aio_pwrite(buf, off, completion=written)
        else:
            buf = nbd.Buffer(BLOCK)
            want = self.expected.get(b, self.tag0)

            def read(err):
                self.finished(t, b, err, "read")
                if not err.value and not block_is(bytes(buf.to_bytearray()), want, blk):
                    self.mismatches += 1
                    self.last_error = f"block {blk}: not the data of its last write"
                return 1
            self.h.aio_pread(buf, off, completion=read)

    def finished(self, t, b, err, what):
        self.done.append(time.monotonic_ns())
        self.issued.append(t)
        self.busy.discard(b)
        if err.value:
            self.errors += 1
            self.last_error = f"{what}: {os.strerror(err.value)}"

    def drain(self):
        while self.h.aio_in_flight() > 0:
            self.h.poll(-1)

    def verify(self):
        """Blocks of the region that are not their last acknowledged write."""
        bad = 0
        step = MIB // BLOCK
        for b in range(0, self.blocks, step):
            n = min(step, self.blocks - b)
            data = self.h.pread(n * BLOCK, (self.first + b) * BLOCK)
            for i in range(n):
                blk = self.first + b + i
                if not block_is(data[i * BLOCK:(i + 1) * BLOCK], self.expected.get(b + i, self.tag0), blk):
                    bad += 1
        return bad


class Load:
    """The busy connections of one variant."""

    def __init__(self, name, uri, s, seed):
        self.name = name
        ctx = multiprocessing.get_context("spawn")
        self.pipes, self.procs = [], []
        for i in range(s["BUSY"]):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=loader_main, daemon=True,
                            args=(theirs, uri, i, i * s["REGION"], s["REGION"], s["QD"], s["RATE"], s["WRITE_PCT"],
                                  seed + i))
            p.start()
            self.pipes.append(mine)
            self.procs.append(p)
        for p in self.pipes:
            self.answer(p, "ready")

    def answer(self, pipe, kind):
        if not pipe.poll(120):
            raise BenchError(f"{self.name}: a load process did not answer")
        m = pipe.recv()
        if m[0] != kind:
            raise BenchError(f"{self.name}: {m[1] if m[0] == 'error' else m}")
        return m[1:]

    def run(self):
        for p in self.pipes:
            p.send("run")

    def pause(self):
        """Every request since run(): (issued, done) sorted by completion."""
        for p in self.pipes:
            p.send("pause")
        reqs = []
        for p in self.pipes:
            issued, done, errors, mismatches, last = self.answer(p, "times")
            if errors or mismatches:
                raise BenchError(f"{self.name}: {errors} failed request(s), {mismatches} read(s) of wrong data; "
                                 f"last: {last}")
            reqs.extend(zip(done, issued))
        reqs.sort()
        return reqs

    def finish(self):
        for p in self.pipes:
            p.send("verify")
        bad = sum(self.answer(p, "verified")[0] for p in self.pipes)
        if bad:
            raise BenchError(f"{self.name}: {bad} block(s) differ from their last acknowledged write")
        for p in self.pipes:
            p.send("stop")
        for i, p in enumerate(self.pipes):
            if not self.answer(p, "stopped")[0]:
                raise BenchError(f"{self.name}: busy connection {i} is not the connection it started with")
        self.close()

    def close(self):
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join()
        self.procs = []


# ---------------------------------------------------------------- the disks

def write_scattered(h, offsets):
    nbdio.pwrite_pipelined(h, offsets, block=BLOCK)


def prepare_big(d, s, seed):
    """CHECKPOINTS epochs of SEAL_WRITES scattered writes each, then
    LIVE_WRITES in the live epoch, each in a chunk of its own (mostly)."""
    g = s["GRANULARITY"]
    r = d.ctl("create", "big", "--size", str(s["BIG_SIZE"]), "--granularity", str(g))
    if r.returncode != 0:
        raise BenchError(f"rctctl create big: {r.stderr}")
    h = nbd.NBD()
    h.connect_uri(d.uri("big"))
    chunks = h.get_size() // g
    rng = random.Random(seed)

    def offsets(n):
        return sorted(rng.randrange(chunks) * g + rng.randrange(g // BLOCK) * BLOCK for _ in range(n))
    for c in range(s["CHECKPOINTS"]):
        write_scattered(h, offsets(s["SEAL_WRITES"]))
        d.api("POST", "/disks/big/checkpoints", {"name": f"cp{c:04d}"})
    write_scattered(h, offsets(s["LIVE_WRITES"]))
    h.flush()
    h.shutdown()


def big_snapshot(d):
    """What the upgrades must keep of the big disk: its checkpoints, the
    changes between its oldest and newest, and the live epoch's."""
    cps = d.api("GET", "/disks/big/checkpoints")["checkpoints"]
    if not cps:
        return {"checkpoints": []}
    first, last = cps[0]["name"], cps[-1]["name"]

    def extents(q):
        j = d.api("GET", f"/disks/big/changes?{q}&limit=1000000")
        if j.get("next_cursor") is not None:
            raise BenchError("big: more than 1M changed extents")
        return [(e["offset"], e["length"]) for e in j["extents"]]
    return {"checkpoints": [(c["name"], c["token"]) for c in cps],
            "sealed": extents(f"since={first}&until={last}"),
            "live": extents(f"since={last}")}


def check_big(before, after):
    if before["checkpoints"] != after["checkpoints"]:
        raise BenchError(f"big: the checkpoints changed across the upgrades "
                         f"({len(before['checkpoints'])} before, {len(after['checkpoints'])} after)")
    if before["checkpoints"] and before["sealed"] != after["sealed"]:
        raise BenchError("big: the changes between its oldest and newest checkpoint differ after the upgrades")
    if before["checkpoints"]:
        starts = [o for o, _ in after["live"]]
        for o, n in before["live"]:
            i = bisect_left(starts, o + 1) - 1
            if i < 0 or after["live"][i][0] + after["live"][i][1] < o + n:
                raise BenchError(f"big: a live change [{o}, +{n}) before the upgrades is missing after them")


def open_idle(uri, n):
    handles = []
    for _ in range(n):
        h = nbd.NBD()
        h.connect_uri(uri)
        handles.append((h, h.aio_get_fd()))
    return handles


def check_idle(name, handles):
    for i, (h, fd) in enumerate(handles):
        if h.aio_get_fd() != fd or not h.aio_is_ready():
            raise BenchError(f"{name}: extra connection {i} is not the connection it started with")
        h.pread(BLOCK, 0)
        h.shutdown()


# ---------------------------------------------------------------- measuring

def worst_overlap(reqs, done, t0, t1, tail):
    """The longest request in flight at some moment of [t0, t1]: issued
    before t1, completed after t0. reqs are (done, issued) by completion;
    tail bounds any request's latency."""
    worst = 0
    i = bisect_left(done, t0)
    while i < len(reqs) and reqs[i][0] <= t1 + tail:
        d, t = reqs[i]
        if t < t1:
            worst = max(worst, d - t)
        i += 1
    return worst


def run_round(v, n, gap_s):
    """n upgrades of variant v under its load; each one's numbers, and the
    load's rate."""
    v.load.run()
    time.sleep(gap_s)
    ups = []
    for _ in range(n):
        v.prepare_upgrade()
        u = v.d.upgrade(v.connections())
        ups.append(u)
        # Room for a baseline window as long as the call, well clear of it.
        time.sleep(max(gap_s, 2 * (u["t1"] - u["t0"]) / 1e9 + 0.1))
    t_end = time.monotonic_ns()
    reqs = v.load.pause()
    if not reqs:
        raise BenchError(f"{v.name}: the load completed no request")
    done = [r[0] for r in reqs]
    tail = max(r[0] - r[1] for r in reqs)
    for k, u in enumerate(ups):
        u["pause_ms"] = ms(worst_overlap(reqs, done, u["t0"], u["t1"], tail))
        nxt = ups[k + 1]["t0"] if k + 1 < len(ups) else t_end
        mid, half = (u["t1"] + nxt) // 2, (u["t1"] - u["t0"]) // 2
        u["base_ms"] = ms(worst_overlap(reqs, done, mid - half, mid + half, tail))
        u["wall_ms"] = ms(u["t1"] - u["t0"])
    span = (reqs[-1][0] - min(r[1] for r in reqs)) / 1e9
    return ups, len(reqs) / span


class Variant:
    """One variant's rctd, its load, and its other connections. kind is one
    of VARIANTS; name says which build too (KIND, or KIND-peer)."""

    def __init__(self, kind, name, s, w, rctd, rctctl, seed):
        self.kind, self.name, self.s, self.seed = kind, name, s, seed
        self.d = Daemon(name, w, rctd, rctctl)
        self.load = None
        self.extra = []      # (handle, fd): the idle connections, the dirty writer
        self.before = None   # the big disk's checkpoints and changes

    def set_up(self):
        s = self.s
        self.d.start()
        disk = "big" if self.kind == "big" else "d"
        if self.kind == "big":
            log(f"big: {s['CHECKPOINTS']} checkpoints, "
                f"{s['CHECKPOINTS'] * s['SEAL_WRITES'] + s['LIVE_WRITES']} scattered writes")
            prepare_big(self.d, s, self.seed)
        else:
            r = self.d.ctl("create", "d", "--size", str(s["SIZE"]))
            if r.returncode != 0:
                raise BenchError(f"{self.name}: rctctl create d: {r.stderr}")
        self.load = Load(self.name, self.d.uri(disk), s, self.seed)
        if self.kind in ("conns", "dirty"):
            self.extra = open_idle(self.d.uri(disk), s["IDLE"] if self.kind == "conns" else 1)
        if self.kind == "big":
            self.before = big_snapshot(self.d)

    def connections(self):
        return self.s["BUSY"] + len(self.extra)

    def prepare_upgrade(self):
        """dirty: DIRTY bytes written (acknowledged, never flushed) at the end
        of the disk, away from the load's regions, just before the upgrade."""
        if self.kind != "dirty":
            return
        h = self.extra[0][0]
        data = os.urandom(MIB)
        end = self.s["SIZE"]
        for off in range(end - self.s["DIRTY"], end, MIB):
            h.pwrite(data, off)

    def finish(self):
        self.load.finish()
        check_idle(self.name, self.extra)
        if self.before is not None:
            check_big(self.before, big_snapshot(self.d))


# ---------------------------------------------------------------- reporting

def fmt_size(n):
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def describe(v, s):
    busy = f"{s['BUSY']} busy connections"
    if v == "nbd":
        return f"nbd: {fmt_size(s['SIZE'])} disk, {busy}"
    if v == "conns":
        return f"conns: {fmt_size(s['SIZE'])} disk, {busy} + {s['IDLE']} idle"
    if v == "dirty":
        return f"dirty: {fmt_size(s['SIZE'])} disk, {busy}, {fmt_size(s['DIRTY'])} written unflushed before each"
    return (f"big: {fmt_size(s['BIG_SIZE'])} disk, {fmt_size(s['GRANULARITY'])} chunks, "
            f"{s['CHECKPOINTS']} checkpoints x {s['SEAL_WRITES']} writes, {s['LIVE_WRITES']} live, {busy}")


def stat_cell(values):
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    return f"{min(v):.0f} / {statistics.median(v):.0f} / {pct(v, 99):.0f} / {max(v):.0f}"


def report(results, s):
    out = []
    out.append("| variant | upgrades | client pause ms | baseline ms | held_ms | took_ms | rctctl call ms "
               "| freeze ms (log) | of it closing the disks | load IOPS |")
    out.append("|---|---:|---|---|---|---|---|---|---|---:|")
    for name, res in results.items():
        ups = [u for rnd in res["rounds"] for u in rnd]
        col = {k: [u[k] for u in ups]
               for k in ("pause_ms", "base_ms", "held_ms", "took_ms", "wall_ms", "freeze_ms", "close_ms")}
        label = describe(res["kind"], s) + ("" if name == res["kind"] else f" [{name}]")
        out.append(f"| {label} | {len(ups)} | {stat_cell(col['pause_ms'])} | {stat_cell(col['base_ms'])} "
                   f"| {stat_cell(col['held_ms'])} | {stat_cell(col['took_ms'])} | {stat_cell(col['wall_ms'])} "
                   f"| {stat_cell(col['freeze_ms'])} | {stat_cell(col['close_ms'])} "
                   f"| {statistics.median(res['iops']):.0f} |")
    out.append("")
    out.append("Cells: min / median / p99 / max over the upgrades (p99 by nearest rank: with fewer than 100 "
               "upgrades it is the largest). The min is what an upgrade costs when nothing else gets in the way.")
    for name, res in results.items():
        if res["kind"] == "nbd":
            p99 = pct([u["pause_ms"] for rnd in res["rounds"] for u in rnd], 99)
            verdict = "met" if p99 <= 100 else "**missed**"
            out.append(f"Bar: NBD pause ≤ 100 ms at the 99th percentile of upgrades ({name}): {p99:.1f} ms, "
                       f"{verdict}.")
    out.append("")
    out.append("Per upgrade, ms (pause/baseline/held/took):")
    out.append("")
    for name, res in results.items():
        for r, rnd in enumerate(res["rounds"]):
            cells = " ".join(f"{u['pause_ms']:.0f}/{u['base_ms']:.0f}/{u['held_ms']:.0f}/{u['took_ms']:.0f}"
                             for u in rnd)
            out.append(f"- {name} round {r + 1}: {cells}")
    out.append("")
    out.append(f"Load average after the run: {' '.join(open('/proc/loadavg').read().split()[:3])}.")
    return "\n".join(out)


def header(s, root, peer):
    rev = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip() or "?"
    if peer:
        rev += f" (KIND-peer rows: {peer})"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?")
    mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) >> 20
    load = open("/proc/loadavg").read().split()[:3]
    knobs = ", ".join(f"{k}={v}" for k, v in s.items())
    return (f"# Live upgrade benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            f"- machine: {os.cpu_count()} CPUs ({cpu}), {mem} GiB, kernel {os.uname().release}; "
            f"load before: {' '.join(load)}\n"
            f"- rctd {rev}; load: libnbd (Python), 4k random I/O, {s['WRITE_PCT']}% writes, {s['QD']} in flight "
            f"at most and {s['RATE'] or 'unlimited'} requests/s per busy connection; one `rctctl --json upgrade` "
            f"every {s['GAP_MS']} ms or more\n"
            f"- RCT_UPGRADE_*: {knobs}\n")


# ---------------------------------------------------------------- main

def parse(argv):
    """(arguments, the kinds of variant, the settings)."""
    ap = argparse.ArgumentParser(prog="bench/upgrade.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer upgrades, smaller disks (under a minute)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"of {','.join(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--peer", metavar="RCTD", help="also run every variant on this rctd (another build), "
                    "alternating with RCTD; rows named KIND-peer")
    ap.add_argument("--out", help="the results file (default build/bench/upgrade-DATE.md)")
    a = ap.parse_args(argv)
    kinds = [v for v in a.variants.split(",") if v]
    if not kinds or any(v not in VARIANTS for v in kinds):
        ap.error(f"--variants: of {','.join(VARIANTS)}")
    s = settings(a.quick)
    room = s["SIZE"] - (s["DIRTY"] if "dirty" in kinds else 0)
    if s["BUSY"] * s["REGION"] > min(room, s["BIG_SIZE"]):
        ap.error("RCT_UPGRADE_BUSY x RCT_UPGRADE_REGION does not fit the disks")
    return a, kinds, s


def main(argv=None):
    a, kinds, s = parse(argv)
    root = os.environ.get("RCT_SOURCE_ROOT", os.getcwd())
    rctd = os.environ.get("RCTD", os.path.join(root, "build/daemon/rctd"))
    rctctl = os.environ.get("RCTCTL", os.path.join(root, "build/tools/rctctl"))
    for b in (rctd, rctctl) + ((a.peer,) if a.peer else ()):
        if not os.access(b, os.X_OK):
            print(f"upgrade: {b} is not built (ninja -C build daemon/rctd tools/rctctl)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    w = tempfile.mkdtemp(prefix="rct-upgradebench.", dir=os.environ.get("RCT_BENCH_DIR", "/var/tmp"))
    variants = {}
    try:
        become_subreaper()
        # Private copies: a rebuild during the run cannot mix versions, and
        # every upgrade runs the same file (the one rctd was started from).
        builds = {"rctd": rctd, "peer": a.peer} if a.peer else {"rctd": rctd}
        for build, path in builds.items():
            os.makedirs(os.path.join(w, "bin", build))
            builds[build] = shutil.copy2(path, os.path.join(w, "bin", build, "rctd"))
        rctctl = shutil.copy2(rctctl, os.path.join(w, "bin", "rctctl"))
        head = header(s, root, a.peer)
        print(head, flush=True)
        results = run(kinds, builds, s, w, rctctl, variants)
        table = report(results, s)
        print(table)
        out = a.out or os.path.join(root, "build", "bench",
                                    time.strftime("upgrade-%Y%m%dT%H%M%SZ.md", time.gmtime()))
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(head + "\n" + table + "\n")
        print(f"\nresults written to {out}")
        return 0
    except BenchError as e:
        print(f"upgrade: FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        for v in variants.values():
            if v.load:
                v.load.close()
            v.d.stop()
        shutil.rmtree(w, ignore_errors=True)


STARTED = time.monotonic()


def log(msg):
    print(f"[upgrade {time.monotonic() - STARTED:5.0f}s] {msg}", file=sys.stderr, flush=True)


def run(kinds, builds, s, w, rctctl, variants):
    """Every kind of variant on every build (name: path of its rctd)."""
    for i, kind in enumerate(kinds):
        for build, rctd in builds.items():
            name = kind if build == "rctd" else f"{kind}-{build}"
            variants[name] = Variant(kind, name, s, w, rctd, rctctl, 1000 * (i + 1))
            variants[name].set_up()
            log(f"{name}: set up")
    names = list(variants)
    results = {name: {"kind": variants[name].kind, "rounds": [], "iops": []} for name in names}
    per_round = [s["COUNT"] // s["ROUNDS"] + (r < s["COUNT"] % s["ROUNDS"]) for r in range(s["ROUNDS"])]
    for r, n in enumerate(per_round):
        for name in (names if r % 2 == 0 else names[::-1]):
            if n == 0:
                continue
            ups, iops = run_round(variants[name], n, s["GAP_MS"] / 1e3)
            results[name]["rounds"].append(ups)
            results[name]["iops"].append(iops)
            log(f"round {r + 1} {name}: pause " + " ".join(f"{u['pause_ms']:.0f}" for u in ups)
                + " ms; held " + " ".join(f"{u['held_ms']:.0f}" for u in ups) + " ms")
    for name in names:
        variants[name].finish()
    return results


if __name__ == "__main__":
    sys.exit(main())
