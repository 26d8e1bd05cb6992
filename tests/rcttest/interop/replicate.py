"""rct-backup replicate between two rctd instances (docs/backup.md,
"Replication").

A writer keeps random 4 KiB writes and zeroes going on the source disk while
`rct-backup replicate` runs ROUNDS times; before one round a stray writer
also writes to the replica's live disk (as a killed run would leave it).
Afterwards, with the writer stopped: both sides hold the same snapshots, in
the same order; every snapshot reads the same on both sides; `rctctl diff`
between two consecutive snapshots (from the second round on) lists the same
ranges on both sides; and the first round copied everything while the
later ones copied changes since the previous snapshot.

  run RCT_BACKUP RCTCTL SRC_STATE DST_STATE DISK ROUNDS STRAY_ROUND
"""
import fcntl
import json
import os
import random
import subprocess
import sys
import threading

import nbd

from rcttest import cli

BLOCK = 4096
READ = 4 << 20


def _uri(state, export):
    return f"nbd+unix:///{export}?socket={state}/nbd.sock"


class _Writer:
    def __init__(self, state, disk):
        self.h = nbd.NBD()
        self.h.connect_uri(_uri(state, disk))
        self.size = self.h.get_size()
        self.stop = threading.Event()
        self.error = None
        self.writes = 0
        self.t = threading.Thread(target=self._run)

    def _run(self):
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                off = rng.randrange(self.size // BLOCK) * BLOCK
                if rng.random() < 0.1:
                    self.h.zero(BLOCK * 4 if off + 4 * BLOCK <= self.size else BLOCK, off)
                else:
                    self.h.pwrite(rng.randbytes(BLOCK), off)
                self.writes += 1
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.stop.set()
        self.t.join()
        self.h.shutdown()
        if self.error:
            raise self.error


def _ctl(rctctl, state, *args):
    out = subprocess.run([rctctl, "--state-dir", state, "--json", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"rctctl {' '.join(args)} on {state} failed: {out.stderr}")
    return json.loads(out.stdout)


def _snapshots(rctctl, state, disk):
    return [s["name"] for s in _ctl(rctctl, state, "snapshots", disk)["snapshots"]]


def _diff(rctctl, state, disk, a, b):
    return [(e["offset"], e["length"]) for e in _ctl(rctctl, state, "diff", disk, a, b)["extents"]]


def _covers(outer, inner):
    """Every range of inner lies within a range of outer."""
    return all(any(o <= a and a + n <= o + m for o, m in outer) for a, n in inner)


def _same(state_a, state_b, export):
    a, b = nbd.NBD(), nbd.NBD()
    a.connect_uri(_uri(state_a, export))
    b.connect_uri(_uri(state_b, export))
    try:
        size = a.get_size()
        if b.get_size() != size:
            return f"sizes differ: {size} and {b.get_size()}"
        for off in range(0, size, READ):
            n = min(READ, size - off)
            if a.pread(n, off) != b.pread(n, off):
                return f"the 4 MiB at offset {off} differ"
        return None
    finally:
        a.shutdown()
        b.shutdown()


def _stray_write(state, disk):
    h = nbd.NBD()
    h.connect_uri(_uri(state, disk))
    h.pwrite(b"\xee" * 65536, 3 * 65536)
    h.shutdown()


def run(argv):
    tool, rctctl, src, dst, disk = argv[1:6]
    rounds, stray = int(argv[6]), int(argv[7])
    w = _Writer(src, disk)
    w.t.start()
    results = []
    try:
        for i in range(rounds):
            if i == stray:
                _stray_write(dst, disk)
            out = subprocess.run([tool, "--state-dir", src, "--json", "replicate", disk,
                                  "--to", f"{dst}/control.sock"], capture_output=True, text=True)
            if out.returncode != 0:
                print(f"round {i}: rct-backup replicate exited {out.returncode}: {out.stderr}", file=sys.stderr)
                return 1
            results.append(json.loads(out.stdout.splitlines()[-1]))
    finally:
        w.finish()
    if results[0]["base"] is not None or any(r["base"] != p["snapshot"] for p, r in zip(results, results[1:])):
        print(f"the rounds did not each build on the previous one: {[r['base'] for r in results]}", file=sys.stderr)
        return 1
    names = [r["snapshot"] for r in results]
    for state in (src, dst):
        if _snapshots(rctctl, state, disk) != names:
            print(f"{state} holds snapshots {_snapshots(rctctl, state, disk)}, not {names}", file=sys.stderr)
            return 1
    for n in names:
        why = _same(src, dst, f"{disk}@{n}")
        if why:
            print(f"snapshot {n}: source and replica differ: {why}", file=sys.stderr)
            return 1
    for a, b in zip(names, names[1:]):
        ds, dd = _diff(rctctl, src, disk, a, b), _diff(rctctl, dst, disk, a, b)
        # The round after the stray write also rewrote what it changed.
        if ds != dd and (b != names[stray] or not _covers(dd, ds)):
            print(f"diff {a} {b}: the source lists {ds[:5]}..., the replica {dd[:5]}...", file=sys.stderr)
            return 1
    copied = [r["data_bytes"] for r in results]
    print(f"   {rounds} rounds under {w.writes} writes and zeroes; a stray write to the replica before round "
          f"{stray}; both sides hold the same {rounds} snapshots, each equal; diffs agree; data copied per round "
          f"{copied}")
    return 0


def locked(argv):
    """While another run holds a disk's replication lock (the source's, then
    the replica's), replicate is refused (exit 4) and cuts nothing."""
    tool, rctctl, src, dst, disk = argv[1:6]
    before = (_snapshots(rctctl, src, disk), _snapshots(rctctl, dst, disk))
    for state in (src, dst):
        disk_id = _ctl(rctctl, state, "info", disk)["id"]
        lock_dir = "/run/rct-backup" if os.geteuid() == 0 else os.environ.get(
            "XDG_RUNTIME_DIR", "/run/user/%d" % os.geteuid())
        with open("%s/replicate-%s.lock" % (lock_dir, disk_id), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            out = subprocess.run([tool, "--state-dir", src, "replicate", disk, "--to", f"{dst}/control.sock"],
                                 capture_output=True, text=True)
        if out.returncode != 4 or "another rct-backup replicate" not in out.stderr:
            print(f"replicate with {state}'s lock held exited {out.returncode}: {out.stderr}", file=sys.stderr)
            return 1
    after = (_snapshots(rctctl, src, disk), _snapshots(rctctl, dst, disk))
    if after != before:
        print(f"a refused replicate changed the snapshots: {before} -> {after}", file=sys.stderr)
        return 1
    print("   a second replicate of the source, or onto the replica, is refused (exit 4) and cuts nothing")
    return 0


if __name__ == "__main__":
    cli.run({"run": run, "locked": locked})
