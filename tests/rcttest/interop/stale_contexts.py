"""Stale answers: a qemu:dirty-bitmap: context and a changes cursor opened
before a tracking reset, or before their checkpoint was deleted and made
again, must fail instead of answering from another history; a context whose
checkpoint stands keeps answering while others are deleted.

  context SOCK_URI CTL_SOCK DISK  - the NBD side (libnbd)
  cursor CTL_SOCK DISK            - the control API side
"""
import json

import nbd

from rcttest import cli, control


def _block_status(h, ctx, size):
    """Dirty extents of ctx over the whole disk, or the NBD error."""
    dirty = []

    def cb(metacontext, offset, entries, err):
        if metacontext != ctx:
            return 0
        pos = offset
        for i in range(0, len(entries), 2):
            length, flags = entries[i], entries[i + 1]
            if flags & 1:
                dirty.append((pos, length))
            pos += length
        return 0

    try:
        h.block_status(size, 0, cb)
    except nbd.Error as e:
        return None, e
    return dirty, None


def _api(sock, method, path, body=None):
    status, data = control.call(sock, method, path, body)
    return status, json.loads(data) if data else {}


def _connect(uri, contexts):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    return h


def context(argv):
    uri, ctl, disk = argv[1], argv[2], argv[3]
    for name in ("a", "b"):
        status, _ = _api(ctl, "POST", f"/v1/disks/{disk}/checkpoints", {"name": name})
        assert status in (200, 201), status
    keep = "qemu:dirty-bitmap:a"
    only_a = _connect(uri, [keep])
    both = _connect(uri, [keep, "qemu:dirty-bitmap:b"])
    size = only_a.get_size()
    only_a.pwrite(b"\x55" * 65536, 1 << 20)
    only_a.flush()
    for h in (only_a, both):
        dirty, err = _block_status(h, keep, size)
        assert err is None and dirty == [(1 << 20, 65536)], (dirty, err)
    print("ok context a answers on both connections")
    # Deleting b (merged forward) changes nothing for a; a connection that
    # selected b too must fail, since a reply needs a chunk per context.
    status, _ = _api(ctl, "DELETE", f"/v1/disks/{disk}/checkpoints/b")
    assert status == 204, status
    dirty, err = _block_status(only_a, keep, size)
    assert err is None and dirty == [(1 << 20, 65536)], (dirty, err)
    print("ok context a answers the same after b was deleted")
    dirty, err = _block_status(both, keep, size)
    assert err is not None, "a connection with deleted b's context answered: %s" % dirty
    print("ok the connection that selected b fails: %s" % err)
    # A forced shrink resets tracking: the old context must not answer, not
    # even after a new checkpoint "a" (another history) exists.
    status, body = _api(ctl, "POST", f"/v1/disks/{disk}/resize", {"size": size - (1 << 20), "force": True})
    assert status == 200, (status, body)
    _api(ctl, "POST", f"/v1/disks/{disk}/checkpoints", {"name": "a"})
    dirty, err = _block_status(only_a, keep, size - (1 << 20))
    assert err is not None, "a context from before the reset answered: %s" % dirty
    print("ok context a from before the reset fails: %s" % err)
    fresh = _connect(uri, [keep])
    dirty, err = _block_status(fresh, keep, size - (1 << 20))
    assert err is None and dirty == [], (dirty, err)
    print("ok a new connection gets the new a")
    for h in (only_a, both, fresh):
        h.shutdown()


def cursor(argv):
    ctl, disk = argv[1], argv[2]
    _api(ctl, "POST", f"/v1/disks/{disk}/checkpoints", {"name": "c"})
    h = nbd.NBD()
    h.connect_uri(argv[3])
    for off, length in [(0, 65536), (4 << 20, 65536)]:
        h.pwrite(b"\x66" * length, off)
    h.flush()
    h.shutdown()
    status, page = _api(ctl, "GET", f"/v1/disks/{disk}/changes?since=c&limit=1")
    assert status == 200 and page["next_cursor"], (status, page)
    status, page2 = _api(ctl, "GET", f"/v1/disks/{disk}/changes?since=c&limit=1&cursor={page['next_cursor']}")
    assert status == 200, (status, page2)
    print("ok a cursor continues while its history stands")
    _api(ctl, "DELETE", f"/v1/disks/{disk}/checkpoints/c")
    _api(ctl, "POST", f"/v1/disks/{disk}/checkpoints", {"name": "c"})
    status, body = _api(ctl, "GET", f"/v1/disks/{disk}/changes?since=c&limit=1&cursor={page['next_cursor']}")
    err = body.get("error", {})
    assert status == 409 and err.get("code") == "full_backup_required", (status, body)
    print("ok a cursor across a re-created checkpoint fails: %s" % err.get("message", "")[:80])
    status, body = _api(ctl, "GET", f"/v1/disks/{disk}/changes?since=c&cursor=12345")
    assert status == 400, (status, body)
    print("ok a made-up cursor is refused")


if __name__ == "__main__":
    cli.run({"context": context, "cursor": cursor})
