"""GET /metrics (docs/metrics.md), parsed with prometheus_client's own text
parser: a known NBD workload moves each counter by exactly its amount, errors
are counted as errors, the histograms add up, and the gauges (clients, in
flight, size) say what is open now.

  run CONTROL_SOCKET URI DISK SIZE
"""
import sys

import nbd
from prometheus_client.parser import text_string_to_metric_families

from rcttest import cli
from rcttest.control import call

OPS = ("read", "write", "flush", "trim", "write_zeroes", "cache", "block_status")


def _scrape(sock):
    status, body = call(sock, "GET", "/metrics")
    assert status == 200, (status, body)
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _workload(uri, size):
    """What it asks, per operation: (requests, bytes, errors)."""
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    for i in range(20):
        h.pwrite(b"\x5a" * 4096, i * 65536)
    for _ in range(7):
        h.pread(16384, 0)
    h.zero(131072, 1 << 20)
    h.zero(65536, 2 << 20)
    h.trim(65536, 3 << 20)
    h.flush()
    h.flush()
    h.block_status(1 << 20, 0, lambda *args: 0)
    failed = 0
    try:  # past the end: refused by the server, counted as an error
        h.set_strict_mode(0)
        h.pread(4096, size)
    except nbd.Error:
        failed = 1
    assert failed == 1, "a read past the end was not refused"
    h.shutdown()
    return {"write": (20, 20 * 4096, 0), "read": (8, 7 * 16384, 1), "write_zeroes": (2, 196608, 0),
            "trim": (1, 65536, 0), "flush": (2, 0, 0), "block_status": (1, 0, 0), "cache": (0, 0, 0)}


def _check_histograms(after, disk):
    for op in OPS:
        name = "rct_disk_request_duration_seconds"
        count = _value(after, name + "_count", disk=disk, op=op)
        buckets = sorted(((float(labels[1][1]) if labels[1][1] != "+Inf" else float("inf")), v)
                         for (n, labels), v in after.items()
                         if n == name + "_bucket" and dict(labels)["disk"] == disk and dict(labels)["op"] == op)
        values = [v for _, v in buckets]
        assert values == sorted(values), (op, "buckets are not cumulative", values)
        assert buckets[-1] == (float("inf"), count), (op, buckets[-1], count)
        assert count == _value(after, "rct_disk_requests_total", disk=disk, op=op), op


def run(argv):
    sock, uri, disk, size = argv[1], argv[2], argv[3], int(argv[4])
    before = _scrape(sock)
    expected = _workload(uri, size)
    after = _scrape(sock)
    for op, (requests, nbytes, errors) in expected.items():
        for name, want in (("rct_disk_requests_total", requests), ("rct_disk_request_bytes_total", nbytes),
                           ("rct_disk_request_errors_total", errors)):
            got = _value(after, name, disk=disk, op=op) - _value(before, name, disk=disk, op=op)
            if got != want:
                print(f"{name}{{op={op}}} moved by {got}, the workload made {want}", file=sys.stderr)
                return 1
    _check_histograms(after, disk)
    assert _value(after, "rct_disk_requests_in_flight", disk=disk) == 0
    assert _value(after, "rct_disk_size_bytes", disk=disk) == size
    assert _value(after, "rct_tracking_active", disk=disk) == 1
    assert _value(after, "rct_process_open_fds") > 0 and _value(after, "rct_process_resident_memory_bytes") > 0
    held = nbd.NBD()
    held.connect_uri(uri)
    open_now = _scrape(sock)
    held.shutdown()
    assert _value(open_now, "rct_disk_clients", disk=disk) == 1, _value(open_now, "rct_disk_clients", disk=disk)
    print("   every counter moved by exactly the workload's requests, bytes and errors; histograms add up; "
          "clients 1 while one is connected")
    return 0


if __name__ == "__main__":
    cli.run({"run": run})
