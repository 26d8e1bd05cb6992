"""Stands in for qemu-img or qemu-nbd (a shim on PATH runs it) and kills the
rct-backup that ran it, at one chosen call: a crash between two steps.

  qemu_trap TOOL ARGS...

Environment: RCT_TRAP_LOG (a file: one line per call, the tool's name),
RCT_TRAP_AT (the call to crash at, from 1; 0 only logs), RCT_TRAP_WHEN
(before: rct-backup dies instead of the call; after: right after the call
did its work, qemu-img only). Any other call becomes the real tool (exec),
so that rct-backup's signals reach it.
"""
import os
import signal
import subprocess
import sys


def main():
    tool, args = sys.argv[1], sys.argv[2:]
    log = os.environ["RCT_TRAP_LOG"]
    with open(log, "a") as f:
        f.write(tool + "\n")
    n = len(open(log).read().splitlines())
    real = "/usr/bin/" + tool
    if n != int(os.environ.get("RCT_TRAP_AT", "0")):
        os.execv(real, [real] + args)
    parent = os.getppid()
    if os.environ.get("RCT_TRAP_WHEN") == "after":
        assert tool == "qemu-img", "after: qemu-img calls only"
        subprocess.run([real] + args, check=False)
    os.kill(parent, signal.SIGKILL)
    sys.exit(1)


if __name__ == "__main__":
    main()
