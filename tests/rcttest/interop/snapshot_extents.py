"""A snapshot export's base:allocation under first writes that trim: while
one connection zeroes (and punches) chunks of the live disk, another asks
block status of the snapshot, whose every byte is data. A hole in any reply
is a wrong answer: a backup or replication would skip that data. Each round
refills the disk and cuts a new snapshot.

  run CONTROL_SOCKET URI DISK ROUNDS
"""
import os
import sys
import threading

import nbd

from rcttest import cli
from rcttest.control import call

CHUNK = 64 << 10


def _fill(h, size):
    for off in range(0, size, 1 << 20):
        h.pwrite(os.urandom(1 << 20), off)
    h.flush()


def _zero_all(uri, size, order):
    h = nbd.NBD()
    h.connect_uri(uri)
    for c in order:
        h.aio_zero(CHUNK, c * CHUNK)  # may trim: the chunk becomes a hole
        while h.aio_in_flight() >= 16:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.shutdown()


def run(argv):
    sock, uri, disk, rounds = argv[1], argv[2], argv[3], int(argv[4])
    live = nbd.NBD()
    live.connect_uri(uri)
    size = live.get_size()
    holes = []
    queries = 0
    for r in range(rounds):
        _fill(live, size)
        name = "x%d" % r
        status, body = call(sock, "POST", "/v1/disks/%s/snapshots" % disk, {"name": name})
        assert status in (200, 201), (status, body)
        snap = nbd.NBD()
        snap.add_meta_context("base:allocation")
        snap.connect_uri(uri.replace("///%s?" % disk, "///%s@%s?" % (disk, name)))
        order = list(range(size // CHUNK))
        order.reverse() if r % 2 else None
        zeroer = threading.Thread(target=_zero_all, args=(uri, size, order))
        zeroer.start()
        while zeroer.is_alive():
            def seen(_ctx, offset, entries, _err):
                at = offset
                for i in range(0, len(entries), 2):
                    if entries[i + 1] & nbd.STATE_HOLE or entries[i + 1] & nbd.STATE_ZERO:
                        holes.append((name, at, entries[i]))
                    at += entries[i]
                return 0
            snap.block_status(size, 0, seen)
            queries += 1
        zeroer.join()
        snap.shutdown()
        call(sock, "DELETE", "/v1/disks/%s/snapshots/%s?force=true" % (disk, name))
    live.shutdown()
    if holes:
        print("a snapshot whose every byte is data was reported with holes: %s" % holes[:5], file=sys.stderr)
        return 1
    print("   %d block-status replies over %d snapshots under trimming first writes: no hole reported" %
          (queries, rounds))
    return 0


if __name__ == "__main__":
    cli.run({"run": run})
