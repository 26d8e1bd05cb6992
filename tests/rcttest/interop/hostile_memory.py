"""Hostile clients against a live rctd: memory and handshake work (issue 14).

  flood SOCK DISK PID BUDGET    - raw clients send 32 MiB READs and never read
                                  the replies while a libnbd client does
                                  verified I/O; rctd's RSS must stay within
                                  BUDGET + a fixed base
  spent SOCK DISK               - (one worker, 64M budget, 32M shares) two
                                  clients holding their shares in unread
                                  replies spend the budget: a third client's
                                  READ waits, and is served once one goes
  bursts SOCK DISK PID BOUND    - bursts of large reads that complete; RSS must
                                  come back within BOUND of where it started
  metaflood SOCK DISK CTL N     - N checkpoints; two raw clients flood
                                  LIST_META_CONTEXT while a libnbd client
                                  reads (its latency before/during is printed)
  metacap SOCK DISK N           - (after metaflood made N checkpoints)
                                  duplicate queries give one reply per context;
                                  too many queries get NBD_REP_ERR_TOO_BIG
  oversized SOCK DISK           - a WRITE over 32 MiB is drained and answered
                                  EINVAL; the connection carries on

Sizes are bytes. Timings are printed, never asserted.
"""
import os
import random
import socket
import struct
import threading
import time

import nbd

from rcttest import cli, control, rawnbd

MiB = 1 << 20
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META = 8, 9, 10
REP_ACK, REP_META_CONTEXT, REP_ERR_TOO_BIG = 1, 4, 0x80000009
NBD_EINVAL = 22


def rss(pid):
    """rctd's resident set in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler(threading.Thread):
    """Samples rss(pid) every 20 ms; .peak is the largest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, rss(pid), threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.join()
        return self.peak


def uri(sock, disk):
    return f"nbd+unix:///{disk}?socket={sock}"


def good_client(sock, disk, seconds, region, size=256 * 1024):
    """Writes and reads back self-describing blocks in [region, region+32M)
    for seconds; returns the ops done and their latencies. Asserts every
    read-back."""
    h = nbd.NBD()
    h.connect_uri(uri(sock, disk))
    rnd = random.Random(region)
    lat, n, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        off = region + rnd.randrange(0, 32 * MiB // size) * size
        data = struct.pack("<QQ", n, off) * (size // 16)
        t = time.monotonic()
        h.pwrite(data, off)
        got = h.pread(size, off)
        lat.append(time.monotonic() - t)
        assert got == data, f"good client read back wrong data at {off} (op {n})"
        n += 1
    h.shutdown()
    return n, lat


def pct(lat, p):
    s = sorted(lat)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


def hostile_reads(sock, disk, count, length=32 * MiB):
    """A raw connection that sends count READs of length and never reads."""
    s = rawnbd.conn(sock)
    rawnbd.go(s, disk)
    for i in range(count):
        rawnbd.request(s, rawnbd.CMD_READ, 0, length, 0x1000 + i)
    return s


def flood(argv):
    sock, disk, pid, budget = argv[1], argv[2], int(argv[3]), int(argv[4])
    base = rss(pid)
    hostile = [hostile_reads(sock, disk, 8) for _ in range(3)]
    time.sleep(1.5)  # let everything rctd will read be read and served
    sampler = RssSampler(pid)
    sampler.start()
    n, lat = good_client(sock, disk, 5, 64 * MiB)
    peak = sampler.finish()
    for s in hostile:
        s.close()
    # Base: what rctd held before, plus the pools' idle buffers (half the
    # budget at most) and a generous margin for everything else.
    bound = base + budget + budget // 2 + 64 * MiB
    print(f"rss before {base / MiB:.0f} MiB, peak under 3 clients x 8 unread 32 MiB reads "
          f"{peak / MiB:.0f} MiB (bound {bound / MiB:.0f} MiB)")
    print(f"good client: {n} verified 256K write+read pairs, p99 {pct(lat, 0.99):.1f} ms, "
          f"max {max(lat) * 1000:.1f} ms")
    assert n > 0, "the good client made no progress"
    assert peak < bound, f"rss {peak} over budget {budget} + base {bound - budget}"
    print("ok rss stays within budget + base while replies go unread; the good client carries on")


def _done_within(h, cookie, seconds):
    """Did command cookie complete within seconds? (True retires it.)"""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if h.aio_command_completed(cookie):
            return True
        h.poll(100)
    return False


def spent(argv):
    sock, disk = argv[1], argv[2]
    h = nbd.NBD()
    h.connect_uri(uri(sock, disk))
    h.pwrite(b"\x5a" * 4096, 40 * MiB)
    hostile = [hostile_reads(sock, disk, 4) for _ in range(2)]
    time.sleep(1)
    buf = nbd.Buffer(MiB)
    cookie = h.aio_pread(buf, 40 * MiB)
    # Nothing can give the budget back while both hold their shares; the
    # wait outlasts the script's --idle-timeout 3.
    assert not _done_within(h, cookie, 4.5), "a READ was served while the worker's budget was spent"
    print("ok a READ waits while two clients that do not read hold the whole budget")
    hostile[0].close()
    assert _done_within(h, cookie, 10), "the waiting READ was not served after a holder went away"
    assert buf.to_bytearray()[:4096] == b"\x5a" * 4096, "the waiting READ returned wrong data"
    hostile[1].close()
    h.pwrite(b"\xa5" * MiB, 0)
    assert h.pread(MiB, 0) == b"\xa5" * MiB
    h.shutdown()
    print("ok it is served once one of them goes, and I/O goes on")


def bursts(argv):
    sock, disk, pid, allowed = argv[1], argv[2], int(argv[3]), int(argv[4])
    handles = []
    for _ in range(4):
        h = nbd.NBD()
        h.connect_uri(uri(sock, disk))
        handles.append(h)
    # Data to read (holes are answered without a buffer), in small writes.
    size = handles[0].get_size()
    block = os.urandom(256 * 1024)
    for off in range(0, size, len(block)):
        handles[0].pwrite(block, off)
    time.sleep(0.5)
    base = rss(pid)
    sampler = RssSampler(pid)
    sampler.start()
    rnd = random.Random(14)
    for _ in range(3):
        cookies = []
        for h in handles:
            for _ in range(12):
                n = rnd.choice((1, 2, 3, 5, 8, 12, 16, 24, 32)) * MiB - rnd.randrange(0, 4) * 4096
                buf = nbd.Buffer(n)
                cookies.append((h, h.aio_pread(buf, rnd.randrange(0, (size - n) // 4096) * 4096)))
        for h, c in cookies:
            while not h.aio_command_completed(c):
                h.poll(-1)
    peak = sampler.finish()
    for h in handles:
        h.shutdown()
    time.sleep(0.2)
    soon = rss(pid)
    time.sleep(3)  # rctd hands an idle pool's cache back within 2 s
    after = rss(pid)
    print(f"rss before bursts {base / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, "
          f"0.2 s after {soon / MiB:.0f} MiB, 3 s after {after / MiB:.0f} MiB "
          f"(allowed {(base + allowed) / MiB:.0f} MiB)")
    assert after < base + allowed, f"rss {after} stayed {after - base} above its base {base}"
    print("ok rss returns near its base after bursts")


def option(s, opt, data):
    s.sendall(b"IHAVEOPT" + struct.pack(">II", opt, len(data)) + data)


def option_replies(s):
    """Reads one option's replies; returns (final type, [context names])."""
    names = []
    while True:
        magic, _, typ, ln = struct.unpack(">QIII", rawnbd.recvn(s, 20))
        assert magic == rawnbd.OPT_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        payload = rawnbd.recvn(s, ln)
        if typ == REP_META_CONTEXT:
            names.append(payload[4:].decode())
        else:
            return typ, names


def meta_session(sock):
    """A raw connection after the greeting with structured replies on."""
    s = rawnbd.conn(sock)
    hflags = rawnbd.greet(s)
    s.sendall(struct.pack(">I", 1 | (hflags & 2)))
    option(s, OPT_STRUCTURED_REPLY, b"")
    typ, _ = option_replies(s)
    assert typ == REP_ACK, f"STRUCTURED_REPLY refused: {typ:#x}"
    return s


def meta_data(disk, queries):
    b = struct.pack(">I", len(disk)) + disk.encode() + struct.pack(">I", len(queries))
    return b + b"".join(struct.pack(">I", len(q)) + q.encode() for q in queries)


def flood_queries(n_cps, count=None):
    """Wildcards and exact names: count of them, or a 64 KiB option's worth."""
    out, size = [], 0
    while (len(out) < count) if count else (size < 60 * 1024):
        q = "qemu:" if len(out) % 2 else f"qemu:dirty-bitmap:cp{len(out) % n_cps}"
        out.append(q)
        size += 4 + len(q)
    return out


def metaflood(argv):
    sock, disk, ctl, n_cps = argv[1], argv[2], argv[3], int(argv[4])
    for i in range(n_cps):
        status, _ = control.call(ctl, "POST", f"/v1/disks/{disk}/checkpoints", body={"name": f"cp{i}"})
        assert status in (200, 201), status
    h = nbd.NBD()
    h.connect_uri(uri(sock, disk))
    pattern = os.urandom(4096)
    h.pwrite(pattern, 0)

    def reads(seconds):
        lat, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            assert h.pread(4096, 0) == pattern, "good client read back wrong data"
            lat.append(time.monotonic() - t)
            time.sleep(0.001)
        return lat

    quiet = reads(3)
    # One flooder sends full 64 KiB options, the other options of 256
    # queries (the most rctd accepts); both mix wildcards and exact names.
    floods = [flood_queries(n_cps), flood_queries(n_cps, 256)]
    stop, answers, errors = threading.Event(), {0: [], 1: []}, []

    def flooder(k):
        data = meta_data(disk, floods[k])
        try:
            s = meta_session(sock)
            while not stop.is_set():
                t = time.monotonic()
                option(s, OPT_LIST_META, data)
                typ, names = option_replies(s)
                answers[k].append((typ, len(names), time.monotonic() - t))
            s.close()
        except Exception as e:  # reported below: the server must keep answering
            errors.append(e)

    threads = [threading.Thread(target=flooder, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    loud = reads(5)
    stop.set()
    for t in threads:
        t.join()
    h.shutdown()
    assert not errors, f"a flooding client lost its connection: {errors[0]!r}"
    for k in (0, 1):
        got = answers[k]
        assert got, f"flooding client {k} got no answer"
        per = sorted(a[2] for a in got)
        print(f"{n_cps} checkpoints, {len(floods[k])} queries per option: {len(got)} options answered "
              f"(last: type {got[-1][0]:#x}, {got[-1][1]} contexts), median {per[len(per) // 2] * 1000:.2f} ms")
    print(f"good client 4K reads: quiet {len(quiet)} p99 {pct(quiet, 0.99):.2f} ms max {max(quiet) * 1000:.2f} ms; "
          f"during the flood {len(loud)} p99 {pct(loud, 0.99):.2f} ms max {max(loud) * 1000:.2f} ms")
    print("ok the server answers every flooding option and the good client reads correct data")


def metacap(argv):
    sock, disk, n_cps = argv[1], argv[2], int(argv[3])
    s = meta_session(sock)
    # Duplicates, exact and wildcard, select each context once.
    dup = (["base:allocation", "base:"] * 20 + ["qemu:", "qemu:dirty-bitmap:"] * 20
           + ["qemu:dirty-bitmap:cp0"] * 20)
    option(s, OPT_LIST_META, meta_data(disk, dup))
    typ, names = option_replies(s)
    assert typ == REP_ACK and len(names) == len(set(names)) == n_cps + 1, (typ, len(names), len(set(names)))
    assert "base:allocation" in names, names
    print(f"ok {len(dup)} duplicate queries give {len(names)} contexts, each once")
    option(s, OPT_SET_META, meta_data(disk, ["base:allocation"] * 200))
    typ, names = option_replies(s)
    assert typ == REP_ACK and names == ["base:allocation"], (typ, names)
    print("ok SET with 200 copies of one query selects it once")
    for opt in (OPT_LIST_META, OPT_SET_META):
        option(s, opt, meta_data(disk, ["base:allocation"] * 1000))
        typ, names = option_replies(s)
        assert typ == REP_ERR_TOO_BIG and not names, f"option {opt}: 1000 queries answered {typ:#x} {names[:3]}"
    print("ok 1000 queries are refused with NBD_REP_ERR_TOO_BIG")
    # The session goes on: an ordinary LIST still works.
    option(s, OPT_LIST_META, meta_data(disk, ["base:allocation"]))
    typ, names = option_replies(s)
    assert typ == REP_ACK and names == ["base:allocation"], (typ, names)
    s.close()
    print("ok negotiation carries on after the refusal")


def oversized(argv):
    sock, disk = argv[1], argv[2]
    s = rawnbd.conn(sock)
    rawnbd.go(s, disk)
    n = 32 * MiB + 4096
    rawnbd.request(s, rawnbd.CMD_WRITE, 0, n, 0xbad)
    chunk = b"\xee" * MiB
    try:
        for off in range(0, n, len(chunk)):
            s.sendall(chunk[: min(len(chunk), n - off)])
    except (BrokenPipeError, ConnectionResetError):
        raise AssertionError("rctd closed the connection during an oversized WRITE's payload")
    except socket.timeout:
        raise AssertionError("rctd stopped reading an oversized WRITE's payload")
    err, cookie = rawnbd.simple_reply(s)
    assert (err, cookie) == (NBD_EINVAL, 0xbad), f"oversized write answered error {err}, cookie {cookie:#x}"
    rawnbd.normal_read(s, 0xc0ffee)
    s.close()
    h = nbd.NBD()
    h.connect_uri(uri(sock, disk))
    assert h.pread(4096, 0) != chunk[:4096], "the oversized write was applied"
    h.shutdown()
    print("ok a WRITE of 32 MiB + 4 KiB is drained and answered EINVAL; the connection carries on")


if __name__ == "__main__":
    cli.run({"flood": flood, "spent": spent, "bursts": bursts, "metaflood": metaflood, "metacap": metacap,
             "oversized": oversized})
