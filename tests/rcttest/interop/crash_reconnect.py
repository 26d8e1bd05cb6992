"""Helper of tests/interop/crash_reconnect.sh: a qemu-io session with
qemu's NBD reconnect (reconnect-delay) rides out a crash and a restart of
rctd (docs/upgrade.md, "Crash restart").

session SOCKET EXPORT RCTD_PID LOG RESTART_CMD...: writes and reads back a
pattern, SIGKILLs rctd, issues a write while no rctd runs, restarts rctd
with RESTART_CMD (the shell's start line, output to LOG), then checks
that the write issued during the outage completed after the restart and
that the session goes on; prints the new pid last.
"""
import os
import signal
import subprocess
import sys
import threading
import time

from rcttest import cli
from rcttest.interop.upgrade import QemuSession


def session(argv):
    sock, export, pid, log = argv[1], argv[2], int(argv[3]), argv[4]
    restart = argv[5:]
    opts = "driver=nbd,server.type=unix,server.path=%s,export=%s,reconnect-delay=20" % (sock, export)
    q = QemuSession(opts, image_opts=True)
    q.command("write -P 0x5a 0 64k")
    q.command("read -P 0x5a 0 64k")
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    done = {}

    def blocked_write():
        t0 = time.monotonic()
        try:
            done["out"] = q.command("write -P 0x6b 64k 64k")
        except RuntimeError as e:
            done["err"] = str(e)
        done["secs"] = time.monotonic() - t0
    t = threading.Thread(target=blocked_write)
    t.start()
    time.sleep(1.5)
    if "out" in done or "err" in done:
        sys.exit("a write issued with no rctd running finished at once: %r" % done)
    with open(log, "ab") as out:
        p = subprocess.Popen(restart, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    t.join(timeout=30)
    if "out" not in done:
        sys.exit("the write issued during the outage did not complete after the restart: %r" % done)
    print("   a write issued while rctd was down waited %.1f s and completed after the restart" % done["secs"])
    q.command("read -P 0x6b 64k 64k")
    q.command("read -P 0x5a 0 64k")
    print("   the same qemu-io session reads both writes back")
    if q.close() != 0:
        sys.exit("qemu-io failed")
    print(p.pid)


if __name__ == "__main__":
    cli.run({"session": session})
