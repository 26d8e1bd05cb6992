"""Checks of tests/interop/qemu_io.sh on block status maps after a TRIM."""
import json
import sys

from rcttest import cli


def hole(argv):
    """hole MAP_JSON LO N: nbdinfo --map --json shows [LO, LO + N) all as a
    hole (base:allocation bit 0), with no gap in the map."""
    ext = json.load(open(argv[1]))
    lo, n = int(argv[2]), int(argv[3])
    hi = lo + n
    covered, bad = lo, []
    for e in ext:
        s, l, t = e["offset"], e["length"], e["type"]
        if s + l <= lo or s >= hi:
            continue
        if not (t & 1):
            bad.append(e)
        if s <= covered:
            covered = max(covered, s + l)
    if bad:
        print("   extents without the HOLE bit inside the discarded range:", bad)
        sys.exit(1)
    if covered < hi:
        print(f"   map stops covering the discarded range at {covered}")
        sys.exit(1)
    print(f"   ok: [{lo}, {hi}) is all hole")


def qemu_nodata(argv):
    """qemu-nodata QMAP_JSON LO N: qemu-img map --output=json shows no data
    in [LO, LO + N)."""
    ext = json.load(open(argv[1]))
    lo, hi = int(argv[2]), int(argv[2]) + int(argv[3])
    inside = [e for e in ext if e["start"] < hi and e["start"] + e["length"] > lo]
    print("   ", inside)
    return 1 if any(e["data"] for e in inside) else 0


def extent_at(argv):
    """extent-at MAP_JSON OFF: print the type of the extent holding OFF (not
    asserted)."""
    off = int(argv[2])
    for e in json.load(open(argv[1])):
        if e["offset"] <= off < e["offset"] + e["length"]:
            print(f"   1M is in an extent of type {e['type']} ({e['description']})")


COMMANDS = {"hole": hole, "qemu-nodata": qemu_nodata, "extent-at": extent_at}

if __name__ == "__main__":
    cli.run(COMMANDS)
