"""Helpers of bench/snapshots.sh."""
import json
import sys

from rcttest import cli, fio


def stat(argv):
    """stat FIO_JSON read|write iops|bw|p99|p999|max: one figure of the first
    job (bw in MB/s, latencies in microseconds)."""
    j = fio.load(argv[1])["jobs"][0][argv[2]]
    k = argv[3]
    if k == "iops":
        print(round(j["iops"]))
    elif k == "bw":
        print(round(j["bw_bytes"] / 1e6))
    else:
        p = j["clat_ns"]["percentile"]
        key = {"p99": "99.000000", "p999": "99.900000", "max": "100.000000"}[k]
        print(round(p[key] / 1000))


def cut_ns(argv):
    """cut-ns CUT_JSON: the cut_ns of a POST .../snapshots answer."""
    print(json.load(open(argv[1]))["cut_ns"])


def names(argv):
    """names < SNAPSHOTS_JSON: the snapshot names, one a line."""
    for x in json.load(sys.stdin)["snapshots"]:
        print(x["name"])


def copies(argv):
    """copies < SNAPSHOTS_JSON: the store's number of chunk copies."""
    print(json.load(sys.stdin)["store"]["copies"])


COMMANDS = {"stat": stat, "cut-ns": cut_ns, "names": names, "copies": copies}

if __name__ == "__main__":
    cli.run(COMMANDS)
