"""rct-backup --group under a causal writer: the points of one group run
are consistent with each other (docs/backup.md).

The causal writer of group_cut (write k into block 0 of disk k % 3, each
issued once the previous one completed) and its random writers run while
`rct-backup full --group`, then `inc --group` ROUNDS - 1 times, back the
disks up. Afterwards every run's points are restored and their block 0
read: each run must be a causally closed prefix (group_cut's rule), every
member must name the run's group, and the points must form each disk's
chain (a full, then increments).

  run NBD_SOCK CTL_SOCK RCT_BACKUP REPO WORK ROUNDS DISK...
"""
import json
import os
import struct
import subprocess
import sys

from rcttest import cli
from rcttest.interop.group_cut import SEQ_AT, _Writers, _check


def _backup(tool, repo, ctl, sock, mode, disks):
    out = subprocess.run([tool, "--repo", repo, "--control-socket", ctl, "--socket", sock, "--json",
                          mode, "--group", *disks], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"rct-backup {mode} --group failed ({out.returncode}): {out.stderr}")
    results = [json.loads(line) for line in out.stdout.splitlines() if '"event":"result"' in line.replace(" ", "")]
    if [r["disk"] for r in results] != disks:
        raise SystemExit(f"rct-backup {mode} --group reported {[r['disk'] for r in results]}, not {disks}")
    return results


def _restored_block(tool, repo, disk, point, work):
    dest = os.path.join(work, f"{disk}-{point}.raw")
    subprocess.run([tool, "--repo", repo, "restore", disk, "--at", point, "--to", dest],
                   check=True, capture_output=True)
    with open(dest, "rb") as f:
        f.seek(SEQ_AT)
        k = struct.unpack("<Q", f.read(8))[0]
    os.unlink(dest)
    return k


def run(argv):
    sock, ctl, tool, repo, work, rounds, disks = argv[1], argv[2], argv[3], argv[4], argv[5], int(argv[6]), argv[7:]
    w = _Writers(sock, disks)
    w.start()
    runs = []
    try:
        for i in range(rounds):
            before = w.acked
            runs.append((before, _backup(tool, repo, ctl, sock, "full" if i == 0 else "inc", disks)))
    finally:
        w.finish()
    parents = {}
    for i, (before, results) in enumerate(runs):
        ids = {r["id"] for r in results}
        groups = {r.get("group") for r in results}
        if len(ids) != 1 or len(groups) != 1 or None in groups:
            print(f"run {i}: the members' points do not share one id and group: {results}", file=sys.stderr)
            return 1
        for r in results:
            want = "full" if i == 0 else "inc"
            if r["mode"] != want or r.get("parent") != parents.get(r["disk"]):
                print(f"run {i}: disk {r['disk']}: a {r['mode']} on {r.get('parent')}, not a {want} on "
                      f"{parents.get(r['disk'])}", file=sys.stderr)
                return 1
            parents[r["disk"]] = r["id"]
        values = [_restored_block(tool, repo, r["disk"], r["id"], work) for r in results]
        why = _check(disks, values, before)
        if why:
            print(f"run {i} ({results[0]['group']}): {why}; blocks {values}", file=sys.stderr)
            return 1
        print(f"   {results[0]['mode']} {results[0]['id']}: blocks {values}, acknowledged before the call {before}")
    print(f"   {rounds} group backups of {len(disks)} disks, each restored to a causally closed prefix; "
          f"{w.acked} causal writes, {w.random_writes} random ones beside them")
    return 0


if __name__ == "__main__":
    cli.run({"run": run})
