"""Hostile clients against rctd's limits and deadlines (docs/security.md).

"Another peer" is played two ways: Unix connections from a child process
running as uid nobody (the shell makes the test's sockets 0666), and TCP
connections from other loopback addresses (127.0.0.N, N >= 10) while the
well-behaved client comes from 127.0.0.1 or over the Unix socket as root.

  connections NBD_SOCK URI PORT CTL RCTCTL STATE PID LOG CAP PER_PEER
        per-uid and per-address limits, then thousands of silent connections
        past the global cap; the daemon keeps serving, persisting and
        answering the control API, and logs its refusals rate-limited
  control CTL RCTCTL STATE PER_UID LOG
        half-open control connections from uid nobody do not lock out rctctl
  handshake NBD_SOCK URI TIMEOUT IDLE
        silent and slowloris handshakes are closed after the handshake
        timeout; a negotiated client survives it; an idle one is closed
        after the idle timeout, a busy one is not
  control_idle CTL TIMEOUT
        silent and half-sent control connections are closed after the
        control idle timeout
  send_stall NBD_SOCK DISK TIMEOUT LOG
        a client that never reads its replies is disconnected
  stuck_stop NBD_SOCK URI DISK PID TIMEOUT
        SIGTERM with clients that never read their replies exits in bounded
        time (the shell checks the exit status and the clean restart)
  after_stop CTL DISK
        the disk's tracking shows a clean stop, not a crash recovery
  eshutdown NBD_SOCK DISK PID
        SIGTERM with requests received but not started: every request is
        answered, in-flight ones normally, the rest with NBD_ESHUTDOWN
"""
import json
import os
import pwd
import resource
import signal
import socket
import struct
import subprocess
import time
import traceback

import nbd

from rcttest import cli, control, rawnbd

NOBODY = pwd.getpwnam("nobody")


def _raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _greeted(s, timeout=10):
    """True if the server sends its NBD greeting, False if it closes first
    (a refusal). Neither within timeout is an error."""
    s.settimeout(timeout)
    try:
        rawnbd.greet(s)
        return True
    except (EOFError, ConnectionResetError):
        return False


def _unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _tcp(src, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def _log_lines(log, needle):
    with open(log, errors="replace") as f:
        return [line for line in f if needle in line]


def _fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Nobody:
    """A child process running fn() as uid nobody. fn returns
    (result, held); result comes back as JSON, held objects (sockets) stay
    open until release()."""

    def __init__(self, fn, *args):
        rd, wr = os.pipe()
        self._go_rd, self._go_wr = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(rd)
                os.close(self._go_wr)
                os.setgroups([])
                os.setgid(NOBODY.pw_gid)
                os.setuid(NOBODY.pw_uid)
                try:
                    result, held = fn(*args)
                except BaseException:
                    traceback.print_exc()
                    raise
                os.write(wr, json.dumps(result).encode())
                os.close(wr)
                os.read(self._go_rd, 1)  # until the parent lets go
                del held
                code = 0
            finally:
                os._exit(code)
        os.close(wr)
        os.close(self._go_rd)
        with os.fdopen(rd) as f:
            text = f.read()
        assert text, "the child running as nobody failed (see its traceback above)"
        self.result = json.loads(text)

    def release(self):
        os.close(self._go_wr)
        _, status = os.waitpid(self.pid, 0)
        assert status == 0, f"nobody's child exited with status {status:#x}"


def _open_unix(path, n):
    socks, greeted = [], 0
    for _ in range(n):
        s = _unix(path)
        if _greeted(s):
            greeted += 1
            socks.append(s)
        else:
            s.close()
    return {"greeted": greeted, "refused": n - greeted}, socks


def _pattern(seed, n):
    return bytes((seed + i) & 0xFF for i in range(n))


def _check_io(h, seed, offset=0):
    data = _pattern(seed, 65536)
    h.pwrite(data, offset)
    assert h.pread(len(data), offset) == data, "well-behaved client read back other data"


def _rctctl_ok(rctctl, state, *args):
    r = subprocess.run([rctctl, "--state-dir", state] + list(args), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"rctctl {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}"
    return r.stdout


def connections(argv):
    nbd_sock, uri, port, ctl, rctctl, state, pid, log, cap, per_peer = argv[1:11]
    port, pid, cap, per_peer = int(port), int(pid), int(cap), int(per_peer)
    _raise_nofile()
    good = nbd.NBD()
    good.connect_uri(uri)
    _check_io(good, 1)

    # Per uid: nobody gets its share and no more; root is not affected.
    extra = 16
    hostile = Nobody(_open_unix, nbd_sock, per_peer + extra)
    print(f"   uid nobody: {hostile.result['greeted']} greeted, {hostile.result['refused']} refused")
    assert hostile.result == {"greeted": per_peer, "refused": extra}, hostile.result
    second = nbd.NBD()
    second.connect_uri(uri)
    _check_io(second, 2, 1 << 20)
    second.shutdown()
    _rctctl_ok(rctctl, state, "list")
    print("   root over the same socket: connected, I/O verified; rctctl list answers")

    # Per address, then in all: thousands of silent TCP connections.
    held, greeted, refused, attempts = [], 0, 0, 0
    started = time.monotonic()
    for host in range(10, 250):
        src = f"127.0.0.{host}"
        got = 0
        for _ in range(per_peer + 2):
            s = _tcp(src, port)
            attempts += 1
            if _greeted(s):
                got += 1
                held.append(s)
            else:
                s.close()
                refused += 1
        assert got <= per_peer, f"{src} got {got} connections, over --max-connections-per-peer {per_peer}"
        greeted += got
        if attempts >= 3000 and got == 0:
            break
    in_use = greeted + per_peer + 1
    print(f"   tcp: {attempts} connections from {host - 9} addresses in {time.monotonic() - started:.1f} s: "
          f"{greeted} greeted, {refused} refused; {in_use} NBD connections in all (cap {cap})")
    assert cap - 2 <= in_use <= cap, f"{in_use} connections held, expected the cap {cap}"

    # At the cap: the connected client, persistence, snapshots and the
    # control API keep working. Each persist replaces current.map by a
    # new file, which needs a free descriptor (its inode number may be one
    # freed by an earlier persist: compare the change time too).
    cur_map = os.path.join(state, "disks", "d", "tracking", "current.map")

    def identity():
        st = os.stat(cur_map)
        return st.st_ino, st.st_ctime_ns

    before = identity()
    for i in range(8):
        _check_io(good, 10 + i, i << 20)
    time.sleep(1.5)  # several persist intervals
    assert identity() != before, "the change map was not persisted at the connection cap"
    _rctctl_ok(rctctl, state, "snapshot", "d", "--name", "at-cap")
    _rctctl_ok(rctctl, state, "list")
    status, _ = control.call(ctl, "GET", "/v1/disks/d")
    assert status == 200, status
    fds = _fd_count(pid)
    limit = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
    print(f"   at the cap: rctd holds {fds} descriptors (limit {limit}); I/O, change-map persist, snapshot, "
          "rctctl list all work")
    assert fds < limit, f"rctd holds {fds} descriptors, at its limit {limit}"
    emfile = _log_lines(log, "Too many open files")
    assert not emfile, f"rctd ran out of descriptors: {emfile[:3]}"

    refusals = _log_lines(log, "refusing client")
    for line in refusals:
        print("   | " + line.rstrip())
    print(f"   {refused + extra} refusals logged in {len(refusals)} line(s)")
    assert 1 <= len(refusals) <= 6, f"{len(refusals)} refusal lines for {refused + extra} refusals"

    # Slots come back when the hostile peers leave.
    for s in held:
        s.close()
    hostile.release()
    deadline = time.monotonic() + 20
    while True:
        try:
            again = nbd.NBD()
            again.connect_uri(uri)
            break
        except nbd.Error:
            assert time.monotonic() < deadline, "no connection admitted after the hostile peers left"
            time.sleep(0.2)
    _check_io(again, 3, 2 << 20)
    _check_io(good, 4)
    print("   after the hostile peers left: a new client connects and verifies its I/O")


def _half_open_control(path, n, expect_closed):
    socks = []
    for _ in range(n):
        s = _unix(path)
        try:
            s.sendall(b"GET /v1/disks HTTP/1.1\r\nHost: localhost\r\n")  # never ends the headers
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused before the request went out: counted as closed below
        socks.append(s)
    closed = [t for t in _closed_after(socks, 10, enough=expect_closed) if t is not None]
    return {"opened": n, "closed": len(closed), "latest": max(closed, default=0)}, socks


def control_lockout(argv):
    ctl, rctctl, state, per_uid, log = argv[1], argv[2], argv[3], int(argv[4]), argv[5]
    n = 80
    hostile = Nobody(_half_open_control, ctl, n, n - per_uid)
    print(f"   uid nobody: {hostile.result['opened']} half-open control connections, "
          f"{hostile.result['closed']} closed by rctd within {hostile.result['latest']:.2f} s")
    assert hostile.result["closed"] >= n - per_uid, hostile.result
    for _ in range(5):
        _rctctl_ok(rctctl, state, "list")
    print("   rctctl list (root) answers five times while they are held")
    hostile.release()
    lines = _log_lines(log, "control API: refusing")
    print(f"   {hostile.result['closed']} control refusals logged in {len(lines)} line(s)")
    assert 1 <= len(lines) <= 3, lines


def _closed_after(socks, bound, enough=None):
    """Seconds until each socket was closed by the server (None if not
    within bound, or once `enough` of them were), reading and discarding
    what it sends."""
    start = time.monotonic()
    out = [None] * len(socks)
    enough = len(socks) if enough is None else enough
    for s in socks:
        s.setblocking(False)
    while time.monotonic() - start < bound and sum(t is not None for t in out) < enough:
        for i, s in enumerate(socks):
            if out[i] is not None:
                continue
            try:
                if s.recv(65536) == b"":
                    out[i] = time.monotonic() - start
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                out[i] = time.monotonic() - start
        time.sleep(0.05)
    return out


def _slowloris_send(s, data, start, sent):
    """Sends one byte of data for each half second since start; returns the
    bytes sent so far (sent before the call)."""
    due = min(len(data), int((time.monotonic() - start) / 0.5))
    if due > sent:
        try:
            s.send(data[sent:due])
        except (BrokenPipeError, ConnectionResetError, BlockingIOError):
            pass
    return max(due, sent)


def handshake(argv):
    nbd_sock, uri, timeout, idle = argv[1], argv[2], float(argv[3]), float(argv[4])
    silent = [_unix(nbd_sock) for _ in range(20)]
    slow = [_unix(nbd_sock) for _ in range(5)]
    # Client flags, then an option header that never ends: 2 bytes a second.
    drip = struct.pack(">I", 1) + b"IHAVEOPT" + struct.pack(">II", 7, 1000) + b"x" * 64
    negotiated = nbd.NBD()
    negotiated.connect_uri(uri)
    start = time.monotonic()
    bound = 5 * timeout + 5
    closed = [None] * (len(silent) + len(slow))
    dripped = [0] * len(slow)
    socks = silent + slow
    for s in socks:
        s.setblocking(False)
    while time.monotonic() - start < bound and None in closed:
        for i, s in enumerate(slow):
            dripped[i] = _slowloris_send(s, drip, start, dripped[i])
        for i, s in enumerate(socks):
            if closed[i] is not None:
                continue
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        closed[i] = time.monotonic() - start
                        break
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                closed[i] = time.monotonic() - start
        time.sleep(0.05)
    open_left = sum(c is None for c in closed)
    done = [c for c in closed if c is not None]
    if done:
        print(f"   {len(done)} handshakes closed {min(done):.1f}-{max(done):.1f} s after they began "
              f"(--handshake-timeout {timeout:g})")
    assert open_left == 0, f"{open_left} unfinished handshakes still open after {bound:g} s"
    _check_io(negotiated, 5)
    print("   the negotiated client outlived the handshake timeout and still does I/O")

    # Idle: one raw client asks nothing after GO; a busy one asks every 0.5 s.
    lazy = rawnbd.conn(nbd_sock)
    rawnbd.go(lazy, "d")
    lazy_since = time.monotonic()
    busy = rawnbd.conn(nbd_sock)
    rawnbd.go(busy, "d")
    start = time.monotonic()
    cookie = 1
    while time.monotonic() - start < idle + 3:
        rawnbd.normal_read(busy, cookie)
        cookie += 1
        time.sleep(0.5)
    print(f"   a client reading every 0.5 s stayed connected {time.monotonic() - start:.1f} s "
          f"(--idle-timeout {idle:g})")
    [gone] = _closed_after([lazy], 5 * idle + 5)
    assert gone is not None, f"an idle connection was not closed within {5 * idle + 5:g} s"
    print(f"   the client silent since GO was closed {gone:.1f} s after that; "
          f"{time.monotonic() - lazy_since:.1f} s after its GO")


def control_idle(argv):
    ctl, timeout = argv[1], float(argv[2])
    silent = _unix(ctl)
    half = _unix(ctl)
    half.sendall(b"GET /v1/disks HTTP/1.1\r\n")
    bound = 5 * timeout + 5
    closed = _closed_after([silent, half], bound)
    assert None not in closed, f"idle control connections still open after {bound:g} s: {closed}"
    print(f"   silent and half-sent control connections closed after {closed[0]:.1f} s and {closed[1]:.1f} s "
          f"(--control-idle-timeout {timeout:g})")


def _flood_reads(nbd_sock, disk, count, length):
    s = rawnbd.conn(nbd_sock)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    rawnbd.go(s, disk)
    for i in range(count):
        rawnbd.request(s, rawnbd.CMD_READ, 0, length, i + 1)
    return s


def send_stall(argv):
    nbd_sock, disk, timeout, log = argv[1], argv[2], float(argv[3]), argv[4]
    count, length = 64, 1 << 20
    stuck = _flood_reads(nbd_sock, disk, count, length)
    time.sleep(5 * timeout + 3)
    # Whatever was queued in the kernel still arrives, then the end.
    got = 0
    stuck.settimeout(5)
    try:
        while True:
            b = stuck.recv(1 << 20)
            if not b:
                break
            got += len(b)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except (socket.timeout, TimeoutError):
        raise AssertionError(f"the stalled client is still connected after {5 * timeout + 3:g} s "
                             f"({got} bytes of replies read)")
    full = count * (16 + length)
    print(f"   stalled client cut off; it could still read {got} of {full} reply bytes")
    assert got < full, "all replies arrived; the connection was not cut"
    assert _log_lines(log, "read none of its replies"), "no log line for the cut"


def _wait_exit(pid, bound):
    """Seconds until pid is gone or a zombie, or None after bound."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return time.monotonic() - start
        except FileNotFoundError:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def stuck_stop(argv):
    nbd_sock, uri, disk, pid, timeout = argv[1], argv[2], argv[3], int(argv[4]), float(argv[5])
    h = nbd.NBD()
    h.connect_uri(uri)
    _check_io(h, 7, 3 << 20)
    h.shutdown()
    stuck = [_flood_reads(nbd_sock, disk, 64, 1 << 20) for _ in range(4)]
    time.sleep(1)
    os.kill(pid, signal.SIGTERM)
    bound = 3 * timeout
    took = _wait_exit(pid, bound)
    assert took is not None, f"rctd still running {bound:g} s after SIGTERM (--shutdown-timeout {timeout:g})"
    print(f"   rctd exited {took:.1f} s after SIGTERM with 4 clients not reading 256 MiB of replies "
          f"(--shutdown-timeout {timeout:g})")
    del stuck


def after_stop(argv):
    ctl, disk = argv[1], argv[2]
    status, data = control.call(ctl, "GET", f"/v1/disks/{disk}")
    assert status == 200, status
    t = json.loads(data)["tracking"]
    print(f"   after restart: recovered_after_crash {t['recovered_after_crash']}, "
          f"recovery excess {t['recovery_excess_bytes']} bytes")
    assert not t["recovered_after_crash"], "the stop left tracking as after a crash"


def eshutdown(argv):
    nbd_sock, disk, pid = argv[1], argv[2], int(argv[3])
    count, length = 2000, 65536
    s = rawnbd.conn(nbd_sock)
    rawnbd.go(s, disk)
    # More than max_inflight: most stay unparsed while no reply is read.
    s.sendall(b"".join(struct.pack(">IHHQQI", rawnbd.REQ_MAGIC, 0, rawnbd.CMD_READ, i + 1, 0, length)
                       for i in range(count)))
    time.sleep(1)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    answered, shut = set(), 0
    s.settimeout(20)
    try:
        while len(answered) < count:
            err, cookie = rawnbd.simple_reply(s)
            assert err in (0, 108), f"request {cookie}: error {err}, expected 0 or ESHUTDOWN (108)"
            if err == 0:
                rawnbd.recvn(s, length)
            else:
                shut += 1
            answered.add(cookie)
    except EOFError:
        pass
    print(f"   SIGTERM with {count} reads sent: {len(answered) - shut} answered with data, {shut} with ESHUTDOWN")
    assert len(answered) == count, f"only {len(answered)} of {count} requests answered before the server closed"
    assert shut > 0, "no request was answered with ESHUTDOWN"
    assert rawnbd.closed_within(s, 20), "the server did not close the connection after answering"


if __name__ == "__main__":
    cli.run({"connections": connections, "control": control_lockout, "handshake": handshake,
             "control_idle": control_idle, "send_stall": send_stall, "stuck_stop": stuck_stop, "after_stop": after_stop,
             "eshutdown": eshutdown})
