"""Helpers of tests/interop/upgrade.sh and upgrade_rollback.sh: live
upgrades under load, with every client checked for errors and reconnects,
and the tracking of a disk checked exactly against a model.

drive: while the shell's fio and nbdcopy run, keep two libnbd clients and
one qemu-io session busy on disk T, run COUNT upgrades alternating the
given binaries, and then check:
  - every upgrade exited 0, the daemon's pid changed each time, and every
    upgrade moved at least the connections this module holds;
  - the libnbd handles never reconnected (libnbd does not; a dropped
    connection fails the next command) and read back every block they
    wrote; a handle negotiated qemu:dirty-bitmap:c1 before the first
    upgrade and its block status still answers, exactly, after the last;
  - the qemu-io session (no reconnect-delay: a drop fails it) wrote and
    read back a pattern after every upgrade;
  - `rctctl changes T --since c1` lists exactly the chunks written since
    c1 (a clean hand-off: no crash-recovery excess);
  - the snapshot s0, opened before the first upgrade, still reads the
    content T had when it was cut.
"""
import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import nbd

from rcttest import cli, control, rawnbd
from rcttest.patterns import BLOCK, block_pattern
from rcttest.rctctl import run as rctctl_run

MiB = 1 << 20
G = 64 * 1024  # the disk's tracking granularity (the default)
MODEL_LO, MODEL_HI = 0, 32 * MiB       # the libnbd writer's range of T
QEMU_LO, QEMU_HI = 32 * MiB, 48 * MiB  # the qemu-io session's range of T


def prefill(argv):
    """prefill URI SIZE: the whole disk as tag-1 blocks, flushed."""
    uri, size = argv[1], int(argv[2])
    h = nbd.NBD()
    h.connect_uri(uri)
    for off in range(0, size, MiB):
        h.pwrite(block_pattern(1, off // BLOCK, MiB // BLOCK), off)
    h.flush()
    h.shutdown()


def daemon_pid(state):
    status, body = control.call(os.path.join(state, "control.sock"), "GET", "/v1/version")
    if status != 200:
        raise RuntimeError("GET /v1/version answered %d" % status)
    return json.loads(body)["pid"]


class Problems:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, msg):
        with self.lock:
            self.items.append(msg)
        print("   PROBLEM: " + msg, flush=True)


class ModelWriter(threading.Thread):
    """Writes tag-2 blocks at random offsets of [MODEL_LO, MODEL_HI) on one
    libnbd handle, reading each back, until stopped; records the chunks."""

    def __init__(self, uri, problems, seed):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.problems = problems
        self.chunks = set()
        self.stop = threading.Event()
        self.ops = 0
        self.seed = seed

    def run(self):
        import random
        rng = random.Random(self.seed)
        while not self.stop.is_set():
            blk = rng.randrange(MODEL_LO // BLOCK, MODEL_HI // BLOCK)
            n = rng.choice((1, 2, 16))
            n = min(n, MODEL_HI // BLOCK - blk)
            data = block_pattern(2, blk, n)
            try:
                self.h.pwrite(data, blk * BLOCK)
                if self.h.pread(len(data), blk * BLOCK) != data:
                    self.problems.add("block %d read back wrong" % blk)
                if rng.random() < 0.05:
                    self.h.flush()
            except nbd.Error as e:
                self.problems.add("libnbd writer: %s (a dropped or failed connection)" % e)
                return
            for b in range(blk, blk + n):
                self.chunks.add(b * BLOCK // G)
            self.ops += 1


class QemuSession:
    """One qemu-io process on the export for the whole test, fed commands
    on stdin. qemu's NBD client is started without reconnect-delay, so a
    dropped connection fails every command after it."""

    def __init__(self, target, image_opts=False):
        args = ["qemu-io", "--image-opts", target] if image_opts else ["qemu-io", "-f", "raw", target]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.chunks = set()

    def command(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError("qemu-io ended: " + "".join(out))
            line = line.replace("qemu-io> ", "")
            out.append(line)
            if "ops;" in line or "failed" in line.lower() or "error" in line.lower():
                break
        text = "".join(out)
        if "ops;" not in text:
            raise RuntimeError("qemu-io %r: %s" % (cmd, text.strip()))
        return text

    def round(self, i):
        """A write and a read-back of pattern i at its own 64 KiB."""
        off = QEMU_LO + (i * 64 * 1024) % (QEMU_HI - QEMU_LO)
        pat = 0x10 + i % 0xe0
        self.command("write -P %d %d 64k" % (pat, off))
        self.command("read -P %d %d 64k" % (pat, off))
        self.chunks.update(range(off // G, (off + 64 * 1024 - 1) // G + 1))

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        return self.p.wait(timeout=30)


def bitmap_chunks(h, size):
    """The chunks qemu:dirty-bitmap:c1 marks dirty, through h."""
    found = set()
    off = 0
    while off < size:
        entries = {}

        def cb(metacontext, offset, ents, err):
            entries[metacontext] = list(ents)
            return 0
        h.block_status(min(size - off, 512 * MiB), off, cb)
        ents = entries.get("qemu:dirty-bitmap:c1")
        if not ents:
            raise RuntimeError("no qemu:dirty-bitmap:c1 extents at %d" % off)
        for i in range(0, len(ents), 2):
            length, flags = ents[i], ents[i + 1]
            if flags & 1:
                found.update(range(off // G, (off + length - 1) // G + 1))
            off += length
    return found


def changes_chunks(rctctl, state, disk, since, problems):
    p = rctctl_run(rctctl, state, "--json", "changes", disk, "--since", since, "--limit", "1000000")
    if p.returncode != 0:
        problems.add("rctctl changes --since %s exited %d: %s" % (since, p.returncode, p.stderr.strip()))
        return set()
    found = set()
    for e in json.loads(p.stdout)["extents"]:
        found.update(range(e["offset"] // G, (e["offset"] + e["length"] - 1) // G + 1))
    return found


def upgrade(rctctl, state, binary, problems, expect_rc=0, timeout="20s"):
    args = ["--json", "upgrade", "--ready-timeout", timeout]
    if binary:
        args += ["--binary", binary]
    try:
        p = subprocess.run([rctctl, "--state-dir", state] + args, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        problems.add("rctctl upgrade --binary %s hung for 60 s" % binary)
        return None
    if p.returncode != expect_rc:
        problems.add("rctctl upgrade --binary %s exited %d, not %d: %s %s" % (
            binary, p.returncode, expect_rc, p.stdout.strip(), p.stderr.strip()))
        return None
    return json.loads(p.stdout) if p.stdout.strip() else {}


def drive(argv):
    ap = argparse.ArgumentParser(prog="drive")
    ap.add_argument("--state", required=True)
    ap.add_argument("--rctctl", required=True)
    ap.add_argument("--binaries", required=True, help="comma-separated rctd copies to alternate")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--uri", required=True, help="disk T")
    ap.add_argument("--snap-uri", required=True, help="T@s0")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--rollbacks", default="", help="comma-separated failing binaries to try between upgrades")
    ap.add_argument("--rollback-every", type=int, default=5)
    ap.add_argument("--rollback-timeout", default="3s")
    args = ap.parse_args(argv[1:])
    binaries = args.binaries.split(",")
    failing = [b for b in args.rollbacks.split(",") if b]
    problems = Problems()

    # Opened before the first upgrade: the snapshot, the bitmap context.
    snap = nbd.NBD()
    snap.connect_uri(args.snap_uri)
    bm = nbd.NBD()
    bm.add_meta_context("qemu:dirty-bitmap:c1")
    bm.connect_uri(args.uri)
    if not bm.can_meta_context("qemu:dirty-bitmap:c1"):
        sys.exit("qemu:dirty-bitmap:c1 was not negotiated")
    writer = ModelWriter(args.uri, problems, seed=7)
    qemu = QemuSession(args.uri)
    qemu.round(0)
    writer.start()
    held = []
    pid = daemon_pid(args.state)
    for i in range(args.count):
        time.sleep(0.3)
        r = upgrade(args.rctctl, args.state, binaries[i % len(binaries)], problems)
        if r is not None:
            if r["old"]["pid"] != pid or r["new"]["pid"] == pid:
                problems.add("upgrade %d: pids %s -> %s, expected %d -> another" % (
                    i, r["old"]["pid"], r["new"]["pid"], pid))
            pid = r["new"]["pid"]
            if r["connections"] < 4:
                problems.add("upgrade %d moved %d connections; this module alone holds 4" % (i, r["connections"]))
            held.append(r["held_ms"])
        if failing and i % args.rollback_every == args.rollback_every - 1:
            bad = failing[(i // args.rollback_every) % len(failing)]
            before = daemon_pid(args.state)
            upgrade(args.rctctl, args.state, bad, problems, expect_rc=9, timeout=args.rollback_timeout)
            after = daemon_pid(args.state)
            if after != before:
                problems.add("after a failed upgrade with %s the pid changed: %d -> %d" % (bad, before, after))
            print("   failed upgrade with %s: pid %d serves on" % (os.path.basename(bad), after), flush=True)
        try:
            qemu.round(i + 1)
        except RuntimeError as e:
            problems.add("qemu-io after upgrade %d: %s" % (i, e))
            break
        if not writer.is_alive():
            break
    writer.stop.set()
    writer.join(timeout=30)
    print("   %d upgrades; I/O held (ms): %s" % (len(held), " ".join("%.1f" % h for h in held if h is not None)))
    print("   libnbd writer: %d writes read back; qemu-io: %d rounds" % (writer.ops, args.count + 1))

    writer.h.flush()
    model = writer.chunks | qemu.chunks
    got = changes_chunks(args.rctctl, args.state, "t", "c1", problems)
    if got != model:
        problems.add("changes --since c1 is not exact: %d chunks missing (e.g. %s), %d extra (e.g. %s)" % (
            len(model - got), sorted(model - got)[:5], len(got - model), sorted(got - model)[:5]))
    else:
        print("   changes --since c1: exactly the %d chunks written" % len(model))
    try:
        bits = bitmap_chunks(bm, args.size)
        if bits != model:
            problems.add("qemu:dirty-bitmap:c1 on the connection opened before the upgrades is not exact: "
                         "%d missing, %d extra" % (len(model - bits), len(bits - model)))
        else:
            print("   qemu:dirty-bitmap:c1 (negotiated before the first upgrade): exact")
    except (nbd.Error, RuntimeError) as e:
        problems.add("block status on the bitmap connection: %s" % e)
    for off in range(0, args.size, 8 * MiB):
        if snap.pread(8 * MiB, off) != block_pattern(1, off // BLOCK, 8 * MiB // BLOCK):
            problems.add("snapshot s0 no longer reads what T held when it was cut (at %d)" % off)
            break
    else:
        print("   snapshot s0 (opened before the first upgrade) still reads the content it was cut with")
    rc = qemu.close()
    if rc != 0:
        problems.add("qemu-io exited %d" % rc)
    for h in (snap, bm, writer.h):
        h.shutdown()
    if problems.items:
        sys.exit("%d problem(s)" % len(problems.items))


def midway(argv):
    """midway STATE RCTCTL BINARY DISK: connections caught by an upgrade in
    the middle of something move with exactly the bytes they had sent:
      a. greeting read, client flags not yet sent;
      b. structured replies negotiated, half an option header sent;
      c. transmission, a WRITE's header and half its payload sent, and a
         READ header split in two;
      d. a handshake with an option far longer than rctd takes, mid-drain.
    Each then finishes its business on the new daemon with the same socket.
    First, one client is cut off by the handshake deadline (rctd runs with
    --handshake-timeout 2): a connection closing that way must not hold up
    the next upgrade (it once stayed half-closed and hung the freeze)."""
    state, rctctl, binary, disk = argv[1:5]
    sock = os.path.join(state, "nbd.sock")
    problems = Problems()

    e = rawnbd.conn(sock)
    rawnbd.greet(e)
    if not rawnbd.closed_within(e, 5):
        sys.exit("a client idle in the handshake was not cut off by --handshake-timeout 2")
    e.close()

    def finish_go(s):
        """The replies to a GO already sent; the export size, or None."""
        size = None
        while True:
            magic, opt, typ, ln = struct.unpack(">QIII", rawnbd.recvn(s, 20))
            body = rawnbd.recvn(s, ln)
            if typ & 0x80000000:
                problems.add("GO refused after the upgrade: %r" % body)
                return None
            if typ == 3 and struct.unpack(">H", body[:2])[0] == 0:
                size = struct.unpack(">Q", body[2:10])[0]
            if typ == 1:
                return size

    def up():
        if upgrade(rctctl, state, binary, problems) is None:
            sys.exit("upgrade failed")

    a = rawnbd.conn(sock)
    hflags = rawnbd.greet(a)
    b = rawnbd.conn(sock)
    rawnbd.greet(b)
    b.sendall(struct.pack(">I", 1 | (hflags & 2)))
    b.sendall(b"IHAVEOPT" + struct.pack(">II", 8, 0))  # STRUCTURED_REPLY
    magic, opt, typ, ln = struct.unpack(">QIII", rawnbd.recvn(b, 20))
    if (opt, typ, ln) != (8, 1, 0):
        sys.exit("structured reply not acked: %r" % ((opt, typ, ln),))
    data = struct.pack(">I", len(disk)) + disk.encode() + struct.pack(">H", 0)
    go_opt = b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data
    b.sendall(go_opt[:10])
    c = rawnbd.conn(sock)
    rawnbd.go(c, disk)
    payload = bytes(range(256)) * 16 * 16  # 64 KiB
    c.sendall(struct.pack(">IHHQQI", rawnbd.REQ_MAGIC, 0, rawnbd.CMD_WRITE, 77, 1 << 20, len(payload)))
    c.sendall(payload[:30000])
    d = rawnbd.conn(sock)
    rawnbd.greet(d)
    d.sendall(struct.pack(">I", 1 | (hflags & 2)))
    d.sendall(b"IHAVEOPT" + struct.pack(">II", 3, 200000))  # LIST with 200000 bytes: too big
    d.sendall(b"x" * 70000)
    time.sleep(0.2)  # let rctd take in what was sent
    up()

    c.sendall(payload[30000:])
    err, cookie = rawnbd.simple_reply(c)
    if (err, cookie) != (0, 77):
        problems.add("c: the WRITE split by the upgrade was answered error %d cookie %d" % (err, cookie))
    req = struct.pack(">IHHQQI", rawnbd.REQ_MAGIC, 0, rawnbd.CMD_READ, 78, 1 << 20, len(payload))
    c.sendall(req[:13])
    time.sleep(0.1)
    up()
    c.sendall(req[13:])
    err, cookie = rawnbd.simple_reply(c)
    if (err, cookie) != (0, 78) or rawnbd.recvn(c, len(payload)) != payload:
        problems.add("c: the READ after the split WRITE did not return its payload")
    else:
        print("   c: a WRITE and a READ header split by upgrades: answered, data intact", flush=True)

    a.sendall(struct.pack(">I", 1 | (hflags & 2)) + go_opt)
    if finish_go(a) is None:
        problems.add("a: GO after the upgrade gave no export size")
    rawnbd.normal_read(a, 1)
    print("   a: greeted before the upgrade, negotiated and served after it")

    b.sendall(go_opt[10:])
    size = finish_go(b)
    # Structured replies were negotiated before the upgrade: a READ must
    # come back as a structured reply chunk.
    rawnbd.request(b, rawnbd.CMD_READ, 0, 512, 5)
    magic = struct.unpack(">I", rawnbd.recvn(b, 4))[0]
    if size is None or magic != 0x668E33EF:
        problems.add("b: after the upgrade, size %s and reply magic %#x (structured replies lost?)" % (size, magic))
    else:
        print("   b: half an option header across the upgrade; structured replies kept")

    d.sendall(b"x" * (200000 - 70000))
    magic, opt, typ, ln = struct.unpack(">QIII", rawnbd.recvn(d, 20))
    if (opt, typ) != (3, 0x80000009):
        problems.add("d: an oversized option drained across the upgrade got %#x, not ERR_TOO_BIG" % typ)
    else:
        print("   d: an oversized option drained across the upgrade, then refused ERR_TOO_BIG")
    for x in (a, b, c, d):
        x.close()

    # f. A client that sent READs, half-closed and reads nothing: its
    # reader has ended, its replies cannot leave. It must not hold the
    # freeze (it is cut off at twice the grace; it once hung it for good).
    f = rawnbd.conn(sock)
    rawnbd.go(f, disk)
    f.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for i in range(64):
        rawnbd.request(f, rawnbd.CMD_READ, 0, 1 << 20, 100 + i)
    f.shutdown(socket.SHUT_WR)
    # g. A client of a snapshot deleted under it (--force): its export
    # cannot be taken over; that connection closes, the upgrade goes on.
    p = rctctl_run(rctctl, state, "snapshot", disk, "--name", "gone")
    if p.returncode != 0:
        sys.exit("snapshot: " + p.stderr)
    g = rawnbd.conn(sock)
    rawnbd.go(g, disk + "@gone")
    p = rctctl_run(rctctl, state, "snapshot-delete", disk, "gone", "--force")
    if p.returncode != 0:
        sys.exit("snapshot-delete --force: " + p.stderr)
    time.sleep(0.3)
    t0 = time.monotonic()
    up()
    print("   f, g: a client that reads nothing and one whose snapshot is gone: the upgrade took %.1f s" % (
        time.monotonic() - t0))
    f.close()
    g.close()
    if problems.items:
        sys.exit("%d problem(s)" % len(problems.items))


if __name__ == "__main__":
    cli.run({"prefill": prefill, "drive": drive, "midway": midway})
