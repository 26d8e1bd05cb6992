"""Helpers and checks of tests/interop/dirty_bitmap.sh
(qemu:dirty-bitmap: against qemu-nbd's qcow2 bitmaps)."""
import json
import random
import sys

import nbd

from rcttest import cli
from rcttest.extents import chunk_range, chunks_to_extents, merge, print_pairs


def map_json(argv):
    """map-json < NBDINFO_MAP_JSON: normalize to "offset length type" lines."""
    for e in json.load(sys.stdin):
        print(e["offset"], e["length"], e["type"])


def changes_json(argv):
    """changes-json < RCTCTL_CHANGES_JSON: the extents as "offset length" lines."""
    d = json.load(sys.stdin)
    for e in d["extents"]:
        print(e["offset"], e["length"])


def dirty_extents(argv):
    """dirty-extents FILE: the type-1 lines of a normalized map, merged, as
    "offset length"."""
    dirty = []
    for line in open(argv[1]):
        o, l, t = map(int, line.split())
        if t & 1:
            dirty.append((o, l))
    print_pairs(merge(dirty))


def qemu_img_map(argv):
    """qemu-img-map QMAP_JSON DIRTY_FILE: the "data": false ranges of qemu-img
    map with x-dirty-bitmap are exactly the dirty extents."""
    q = json.load(open(argv[1]))
    notdata = merge((e["start"], e["length"]) for e in q if not e["data"])
    dirty = [list(map(int, line.split())) for line in open(argv[2]) if line.strip()]
    if notdata != dirty:
        print("   qemu-img map \"data\": false ranges:", notdata)
        print("   rct dirty extents:                 ", dirty)
        sys.exit(1)


def req_one(argv):
    """req-one URI CONTEXT: block_status with REQ_ONE at several offsets and
    lengths; one chunk for the context, one extent in it, no longer than
    asked."""
    uri, ctx = argv[1], argv[2]
    h = nbd.NBD()
    h.add_meta_context(ctx)
    h.connect_uri(uri)
    assert h.can_meta_context(ctx), ctx + " not negotiated"
    size = h.get_size()
    for off, ln in ((0, size), (65536, size - 65536), (100000, 300000), (524288, 4096), (size - 512, 512), (1, 65535)):
        got = []

        def cb(c, o, e, err):
            if c == ctx:
                got.append(list(zip(e[0::2], e[1::2])))
            return 0
        h.block_status(ln, off, cb, nbd.CMD_FLAG_REQ_ONE)
        if len(got) != 1 or len(got[0]) != 1:
            sys.exit("%s %s: REQ_ONE gave %s" % (ctx, (off, ln), got))
        l, f = got[0][0]
        if not 0 < l <= ln:
            sys.exit("%s %s: extent length %d" % (ctx, (off, ln), l))
        if ctx.startswith("qemu:") and f not in (0, 1):
            sys.exit("%s %s: flags %#x" % (ctx, (off, ln), f))
        print("   ", ctx, (off, ln), "->", got[0][0])


def gen(argv):
    """gen N SEED SIZE: N random qemu-io commands (write, zero, zero with
    unmap, discard; unaligned offsets and lengths; some crossing chunk
    boundaries)."""
    n, seed, size = int(argv[1]), int(argv[2]), int(argv[3])
    rng = random.Random(seed * 31 + n)
    for _ in range(n):
        k = rng.random()
        ln = rng.choice([1, 512, 4096, 65536, 65537, 131072, 300000, rng.randint(1, 1 << 20)])
        off = rng.randrange(0, size - ln)
        if rng.random() < 0.5:
            off -= off % 512
            ln = max(512, ln - ln % 512)
        if k < 0.7:
            print("write -P %d %d %d" % (rng.randint(1, 255), off, ln))
        elif k < 0.8:
            print("write -z %d %d" % (off, ln))
        elif k < 0.9:
            print("write -z -u %d %d" % (off - off % 512, max(512, ln - ln % 512)))
        else:
            print("discard %d %d" % (off - off % 512, max(512, ln - ln % 512)))


def truth(argv):
    """truth CMDS G SIZE: the chunks (granularity G) the qemu-io commands in
    CMDS touch, coalesced, as "offset length"."""
    g = int(argv[2])
    dirty = set()
    for line in open(argv[1]):
        w = line.split()
        off, ln = int(w[-2]), int(w[-1])
        dirty.update(chunk_range(off, ln, g))
    print_pairs(chunks_to_extents(dirty, g))


COMMANDS = {"map-json": map_json, "changes-json": changes_json, "dirty-extents": dirty_extents,
            "qemu-img-map": qemu_img_map, "req-one": req_one, "gen": gen, "truth": truth}

if __name__ == "__main__":
    cli.run(COMMANDS)
