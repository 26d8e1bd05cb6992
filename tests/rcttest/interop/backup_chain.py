"""rct-backup end to end: a qcow2 chain of full, incremental and
differential backups of a disk under random writes, zeroes and trims, every
point restored (by rct-backup and by qemu-img convert alone) and compared with
the disk as it was; faults around it. State between steps lives in WORK
(points.json: backup id -> reference image of the disk at that point).

  rounds BACKUP STATE DISK URI WORK N  - full, then N rounds of writes + inc
                                         (+ diff in rounds 3 and 5)
  write BACKUP STATE DISK URI WORK     - one round of writes, its reference
  inc BACKUP STATE DISK URI WORK       - an inc that must hold those writes
  kill BACKUP STATE DISK URI WORK      - kill -9 rct-backup mid-copy
  recreated BACKUP STATE DISK URI WORK - the disk was re-created: inc refused,
                                         auto takes a full and says why
  grow BACKUP STATE DISK URI WORK      - after a grow: the chain continues
  shrunk BACKUP STATE DISK URI WORK    - after a shrink: auto -> full, said
  restore BACKUP STATE DISK WORK       - every point restored and compared
  prune BACKUP STATE DISK WORK N       - prune --keep N; the rest stay exact
  underload BACKUP STATE DISK URI WORK - a full and an inc taken while a writer runs
                                         are each the disk after a prefix of its writes
  flip BACKUP STATE DISK WORK          - verify names a flipped byte's file
"""
import json
import os
import random
import signal
import subprocess

import nbd

from rcttest import cli

BLOCK = 64 << 10


def _backup(argv, *args, check=True):
    """rct-backup ARGS; argv: a subcommand's (WORK at 5 after a URI, else at 4)."""
    backup, state, work = argv[1], argv[2], argv[5] if len(argv) > 5 else argv[4]
    cmd = [backup, "--state-dir", state, "--repo", os.path.join(work, "repo")] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(cmd), r.returncode, r.stderr))
    return r


def _json_backup(argv, mode, disk, check=True):
    """A backup with --json: (its result object or None, the process)."""
    r = _backup(argv, "--json", mode, disk, check=check)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert all(e["event"] in ("progress", "result", "error") for e in lines), lines
    results = [e for e in lines if e["event"] == "result"]
    return (results[-1] if results else None), r


def _points(work):
    path = os.path.join(work, "points.json")
    return json.load(open(path)) if os.path.exists(path) else {}


def _save_points(work, points):
    json.dump(points, open(os.path.join(work, "points.json"), "w"), indent=1)


def _reference(uri, work, name):
    """The disk's content now, as a raw file (the test writes nothing meanwhile)."""
    path = os.path.join(work, "ref-%s.raw" % name)
    subprocess.run(["nbdcopy", uri, path], check=True)
    return path


def _random_round(uri, seed):
    """Random writes, zeroes and trims over the disk; the ranges touched."""
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    touched = []
    for _ in range(24):
        blocks = rng.randint(1, 16)
        off = rng.randrange(0, size // BLOCK - blocks) * BLOCK + rng.choice([0, 512, 4096])
        length = blocks * BLOCK - rng.choice([0, 512, 4096])
        kind = rng.choice(["write", "write", "zero", "trim"])
        if kind == "write":
            h.pwrite(rng.randbytes(length), off)
        elif kind == "zero":
            h.zero(length, off)
        else:
            h.trim(length, off)
        touched.append((off, length))
    h.flush()
    h.shutdown()
    return touched


def _covers(result_ranges, touched):
    """Every touched byte lies in a range the backup wrote (data or zeroes)."""
    spans = sorted((r[0], r[0] + r[1]) for r in result_ranges)
    for off, length in touched:
        pos, end = off, off + length
        for lo, hi in spans:
            if lo <= pos < hi:
                pos = hi
            if pos >= end:
                break
        if pos < end:
            return False
    return True


def _manifest(work, disk, point_id):
    return json.load(open(os.path.join(work, "repo", disk, point_id + ".json")))


def _take(argv, mode, disk, uri, work, name, touched=None, expect_mode=None):
    res, _ = _json_backup(argv, mode, disk)
    assert res["mode"] == (expect_mode or mode), res
    points = _points(work)
    points[res["id"]] = _reference(uri, work, name)
    _save_points(work, points)
    if touched is not None:
        m = _manifest(work, disk, res["id"])
        assert _covers(m["ranges"], touched), "backup %s misses a write: %s" % (res["id"], touched)
    print("ok %s backup %s: %d data bytes, %d zero bytes" % (res["mode"], res["id"], res["data_bytes"],
                                                             res["zero_bytes"]))
    return res


def rounds(argv):
    disk, uri, work, n = argv[3], argv[4], argv[5], int(argv[6])
    _random_round(uri, 1000)
    _take(argv, "full", disk, uri, work, "full")
    since_full = []
    for k in range(1, n + 1):
        touched = _random_round(uri, k)
        since_full += touched
        res = _take(argv, "inc", disk, uri, work, "inc%d" % k, touched)
        assert res["parent"] is not None
        if k in (3, 5):
            d = _take(argv, "diff", disk, uri, work, "diff%d" % k, since_full)
            assert _manifest(work, disk, d["id"])["parent"] == _manifest(work, disk, d["full"])["id"]
    out = _backup(argv, "list", disk).stdout
    print(out)
    assert len(out.splitlines()) == 1 + 1 + n + 2, out


def write(argv):
    uri, work = argv[4], argv[5]
    touched = _random_round(uri, 77)
    json.dump(touched, open(os.path.join(work, "touched.json"), "w"))
    print("ok wrote %d ranges" % len(touched))


def inc(argv):
    disk, uri, work = argv[3], argv[4], argv[5]
    touched = json.load(open(os.path.join(work, "touched.json")))
    _take(argv, "inc", disk, uri, work, "after-crash", touched)


def kill(argv):
    backup, state, disk, uri, work = argv[1:6]
    # Enough changed data that the copy cannot end before the kill lands.
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    rng = random.Random(5)
    for off in range(0, size, 4 << 20):
        h.pwrite(rng.randbytes(4 << 20), off)
    h.flush()
    h.shutdown()
    repo_dir = os.path.join(work, "repo", disk)
    before = sorted(f for f in os.listdir(repo_dir) if not f.startswith("."))
    p = subprocess.Popen([backup, "--state-dir", state, "--repo", os.path.join(work, "repo"), "--json", "inc", disk],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())
    assert first["event"] == "progress" and first["done_bytes"] == 0, first
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "rct-backup ended (%d) before the kill" % p.returncode
    after = sorted(f for f in os.listdir(repo_dir) if not f.startswith("."))
    assert after == before, (before, after)
    leftovers = [f for f in os.listdir(repo_dir) if f.startswith(".tmp-")]
    assert leftovers, "a killed run left nothing to discard: %s" % os.listdir(repo_dir)
    print("ok kill -9 mid-copy: points unchanged, leftovers %s" % leftovers)
    r = _backup(argv, "inc", disk)
    assert "discarded an unfinished backup" in r.stderr, r.stderr
    assert not [f for f in os.listdir(repo_dir) if f.startswith(".tmp-")], os.listdir(repo_dir)
    points = _points(work)
    new_id = sorted(set(f[:-5] for f in os.listdir(repo_dir) if f.endswith(".json")) - set(points))[-1]
    points[new_id] = _reference(uri, work, "after-kill")
    _save_points(work, points)
    snaps = subprocess.run([os.environ["RCTCTL"], "--state-dir", state, "--json", "snapshots", disk],
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(snaps)["snapshots"] == [], snaps
    print("ok the next run discarded the leftovers (%s) and backed up %s; no snapshot left in rctd" %
          (r.stderr.strip().splitlines()[0], new_id))


def recreated(argv):
    disk, uri, work = argv[3], argv[4], argv[5]
    _random_round(uri, 99)
    r = _backup(argv, "inc", disk, check=False)
    assert r.returncode == 6 and "re-created" in r.stderr, (r.returncode, r.stderr)
    print("ok inc of a re-created disk refused (6): %s" % r.stderr.strip())
    res, proc = _json_backup(argv, "auto", disk)
    assert res["mode"] == "full" and "re-created" in res["full_reason"], res
    assert "taking a full backup" in proc.stderr, proc.stderr
    points = _points(work)
    points[res["id"]] = _reference(uri, work, "recreated")
    _save_points(work, points)
    print("ok auto took a full: %s" % proc.stderr.strip())


def grow(argv):
    disk, uri, work = argv[3], argv[4], argv[5]
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    h.pwrite(b"\x5a" * BLOCK, size - BLOCK)
    h.shutdown()
    res = _take(argv, "auto", disk, uri, work, "grown", [(size - BLOCK, BLOCK)], expect_mode="inc")
    assert res["size"] == size and res["full_reason"] is None, res
    print("ok a grown disk (%d bytes) continues the chain" % size)


def shrunk(argv):
    disk, uri, work = argv[3], argv[4], argv[5]
    r = _backup(argv, "inc", disk, check=False)
    assert r.returncode == 6 and "full backup is required" in r.stderr, (r.returncode, r.stderr)
    print("ok inc after a shrink refused (6): %s" % r.stderr.strip())
    res, proc = _json_backup(argv, "auto", disk)
    assert res["mode"] == "full" and res["full_reason"], res
    points = _points(work)
    points[res["id"]] = _reference(uri, work, "shrunk")
    _save_points(work, points)
    print("ok auto after a shrink took a full: %s" % proc.stderr.strip())


def _allocated(path):
    return os.stat(path).st_blocks * 512


def restore(argv, at_least=8):
    disk, work = argv[3], argv[4]
    points = _points(work)
    assert len(points) >= at_least, points
    for point_id, ref in sorted(points.items()):
        out = os.path.join(work, "restored.raw")
        _backup(argv, "restore", disk, "--at", point_id, "--to", out)
        subprocess.run(["cmp", ref, out], check=True)
        assert _allocated(out) <= _allocated(ref) + (1 << 20), (point_id, _allocated(out), _allocated(ref))
        image = os.path.join(work, "repo", disk, _manifest(work, disk, point_id)["file"])
        converted = os.path.join(work, "converted.raw")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, converted], check=True)
        subprocess.run(["cmp", ref, converted], check=True)
        print("ok point %s: restore and qemu-img convert equal the disk then (%d of %d bytes allocated)" %
              (point_id, _allocated(out), os.path.getsize(out)))


def prune(argv):
    disk, work, keep = argv[3], argv[4], int(argv[5])
    r = _backup(argv[:5], "prune", disk, "--keep", str(keep))
    print(r.stdout)
    left = sorted(f[:-5] for f in os.listdir(os.path.join(work, "repo", disk)) if f.endswith(".json"))
    assert len(left) == keep, left
    # The points under load have no reference image (they are checked by their cut).
    points = {k: v for k, v in _points(work).items() if k in left}
    assert len(points) >= keep - 2, (points, left)
    _save_points(work, points)
    restore(argv[:5], at_least=len(points))
    r = _backup(argv[:5], "verify", disk)
    print(r.stdout)
    print("ok prune --keep %d: every remaining point restores exactly and verifies" % keep)


def _consistent(path, log):
    """The image holds the disk after writes 0..S of the log for some S (one
    synchronous writer: its writes are ordered); the blocks it never wrote are
    zero. Returns S."""
    seen = {}
    with open(path, "rb") as f:
        for blk in sorted(set(log)):
            f.seek(blk * BLOCK)
            head = f.read(8)
            seen[blk] = int.from_bytes(head, "little") - 1  # 0: never written
    last = max(seen.values())
    expected = {}
    for i, blk in enumerate(log[:last + 1]):
        expected[blk] = i
    for blk, tag in seen.items():
        assert tag == expected.get(blk, -1), "block %d holds write %d, the cut at write %d needs %d" % (
            blk, tag, last, expected.get(blk, -1))
    return last


def underload(argv):
    backup, state, disk, uri, work = argv[1:6]
    import threading
    h = nbd.NBD()
    h.connect_uri(uri)
    h.zero(h.get_size(), 0)
    blocks = h.get_size() // BLOCK
    log, stop = [], threading.Event()

    def writer():
        rng = random.Random(11)
        while not stop.is_set():
            blk = rng.randrange(blocks)
            tag = (len(log) + 1).to_bytes(8, "little")
            h.pwrite(tag * (BLOCK // 8), blk * BLOCK)
            log.append(blk)

    for mode in ("full", "inc"):
        stop.clear()
        t = threading.Thread(target=writer)
        t.start()
        while len(log) < 200:
            pass
        res, _ = _json_backup(argv, mode, disk)
        stop.set()
        t.join()
        out = os.path.join(work, "underload.raw")
        _backup(argv, "restore", disk, "--at", res["id"], "--to", out)
        cut = _consistent(out, log)
        assert 0 < cut < len(log) - 1, (cut, len(log))
        print("ok %s taken under load: the disk after write %d of the %d made meanwhile" % (mode, cut, len(log)))
    h.shutdown()


def flip(argv):
    disk, work = argv[3], argv[4]
    r = _backup(argv, "verify", disk)
    print(r.stdout)
    repo_dir = os.path.join(work, "repo", disk)
    victim = sorted(f for f in os.listdir(repo_dir) if f.startswith("inc-"))[0]
    path = os.path.join(repo_dir, victim)
    mapping = json.loads(subprocess.run(["qemu-img", "map", "--output=json", path], capture_output=True,
                                        text=True, check=True).stdout)
    point_id = victim[len("inc-"):-len(".qcow2")]
    guest = next(r[0] for r in _manifest(work, disk, point_id)["ranges"] if r[2] is not None) + 100
    extent = next(e for e in mapping if e["depth"] == 0 and e["data"] and e["start"] <= guest < e["start"] + e["length"])
    host = extent["offset"] + guest - extent["start"]
    with open(path, "r+b") as f:
        f.seek(host)
        byte = f.read(1)
        f.seek(host)
        f.write(bytes([byte[0] ^ 0x01]))
    r = _backup(argv, "verify", disk, check=False)
    print(r.stdout)
    bad = [line for line in r.stdout.splitlines() if line.startswith("CORRUPT")]
    assert r.returncode == 8 and len(bad) == 1 and victim in bad[0], (r.returncode, r.stdout)
    assert "do not match the manifest" in r.stdout, r.stdout
    with open(path, "r+b") as f:
        f.seek(host)
        f.write(byte)
    print("ok verify found the flipped byte at file offset %d of %s (exit 8)" % (host, victim))


if __name__ == "__main__":
    cli.run({"rounds": rounds, "write": write, "inc": inc, "kill": kill, "recreated": recreated, "grow": grow,
             "shrunk": shrunk, "restore": restore, "prune": prune, "underload": underload, "flip": flip})
