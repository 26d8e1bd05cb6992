"""Helpers of tests/interop/mgmt_races.sh: a reconnecting NBD writer, every
pair of management calls run at once through rctctl, and the checks of the
state dir after a restart."""
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import nbd

from rcttest import cli, control
from rcttest.patterns import BLOCK, block_is, block_pattern

MiB = 1 << 20
# Exit codes a racing call may end with: ok, invalid_argument (a shrink of a
# disk with snapshots, a restore of a resized disk), not_found (a snapshot
# or disk another call deleted), conflict (exists, busy). Anything else (1
# other error, 5 daemon unreachable, a signal) is a failure.
CLEAN_RCS = {0, 2, 3, 4}
BASE_SIZE = 32 * MiB
RECONNECT_S = 0.3


def prefill(argv):
    """prefill URI LO HI: [LO, HI) as tag-1 blocks, flushed."""
    uri, lo, hi = argv[1], int(argv[2]), int(argv[3])
    h = nbd.NBD()
    h.connect_uri(uri)
    for off in range(lo, hi, MiB):
        h.pwrite(block_pattern(1, off // BLOCK, MiB // BLOCK), off)
    h.flush()
    h.shutdown()


def verify_prefix(argv):
    """verify-prefix URI LO HI: [LO, HI) still holds the tag-1 blocks."""
    uri, lo, hi = argv[1], int(argv[2]), int(argv[3])
    h = nbd.NBD()
    h.connect_uri(uri)
    for off in range(lo, hi, MiB):
        data = h.pread(MiB, off)
        for i in range(MiB // BLOCK):
            b = off // BLOCK + i
            if not block_is(data[i * BLOCK:(i + 1) * BLOCK], 1, b):
                sys.exit(f"block {b} (offset {b * BLOCK}) of {uri} lost its flushed content")
    h.shutdown()
    print(f"[{lo}, {hi}) intact")


class Writer:
    """Keeps `depth` random writes in flight in [lo, hi) of the export,
    reconnecting whenever the daemon cuts it off or refuses it (restore,
    delete). Writes past a shrunk end fail; that is expected."""

    def __init__(self, uri, lo, hi, depth=8):
        self.uri, self.lo, self.hi, self.depth = uri, lo, hi, depth
        self.h = None
        self.cookies = []
        self.stats = {"ok": 0, "failed": 0, "flushes": 0, "connects": 0, "refused": 0}
        self.rng = random.Random(os.getpid())
        self.connected_at = 0

    def connect(self):
        try:
            h = nbd.NBD()
            h.connect_uri(self.uri)
        except nbd.Error:
            self.stats["refused"] += 1
            time.sleep(0.05)
            return
        self.h, self.cookies = h, []
        self.stats["connects"] += 1
        self.connected_at = time.monotonic()

    def drop(self):
        try:
            self.h.close()
        except (nbd.Error, AttributeError):
            pass
        self.h = None

    def step(self):
        # A client learns the size when it connects; libnbd refuses writes
        # past it before they reach the daemon.
        hi = min(self.hi, self.h.get_size())
        while len(self.cookies) < self.depth:
            n = self.rng.choice((1, 4, 16, 64))
            off = self.rng.randrange(self.lo // BLOCK, hi // BLOCK - n) * BLOCK
            buf = nbd.Buffer.from_bytearray(bytearray(block_pattern(2, off // BLOCK, n)))
            self.cookies.append(self.h.aio_pwrite(buf, off))
        self.h.poll(100)
        left = []
        for c in self.cookies:
            try:
                if not self.h.aio_command_completed(c):
                    left.append(c)
                    continue
                self.stats["ok"] += 1
            except nbd.Error:
                self.stats["failed"] += 1
        self.cookies = left
        if self.rng.random() < 0.02:
            self.h.flush()
            self.stats["flushes"] += 1

    def run(self, stop_file):
        while not os.path.exists(stop_file):
            if self.h is None:
                self.connect()
                continue
            try:
                if self.h.aio_is_dead() or self.h.aio_is_closed():
                    raise nbd.Error("connection gone", 0)
                self.step()
                if time.monotonic() - self.connected_at > RECONNECT_S and not self.cookies:
                    self.drop()  # to learn a new size and write up to it
            except nbd.Error:
                self.drop()


def writer(argv):
    """writer URI LO HI STOP: run a Writer until the file STOP exists, then
    print its counts; fails if no write succeeded."""
    uri, lo, hi, stop = argv[1], int(argv[2]), int(argv[3]), argv[4]
    w = Writer(uri, lo, hi)
    w.run(stop)
    print(f"   writer on {uri.split('?')[0]}: {w.stats}", flush=True)
    if w.stats["ok"] == 0:
        sys.exit("no write succeeded")


class Calls:
    """The management calls on disk d (written to and snapshotted) and on v
    (deleted and created again), each a list of rctctl command lines."""

    def __init__(self, rctctl, state):
        self.rctctl, self.state, self.n = rctctl, state, 0
        # The snapshot restore, clone and snapshot-delete use. A deleted
        # snapshot stays a checkpoint, which keeps its name taken.
        self.base = None

    def argv(self, *args):
        return [self.rctctl, "--state-dir", self.state] + list(args)

    def uniq(self):
        self.n += 1
        return self.n

    def commands(self, op):
        k = self.uniq()
        return {
            "grow": [["resize", "d", "--size", str(BASE_SIZE + (k % 4 + 1) * 4 * MiB)]],
            "shrink": [["resize", "d", "--size", str(BASE_SIZE // 2 + (k % 4) * 2 * MiB), "--force"]],
            "snapshot": [["snapshot", "d", "--name", f"s{k}"]],
            "snapshot-delete": [["snapshot-delete", "d", self.base]],
            "clone": [["clone", f"d@{self.base}", f"c{k}"]],
            "restore": [["restore", "d", "--from", self.base, "--force"]],
            "recreate": [["delete", "v", "--force"], ["create", "v", "--size", str((16 + k % 3 * 8) * MiB)]],
            "checkpoint": [["checkpoint", "d", "--name", f"cp{k}"]],
        }[op]

    def run(self, args):
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=60)

    def sequence(self, op, results):
        """Runs op's commands one after the other (a thread's body); appends
        (op, command, exit code, stderr) for each to results."""
        for c in self.commands(op):
            r = self.run(c)
            results.append((op, " ".join(c), r.returncode, r.stderr.strip()))


def snapshots_of(calls):
    r = calls.run(["--json", "snapshots", "d"])
    return [s["name"] for s in json.loads(r.stdout)["snapshots"]] if r.returncode == 0 else []


def prepare(calls, pair):
    """Puts d where both calls of the pair can do something: its base size,
    and a snapshot calls.base when a call needs it, no snapshots when a shrink must
    be able to succeed. Clones are deleted again."""
    if list_disks(calls)[0]["d"]["size"] != BASE_SIZE:
        for s in snapshots_of(calls):
            calls.run(["snapshot-delete", "d", s, "--force"])
        r = calls.run(["resize", "d", "--size", str(BASE_SIZE), "--force"])
        if r.returncode != 0:
            sys.exit(f"resetting d's size failed: {r.stderr}")
    needs_base = {"snapshot-delete", "clone", "restore"} & set(pair)
    snaps = snapshots_of(calls)
    for s in snaps:
        if s != calls.base or not needs_base:
            calls.run(["snapshot-delete", "d", s, "--force"])
    if needs_base and calls.base not in snaps:
        calls.base = f"base{calls.uniq()}"
        r = calls.run(["snapshot", "d", "--name", calls.base])
        if r.returncode != 0:
            sys.exit(f"cannot cut snapshot {calls.base}: {r.stderr}")
    for name in list_disks(calls)[0]:
        if name.startswith("c"):
            calls.run(["delete", name, "--force"])


def list_disks(calls):
    r = calls.run(["--json", "list"])
    if r.returncode != 0:
        sys.exit(f"rctctl list failed ({r.returncode}): {r.stderr}")
    doc = json.loads(r.stdout)
    return {d["name"]: d for d in doc["disks"]}, {q["name"]: q["reason"] for q in doc["quarantined"]}


OPS = ["grow", "shrink", "snapshot", "snapshot-delete", "clone", "restore", "recreate", "checkpoint"]


def race(calls, pair):
    """Both calls of the pair at once; returns what each command ended with."""
    results = []
    threads = [threading.Thread(target=calls.sequence, args=(op, results)) for op in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pairs(argv):
    """pairs RCTCTL STATE: every pair of OPS (each op with itself too), both
    calls at once; each must succeed or be refused with a clean exit code
    and a message, and the daemon must answer afterwards."""
    calls = Calls(argv[1], argv[2])
    bad = []
    counts = {}
    refusals = {}
    for pair in itertools.combinations_with_replacement(OPS, 2):
        prepare(calls, pair)
        for op, cmd, rc, err in race(calls, pair):
            counts[rc] = counts.get(rc, 0) + 1
            if rc not in CLEAN_RCS or (rc != 0 and not err.startswith("rctctl: ")):
                bad.append(f"{' + '.join(pair)}: '{cmd}' exited {rc}: {err}")
            elif rc != 0:
                refusals.setdefault(op, []).append(err)
        disks, quarantined = list_disks(calls)
        if quarantined or "d" not in disks:
            bad.append(f"{' + '.join(pair)}: disks {sorted(disks)}, quarantined {quarantined}")
        if "v" not in disks:
            calls.run(["create", "v", "--size", str(16 * MiB)])
    for op, errs in sorted(refusals.items()):
        print(f"   {op}: {len(errs)} refused, e.g. {errs[0]}")
    print(f"   exit codes: {dict(sorted(counts.items()))}")
    if bad:
        sys.exit("unclean outcomes:\n" + "\n".join(bad))


def sizes_agree(state, name):
    """disk.json's size (no resize in progress) equals data.raw's."""
    meta = json.load(open(os.path.join(state, "disks", name, "disk.json")))
    raw = os.path.getsize(os.path.join(state, "disks", name, "data.raw"))
    return "resize_to" not in meta and meta["size"] == raw, f"disk.json {meta}, data.raw {raw} bytes"


def shrinks(argv):
    """shrinks RCTCTL STATE N PAUSE: N rounds of growing d to 48 MiB and
    shrinking it to 16 MiB (--force), PAUSE seconds after each, while writers
    write up to its end; after each shrink, data.raw must stay at the size
    disk.json says (a write admitted under the old size must not extend it
    again)."""
    calls, n, pause = Calls(argv[1], argv[2]), int(argv[3]), float(argv[4])
    for s in snapshots_of(calls):
        calls.run(["snapshot-delete", "d", s, "--force"])
    for i in range(n):
        for size, extra in ((48 * MiB, []), (16 * MiB, ["--force"])):
            r = calls.run(["resize", "d", "--size", str(size)] + extra)
            if r.returncode != 0:
                sys.exit(f"round {i}: resize to {size} exited {r.returncode}: {r.stderr}")
            time.sleep(pause)
        ok, what = sizes_agree(calls.state, "d")
        if not ok:
            sys.exit(f"round {i}: after the shrink to 16 MiB, {what}")
    print(f"   {n} shrinks under writes up to the end: data.raw always as disk.json says")


def check_state(argv):
    """check-state SOCK STATE: every disk directory is served, none is
    quarantined, and each disk's size is what its disk.json and its data
    file say, with no resize left in progress."""
    sock, state = argv[1], argv[2]
    status, body = control.call(sock, "GET", "/v1/disks")
    if status != 200:
        sys.exit(f"GET /v1/disks: {status}")
    doc = json.loads(body)
    if doc["quarantined"]:
        sys.exit(f"quarantined after the restart: {doc['quarantined']}")
    served = {d["name"]: d for d in doc["disks"]}
    on_disk = sorted(n for n in os.listdir(os.path.join(state, "disks")) if not n.startswith("."))
    if sorted(served) != on_disk:
        sys.exit(f"served {sorted(served)}, but the state dir has {on_disk}")
    for name, d in served.items():
        ok, what = sizes_agree(state, name)
        meta = json.load(open(os.path.join(state, "disks", name, "disk.json")))
        if not ok or d["size"] != meta["size"]:
            sys.exit(f"disk {name}: served {d['size']}, {what}")
    print(f"{len(served)} disks served, sizes match disk.json and data.raw")


COMMANDS = {
    "prefill": prefill,
    "verify-prefix": verify_prefix,
    "writer": writer,
    "pairs": pairs,
    "shrinks": shrinks,
    "check-state": check_state,
}

if __name__ == "__main__":
    cli.run(COMMANDS)
