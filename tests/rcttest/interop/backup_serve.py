"""rct-backup serve, for file-level restore: a disk holding ext4 is backed up
(full), its files are changed and it is backed up again (inc); then the first
point is served on a Unix socket, made a file by nbdfuse, loop-mounted
read-only and its files compared with the originals; the second point,
served on TCP, reads back as the second image byte for byte.

Restore to targets other than a file: the second point is written over
NBD to another rctd disk and to a loop device, both first filled with
garbage, and to rct:NAME (a disk created for it; refused once it holds
data, unless --force); each reads back as the image (the NBD target stays
sparse); --connections 1 and 7 give the same file.

  run BACKUP STATE DISK URI WORK TARGET_URI
"""
import filecmp
import hashlib
import json
import os
import random
import signal
import subprocess
import time

import nbd

SIZE = 64 << 20


def _tree(root, seed):
    """A few files of random content, some in subdirectories."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "dir", "sub"))
    for name, size in (("small", 1000), ("dir/medium", 3 << 20), ("dir/sub/large", 9 << 20)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(rng.randbytes(size))
    for i in range(50):
        with open(os.path.join(root, "dir", "many-%d" % i), "w") as f:
            f.write("file %d %d\n" % (i, rng.getrandbits(32)))


def _image(work, name, seed):
    """An ext4 image holding _tree(seed), made without mounting (mkfs -d)."""
    src, img = os.path.join(work, name), os.path.join(work, name + ".img")
    _tree(src, seed)
    subprocess.run(["truncate", "-s", str(SIZE), img], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", src, img], check=True)
    return src, img


def _backup(backup, state, work, *args):
    cmd = [backup, "--state-dir", state, "--repo", os.path.join(work, "repo"), "--json"] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, "%s exited %d: %s" % (" ".join(cmd), r.returncode, r.stderr)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()][-1]


class _served:
    """rct-backup serve in the background; the URI from its first line."""

    def __init__(self, backup, state, work, *args):
        cmd = [backup, "--state-dir", state, "--repo", os.path.join(work, "repo"), "--json", "serve"] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, "serve exited %s before serving" % self.proc.wait()
        self.event = json.loads(line)
        assert self.event["event"] == "serving", self.event

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        assert rc == 0, "serve exited %d on SIGTERM" % rc


def _wait_for(path, seconds=20):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "%s did not appear within %d s" % (path, seconds)
        time.sleep(0.05)


def _compare(mnt, src):
    """Every file under src is in mnt with the same bytes (and nothing else)."""
    count = 0
    for root, _, files in os.walk(src):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), src)
            assert filecmp.cmp(os.path.join(src, rel), os.path.join(mnt, rel), shallow=False), rel
            count += 1
    return count


def _mount_and_compare(uri, work, src):
    fuse_dir, mnt = os.path.join(work, "fuse"), os.path.join(work, "mnt")
    os.makedirs(fuse_dir)
    os.makedirs(mnt)
    pidfile = os.path.join(work, "nbdfuse.pid")
    fuse = subprocess.Popen(["nbdfuse", "-r", "-P", pidfile, os.path.join(fuse_dir, "disk"), uri])
    try:
        _wait_for(pidfile)
        subprocess.run(["mount", "-o", "ro,loop,noload", os.path.join(fuse_dir, "disk"), mnt], check=True)
        try:
            return _compare(mnt, src)
        finally:
            subprocess.run(["umount", mnt], check=True)
    finally:
        subprocess.run(["fusermount3", "-u", fuse_dir], check=False)
        assert fuse.wait(timeout=30) == 0, "nbdfuse failed"


def _sha(read, size):
    h = hashlib.sha256()
    for off in range(0, size, 4 << 20):
        h.update(read(min(4 << 20, size - off), off))
    return h.hexdigest()


def _allocated(h):
    """Bytes base:allocation reports as data (not holes) on an NBD handle."""
    seen = {"off": 0, "data": 0}

    def walk(_ctx, _off, entries, _err):
        for i in range(0, len(entries), 2):
            seen["data"] += 0 if entries[i + 1] & nbd.STATE_HOLE else entries[i]
            seen["off"] += entries[i]
        return 0
    while seen["off"] < h.get_size():
        h.block_status(h.get_size() - seen["off"], seen["off"], walk)
    return seen["data"]


def _garbage(write, size):
    rng = random.Random(3)
    for off in range(0, size, 4 << 20):
        write(rng.randbytes(min(4 << 20, size - off)), off)


def _restore_targets(backup, state, work, disk, point, img2, target_uri):
    with open(img2, "rb") as f:
        want = _sha(lambda n, off: os.pread(f.fileno(), n, off), SIZE)
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(target_uri)
    _garbage(h.pwrite, SIZE)
    _backup(backup, state, work, "restore", disk, "--at", point, "--to", target_uri)
    assert _sha(h.pread, SIZE) == want, "restore to %s differs from the image" % target_uri
    data = _allocated(h)
    h.shutdown()
    assert data < SIZE // 2, "restore to %s left %d of %d bytes allocated" % (target_uri, data, SIZE)
    print("ok restore to %s: equals the image, %d of %d bytes allocated" % (target_uri, data, SIZE))

    # --connections: the data split over 1 and 7 connections and threads.
    for n in (1, 7):
        out = os.path.join(work, "restored-%d.raw" % n)
        _backup(backup, state, work, "restore", disk, "--at", point, "--to", out, "--connections", str(n))
        subprocess.run(["cmp", out, img2], check=True)
        os.unlink(out)
    print("ok restore --connections 1 and 7 to a file: cmp equals the image")

    # rct:NAME: a new disk is created with the image's size; a disk holding
    # data is refused (exit 4) unless --force.
    _backup(backup, state, work, "restore", disk, "--at", point, "--to", "rct:restored")
    h = nbd.NBD()
    h.connect_uri(target_uri.replace("/target?", "/restored?"))
    assert h.get_size() == SIZE, h.get_size()
    assert _sha(h.pread, SIZE) == want, "restore to rct:restored differs from the image"
    h.shutdown()
    cmd = [backup, "--state-dir", state, "--repo", os.path.join(work, "repo"), "restore", disk, "--at", point,
           "--to", "rct:restored"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 4 and "not empty" in r.stderr, (r.returncode, r.stderr)
    _backup(backup, state, work, "restore", disk, "--at", point, "--to", "rct:restored", "--force")
    print("ok restore to rct:restored: created with the image's size and equal to it; "
          "again refused (%s), then done with --force" % r.stderr.strip())

    backing = os.path.join(work, "loop.img")
    with open(backing, "wb") as f:
        _garbage(lambda b, off: os.pwrite(f.fileno(), b, off), SIZE)
    r = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIPPED restore to a block device: losetup failed: %s" % r.stderr.strip())
        return
    dev = r.stdout.strip()
    try:
        _backup(backup, state, work, "restore", disk, "--at", point, "--to", dev)
        subprocess.run(["cmp", "-n", str(SIZE), dev, img2], check=True)
        print("ok restore to block device %s: cmp equals the image" % dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def run(argv):
    backup, state, disk, uri, work, target_uri = argv
    src1, img1 = _image(work, "one", 1)
    src2, img2 = _image(work, "two", 2)
    subprocess.run(["nbdcopy", img1, uri], check=True)
    first = _backup(backup, state, work, "full", disk)
    subprocess.run(["nbdcopy", img2, uri], check=True)
    second = _backup(backup, state, work, "inc", disk)
    assert second["mode"] == "inc", second
    print("ok backed up %s (full) and %s (inc)" % (first["id"], second["id"]))

    served = _served(backup, state, work, disk, "--at", first["id"], "--socket", os.path.join(work, "serve.sock"))
    try:
        print("ok serving %s at %s" % (first["id"], served.event["uri"]))
        n = _mount_and_compare(served.event["uri"], work, src1)
        print("ok mounted point %s read-only: %d files equal the originals" % (first["id"], n))
    finally:
        served.stop()

    port = 20000 + os.getpid() % 20000
    served = _served(backup, state, work, disk, "--at", second["id"], "--listen", "tcp:127.0.0.1:%d" % port)
    try:
        h = nbd.NBD()
        h.connect_uri(served.event["uri"])
        assert h.get_size() == SIZE and h.is_read_only(), (h.get_size(), h.is_read_only())
        with open(img2, "rb") as f:
            want = _sha(lambda n, off: os.pread(f.fileno(), n, off), SIZE)
        assert _sha(h.pread, SIZE) == want, "point %s over TCP differs from the image written" % second["id"]
        h.shutdown()
        print("ok point %s served on %s reads back as the image written" % (second["id"], served.event["uri"]))
    finally:
        served.stop()
    _restore_targets(backup, state, work, disk, second["id"], img2, target_uri)


if __name__ == "__main__":
    import sys
    assert sys.argv[1] == "run", sys.argv
    run(sys.argv[2:])
