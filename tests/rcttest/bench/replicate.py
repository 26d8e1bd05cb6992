"""bench/replicate.sh: rct-backup replicate of a 1% diff against copying the
whole disk, between two rctd on one machine (docs/performance.md,
"Replication").

A source disk (SIZE, half of it random data in 1 MiB pieces) is replicated
once in full. Then each round rewrites 1% of it (64 KiB pieces spread over
the disk) and, in alternating order, times `rct-backup replicate` (cut, the
diff, copy, cut on the replica) and the whole-disk alternative: a snapshot
cut on the source and `nbdcopy --flush` of it onto a second disk of the
replica's rctd. Prints each round's times, the medians and their ratio.

Run as `/usr/bin/python3 -m rcttest.bench.replicate RCTD RCTCTL RCT_BACKUP
WORKDIR SIZE ROUNDS`.
"""
import os
import statistics
import subprocess
import sys
import time

from rcttest import cli
from rcttest.bench.backup import fill, rewrite


def _start(rctd, state, log):
    p = subprocess.Popen([rctd, "--state-dir", state], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if os.path.exists(os.path.join(state, "control.sock")):
            return p
        time.sleep(0.05)
    raise SystemExit(f"rctd on {state} did not start")


def _timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def main(argv):
    rctd, rctctl, tool, work, size, rounds = argv[1], argv[2], argv[3], argv[4], argv[5], int(argv[6])
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    procs = []
    with open(os.path.join(work, "rctd.log"), "w") as log:
        try:
            procs = [_start(rctd, src, log), _start(rctd, dst, log)]

            def ctl(state, *args):
                subprocess.run([rctctl, "--state-dir", state, *args], check=True, stdout=subprocess.DEVNULL)

            ctl(src, "create", "d", "--size", size)
            ctl(dst, "create", "whole", "--size", size)
            uri = f"nbd+unix:///d?socket={src}/nbd.sock"
            fill(["fill", uri, "0.5"])
            replicate = [tool, "--state-dir", src, "replicate", "d", "--to", f"{dst}/control.sock"]
            first = _timed(replicate)
            repl, whole = [], []

            def copy_whole(i):
                t0 = time.monotonic()
                ctl(src, "snapshot", "d", "--name", f"whole-{i}")
                subprocess.run(["nbdcopy", "--flush", f"nbd+unix:///d%40whole-{i}?socket={src}/nbd.sock",
                                f"nbd+unix:///whole?socket={dst}/nbd.sock"], check=True)
                t = time.monotonic() - t0
                ctl(src, "snapshot-delete", "d", f"whole-{i}")
                ctl(src, "checkpoint-delete", "d", f"whole-{i}")
                return t

            for i in range(rounds):
                rewrite(["rewrite", uri, "0.01"])
                if i % 2 == 0:
                    repl.append(_timed(replicate))
                    whole.append(copy_whole(i))
                else:
                    whole.append(copy_whole(i))
                    repl.append(_timed(replicate))
                print(f"round {i + 1}: replicate (1% changed) {repl[-1]:.3f} s, whole-disk copy {whole[-1]:.3f} s",
                      flush=True)
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    m_r, m_w = statistics.median(repl), statistics.median(whole)
    print(f"\n| {size} disk, half of it data, {rounds} rounds | median s | rounds (s) |")
    print("|---|---|---|")
    print(f"| first replicate (everything) | {first:.2f} | |")
    print(f"| replicate, 1% rewritten | {m_r:.3f} | {' '.join('%.3f' % x for x in repl)} |")
    print(f"| whole disk: snapshot + nbdcopy --flush onto the replica's rctd | {m_w:.3f} | "
          f"{' '.join('%.3f' % x for x in whole)} |")
    print(f"| ratio (whole / replicate) | {m_w / m_r:.1f} | |")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    cli.run({"run": main})
