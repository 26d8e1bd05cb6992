"""rctd under systemd's notify protocol, without systemd (interop systemd).

`watchdog`: rctd is started as systemd would start it with Type=notify and
WatchdogSec= (NOTIFY_SOCKET, WATCHDOG_USEC), and this module plays systemd's
side of the socket. It checks READY=1, the STATUS= line (disks and clients),
WATCHDOG=1 pings often enough, then stops one worker thread (and only it)
with ptrace: the pings must stop and STATUS= name the worker; once the thread
runs again the pings come back; SIGTERM brings STOPPING=1.
`upgrades`: the pings carry across live upgrades (below).
"""
import ctypes
import os
import signal
import socket
import subprocess
import time

from rcttest import cli

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

WATCHDOG_S = 6.0  # so a worker is stuck after 3 s, and pings come every 1.5 s
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request, tid):
    if _libc.ptrace(request, tid, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "ptrace(%d, %d): %s" % (request, tid, os.strerror(err)))


class Notifications:
    """systemd's end of NOTIFY_SOCKET: (time, {key: value}) per datagram."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.got = []

    def poll(self, seconds):
        """Collects what arrives within seconds; returns the new messages."""
        end = time.monotonic() + seconds
        new = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return new
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return new
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            new.append((time.monotonic(), fields))
            self.got.extend(new[-1:])

    def wait_for(self, key, seconds, match=lambda v: True):
        """The first message with key (whose value matches) within seconds."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t, f in self.poll(min(0.5, end - time.monotonic())):
                if key in f and match(f[key]):
                    return t, f
        return None


def pings(msgs):
    return [t for t, f in msgs if f.get("WATCHDOG") == "1"]


def statuses(msgs):
    return [f["STATUS"] for _, f in msgs if "STATUS" in f]


def worker_tid(pid, name):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            if f.read().strip() == name:
                return int(tid)
    raise SystemExit("no thread %s in rctd %d" % (name, pid))


def check_serving(note, uri):
    """READY=1, then STATUS= and regular pings while a client is connected."""
    if note.wait_for("READY", 20) is None:
        raise SystemExit("no READY=1 within 20 s")
    print("   ok: READY=1")
    import nbd  # pylint: disable=import-outside-toplevel
    h = nbd.NBD()
    h.connect_uri(uri)
    msgs = note.poll(4 * WATCHDOG_S / 2)
    beats = pings(msgs)
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    if len(beats) < 4 or max(gaps) > WATCHDOG_S / 2:
        start = msgs[0][0] if msgs else 0
        raise SystemExit("pings at %s over %.0f s: want one at least every %.1f s"
                         % (["%.2f" % (b - start) for b in beats], 2 * WATCHDOG_S, WATCHDOG_S / 2))
    print("   ok: %d WATCHDOG=1 pings in %.0f s, the longest gap %.2f s" % (len(beats), 2 * WATCHDOG_S, max(gaps)))
    st = statuses(msgs)
    if not st or "serving 1 disk(s) to 1 NBD client(s)" not in st[-1]:
        raise SystemExit("STATUS= was %r, want 1 disk and 1 client" % st[-1:])
    print("   ok: STATUS=%s" % st[-1])
    return h


def check_stuck_worker(note, pid):
    """One worker stopped: pings stop, STATUS= says which; then they return."""
    tid = worker_tid(pid, "rct-worker-0")
    ptrace(PTRACE_SEIZE, tid)
    ptrace(PTRACE_INTERRUPT, tid)
    os.waitpid(tid, WALL)
    stopped = time.monotonic()
    try:
        hit = note.wait_for("STATUS", 3 * WATCHDOG_S / 2, lambda v: "worker 0 has not run" in v)
        if hit is None:
            raise SystemExit("no STATUS= naming the stopped worker 0 within %.0f s" % (3 * WATCHDOG_S / 2))
        print("   ok: %.1f s after worker 0 stopped: STATUS=%s" % (hit[0] - stopped, hit[1]["STATUS"]))
        after = note.poll(WATCHDOG_S)
        if pings(after):
            raise SystemExit("WATCHDOG=1 still sent while worker 0 is stopped")
        print("   ok: no WATCHDOG=1 for %.0f s while worker 0 stays stopped" % WATCHDOG_S)
    finally:
        ptrace(PTRACE_DETACH, tid)
    resumed = time.monotonic()
    back = note.wait_for("WATCHDOG", WATCHDOG_S)
    if back is None:
        raise SystemExit("no WATCHDOG=1 within %.0f s of worker 0 running again" % WATCHDOG_S)
    print("   ok: pings again %.1f s after worker 0 runs (STATUS=%s)" % (back[0] - resumed, back[1].get("STATUS")))


def watchdog(argv):
    """watchdog NOTIFY_PATH URI RCTD ARGS...: the whole check (see above)."""
    note = Notifications(argv[1])
    env = dict(os.environ, NOTIFY_SOCKET=argv[1], WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(argv[3:], env=env)
    try:
        h = check_serving(note, argv[2])
        check_stuck_worker(note, proc.pid)
        h.shutdown()
        proc.send_signal(signal.SIGTERM)
        if note.wait_for("STOPPING", 20) is None:
            raise SystemExit("no STOPPING=1 after SIGTERM")
        rc = proc.wait(30)
        if rc != 0:
            raise SystemExit("rctd exited %d after SIGTERM" % rc)
        print("   ok: STOPPING=1, exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 0


def upgrades(argv):
    """upgrades NOTIFY_PATH RCTCTL STATE RCTD ARGS...: WATCHDOG_PID names
    rctd (as systemd sets it); the pings go on across two live upgrades in a
    row, each new rctd pinging for the service."""
    note = Notifications(argv[1])
    env = dict(os.environ, NOTIFY_SOCKET=argv[1], WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
    rctctl = [argv[2], "--state-dir", argv[3]]
    # exec keeps the shell's pid: WATCHDOG_PID is rctd's own, as under systemd.
    proc = subprocess.Popen(["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"] + argv[4:], env=env)
    try:
        if note.wait_for("READY", 20) is None:
            raise SystemExit("no READY=1 within 20 s")
        for n in (1, 2):
            subprocess.run(rctctl + ["upgrade"], check=True, stdout=subprocess.DEVNULL)
            if note.wait_for("MAINPID", 10) is None:
                raise SystemExit("upgrade %d sent no MAINPID=" % n)
            beats = pings(note.poll(WATCHDOG_S))
            if len(beats) < 2:
                raise SystemExit("%d WATCHDOG=1 in %.0f s after upgrade %d" % (len(beats), WATCHDOG_S, n))
            print("   ok: upgrade %d: %d pings in the next %.0f s" % (n, len(beats), WATCHDOG_S))
        subprocess.run(["pkill", "-TERM", "-f", "^%s --state-dir %s" % (argv[4], argv[3])], check=False)
        if note.wait_for("STOPPING", 20) is None:
            raise SystemExit("no STOPPING=1 after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 0


COMMANDS = {"watchdog": watchdog, "upgrades": upgrades}

if __name__ == "__main__":
    cli.run(COMMANDS)
