"""Helpers and checks of tests/interop/snapshots.sh (snapshots through real
NBD clients, against images built locally)."""
import json
import os
import random
import sys

import nbd

from rcttest import cli
from rcttest.extents import chunk_range, chunks_to_extents, merge, print_pairs, read_pairs


def writes(argv):
    """writes URI IMG SEED N: N random writes (unaligned offsets and lengths,
    some crossing chunks, some all-zero data) to the export URI and to the
    local image IMG alike; prints "offset length" of each."""
    uri, img, seed, n = argv[1], argv[2], int(argv[3]), int(argv[4])
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    fd = os.open(img, os.O_WRONLY)
    for _ in range(n):
        ln = rng.choice([1, 512, 4096, 65536, 65537, 200000, rng.randint(1, 400000)])
        off = rng.randrange(0, size - ln)
        data = bytes(ln) if rng.random() < 0.1 else rng.randbytes(ln)
        h.pwrite(data, off)
        os.pwrite(fd, data, off)
        print(off, ln)
    h.flush()
    os.close(fd)


def chunks(argv):
    """chunks G SIZE FILE...: the chunks the "offset length" lines of FILEs
    touch, coalesced, as "offset length" (the last one cut at SIZE)."""
    g, size = int(argv[1]), int(argv[2])
    touched = set()
    for f in argv[3:]:
        for off, ln in read_pairs(f):
            touched.update(chunk_range(off, ln, g))
    for o, l in chunks_to_extents(touched, g):
        print(o, min(l, size - o))


def differing(argv):
    """differing G X Y: the chunks where images X and Y differ, "offset length"."""
    g = int(argv[1])
    a, b = open(argv[2], "rb").read(), open(argv[3], "rb").read()
    for c in range(0, len(a), g):
        if a[c:c + g] != b[c:c + g]:
            print(c, min(g, len(a) - c))


def map_dirty(argv):
    """map-dirty < NBDINFO_MAP_JSON: the dirty extents, coalesced."""
    print_pairs(merge((e["offset"], e["length"]) for e in json.load(sys.stdin) if e["type"] & 1))


def extents_json(argv):
    """extents-json < RCTCTL_JSON: the "extents" of rctctl --json diff or
    changes as "offset length" lines."""
    for e in json.load(sys.stdin)["extents"]:
        print(e["offset"], e["length"])


def covers(argv):
    """covers NEED HAVE G: fail unless every chunk of NEED is inside an extent
    of HAVE (both "offset length" files)."""
    g = int(argv[3])

    def chunks_of(f):
        s = set()
        for o, l in read_pairs(f):
            s.update(chunk_range(o, l, g))
        return s
    missing = sorted(chunks_of(argv[1]) - chunks_of(argv[2]))
    if missing:
        sys.exit("   missing chunks at offsets %s" % [c * g for c in missing[:10]])


def listed(argv):
    """listed LIST_JSON EXPORT...: nbdinfo --list --json names every EXPORT."""
    names = sorted(e["export-name"] for e in json.load(open(argv[1]))["exports"])
    print("   exports:", names)
    return 0 if set(argv[2:]) <= set(names) else 1


def deleted(argv):
    """deleted SNAPS_JSON GONE KEPT: rctctl --json snapshots lists KEPT, not GONE."""
    names = [s["name"] for s in json.load(open(argv[1]))["snapshots"]]
    print("   snapshots:", names)
    assert argv[2] not in names and argv[3] in names, names


def overwrite(argv):
    """overwrite URI DATA OFF: write the file DATA at OFF in 256 KiB writes, flush."""
    h = nbd.NBD()
    h.connect_uri(argv[1])
    data = open(argv[2], "rb").read()
    base = int(argv[3])
    for off in range(0, len(data), 256 << 10):
        h.pwrite(data[off:off + (256 << 10)], base + off)
    h.flush()


def limit_invalid(argv):
    """limit-invalid SNAPS_JSON NAME LIMIT: snapshot NAME is INVALID with a
    reason naming the limit, and the store holds at most LIMIT bytes."""
    j = json.load(open(argv[1]))
    s = [x for x in j["snapshots"] if x["name"] == argv[2]]
    assert s, "snapshot %s is gone" % argv[2]
    s = s[0]
    print("   valid:", s["valid"], "reason:", s.get("invalid_reason"), "store:", j["store"])
    assert not s["valid"], "snapshot %s is still valid" % argv[2]
    assert "limit" in (s.get("invalid_reason") or "").lower(), "reason does not mention the limit"
    assert j["store"]["bytes"] <= int(argv[3]), "the store holds more than its limit"


def still_limit_invalid(argv):
    """still-limit-invalid NAME < SNAPS_JSON: after a restart, NAME is still
    INVALID for the limit."""
    s = [x for x in json.load(sys.stdin)["snapshots"] if x["name"] == argv[1]][0]
    assert not s["valid"] and "limit" in s["invalid_reason"].lower(), s


def listing(argv):
    """listing < SNAPS_JSON: the snapshot listing without the counters that
    restart with the daemon."""
    j = json.load(sys.stdin)
    for s in j["snapshots"]:
        print(s["name"], s["epoch"], s["token"], s["valid"], s.get("invalid_reason"), s["exclusive_bytes"],
              s.get("size"))
    print("store", j["store"]["copies"], j["store"]["bytes"])


COMMANDS = {"writes": writes, "chunks": chunks, "differing": differing, "map-dirty": map_dirty,
            "extents-json": extents_json, "covers": covers, "listed": listed, "deleted": deleted,
            "overwrite": overwrite, "limit-invalid": limit_invalid, "still-limit-invalid": still_limit_invalid,
            "listing": listing}

if __name__ == "__main__":
    cli.run(COMMANDS)
