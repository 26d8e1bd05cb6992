"""Checks of tests/interop/capabilities.sh: what rctd advertises to NBD
clients, as nbdinfo --json reports it."""
import json

from rcttest import cli


def export(argv):
    """export JSON NAME SIZE: the capabilities of one export (nbdinfo --json)."""
    doc = json.load(open(argv[1]))
    name, size = argv[2], int(argv[3])
    bad = 0

    def check(what, got, want):
        nonlocal bad
        if got == want:
            print(f"   ok: {what} = {got!r}")
        else:
            print(f"   FAIL: {what} = {got!r}, want {want!r}")
            bad += 1
    check("protocol", doc.get("protocol"), "newstyle-fixed")
    check("structured", doc.get("structured"), True)
    exports = doc.get("exports", [])
    check("number of exports described", len(exports), 1)
    e = exports[0] if exports else {}
    check("export-name", e.get("export-name"), name)
    check("export-size", e.get("export-size"), size)
    for flag in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero",
                 "can_multi_conn", "can_cache"):
        check(flag, e.get(flag), True)
    check("is_read_only", e.get("is_read_only"), False)
    check("block_size_minimum", e.get("block_size_minimum"), 1)
    check("block_size_preferred", e.get("block_size_preferred"), 4096)
    check("block_size_maximum", e.get("block_size_maximum"), 33554432)
    check("'base:allocation' in contexts", "base:allocation" in e.get("contexts", []), True)
    return 1 if bad else 0


def listing(argv):
    """list JSON NAME:SIZE...: nbdinfo --list --json shows every disk with its size."""
    doc = json.load(open(argv[1]))
    found = {e.get("export-name"): e.get("export-size") for e in doc.get("exports", [])}
    print("   listed:", found)
    bad = 0
    for arg in argv[2:]:
        name, size = arg.split(":")
        if name not in found:
            print(f"   FAIL: {name} not listed")
            bad += 1
        elif found[name] != int(size):
            print(f"   FAIL: {name} listed with size {found[name]}, want {size}")
            bad += 1
        else:
            print(f"   ok: {name} listed, {size} bytes")
    return 1 if bad else 0


def solo(argv):
    """solo JSON: the socket-activated export has flush/fua/trim/zero/multi-conn."""
    e = json.load(open(argv[1]))["exports"][0]
    missing = [f for f in ("can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn") if e.get(f) is not True]
    print("   export-size", e.get("export-size"), "missing:", missing)
    return 1 if missing else 0


COMMANDS = {"export": export, "list": listing, "solo": solo}

if __name__ == "__main__":
    cli.run(COMMANDS)
