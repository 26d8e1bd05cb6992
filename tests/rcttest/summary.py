"""scripts/test's summary line from meson's testlog.json files (one per build
directory), summed:
  N passed, N failed, N skipped
Exits 1 when a test failed (FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS or anything
unknown count as failed; OK and EXPECTEDFAIL as passed)."""
import json
import sys


def count(path):
    """(passed, failed, skipped) in a testlog.json; all 0 if it is missing."""
    passed = failed = skipped = 0
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                result = json.loads(line).get("result")
                if result in ("OK", "EXPECTEDFAIL"):
                    passed += 1
                elif result == "SKIP":
                    skipped += 1
                else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, anything unknown
                    failed += 1
    except FileNotFoundError:
        pass
    return passed, failed, skipped


def main(argv=None):
    argv = sys.argv if argv is None else argv
    passed = failed = skipped = 0
    for path in argv[1:]:  # one testlog.json per build directory
        p, f, s = count(path)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
