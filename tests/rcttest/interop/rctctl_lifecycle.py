"""Helpers of tests/interop/rctctl_lifecycle.sh."""
import json
import sys

from rcttest import cli


def json_disk(argv):
    """json-disk FILE NAME: print the size of disk NAME found anywhere in the
    JSON document in FILE (a list, {"disks": [...]}, or a single object);
    fails if absent."""
    doc = json.load(open(argv[1]))
    name = argv[2]

    def walk(x):
        if isinstance(x, dict):
            if x.get("name") == name:
                yield x
            for v in x.values():
                yield from walk(v)
        elif isinstance(x, list):
            for v in x:
                yield from walk(v)
    found = list(walk(doc))
    if not found:
        sys.exit(f"disk {name!r} not in {json.dumps(doc)}")
    d = found[0]
    for key in ("size", "size_bytes", "bytes"):
        if isinstance(d.get(key), int):
            print(d[key])
            sys.exit(0)
    sys.exit(f"disk {name!r} has no integer size field: {json.dumps(d)}")


COMMANDS = {"json-disk": json_disk}

if __name__ == "__main__":
    cli.run(COMMANDS)
