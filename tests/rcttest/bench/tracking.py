"""Helpers of bench/tracking.sh: fio JSON, the checkpoint client, NBD
writers, analysis. Run as
`/usr/bin/python3 -m rcttest.bench.tracking FUNCTION ARGS...`."""
import bisect
import http.client
import json
import os
import random
import signal
import socket
import statistics
import sys
import time

from rcttest import fio


fio_job = fio.job


class UnixHTTP(http.client.HTTPConnection):
    """A control API connection (kept alive across requests; unlike
    rcttest.control's, its socket has the timeout too)."""

    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def iops(path):
    j = fio_job(path)
    print(f"{j['read']['iops'] + j['write']['iops']:.0f}")


def checkpointer(sock, disk, duration, interval_ms, out):
    """POST a checkpoint every interval_ms for duration seconds over one
    keep-alive connection; record send time (epoch ns), round trip, cut_ns."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    conn = UnixHTTP(sock)
    cuts, errors, last_error = [], 0, ""
    interval = float(interval_ms) / 1000
    end = time.monotonic() + float(duration)
    tick = time.monotonic()
    while not stop and time.monotonic() < end:
        sent = time.time_ns()
        p0 = time.perf_counter_ns()
        try:
            conn.request("POST", f"/v1/disks/{disk}/checkpoints", body=b"{}",
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
            rtt = time.perf_counter_ns() - p0
            if resp.status != 201:
                errors += 1
                last_error = f"HTTP {resp.status}: {body[:200]!r}"
            else:
                cuts.append([sent, rtt, json.loads(body).get("cut_ns")])
        except Exception as e:  # keep going: count it
            errors += 1
            last_error = repr(e)
            conn.close()
            conn = UnixHTTP(sock)
        tick += interval
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            tick = time.monotonic()
    json.dump({"cuts": cuts, "errors": errors, "last_error": last_error}, open(out, "w"))


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def fmt_ns(ns):
    if ns != ns:  # nan
        return "n/a"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms"


def fmt_k(v):
    return f"{v / 1000:.1f}k" if v >= 10000 else f"{v:.0f}"


def classify_windows(prefix, cuts):
    """fio clat logs (log_avg_msec=10, log_max_value=1, log_unix_epoch=1)
    hold, per job, the slowest completion of each ~10 ms window, stamped with
    the time (ms) of the completion that closed the window. A window
    [start, t] whose slowest request took L was in flight no earlier than
    start - L: it may have overlapped a cut call [sent, sent + rtt] if that
    interval meets [start - L, t]. Returns (overlapping, others) lists of
    slowest-request latencies (ns), over the windows inside the time the
    cuts ran."""
    calls = sorted((sent / 1e6, (sent + rtt) / 1e6) for sent, rtt, _ in cuts)
    if not calls:
        return None
    starts = [a for a, _ in calls]
    first, last = calls[0][0], calls[-1][1]
    d = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix) + "_clat."
    near, far = [], []
    for name in os.listdir(d):
        if not (name.startswith(base) and name.endswith(".log")):
            continue
        prev = None
        for line in open(os.path.join(d, name)):
            f = line.split(",")
            if len(f) < 2:
                continue
            t, v = int(f[0]), int(f[1])
            if prev is not None and first <= prev and t <= last:
                lo = prev - prev % 10 - v / 1e6
                # any call starting before t and ending after lo?
                # (calls are assumed to take under 5 s)
                i = bisect.bisect_right(starts, t)
                j = bisect.bisect_left(starts, lo - 5000)
                hit = any(calls[k][1] >= lo for k in range(j, i))
                (near if hit else far).append(v)
            prev = t
    return near, far


def cutreport(what, title, interval_ms, *runs):
    """what: full (cut statistics and fio table) or fio (fio table only);
    runs: MODE:FIOJSON:LATPREFIX:CUTSJSON ... ; prints markdown."""
    rows = {"without": [], "with": []}
    for r in runs:
        mode, fj, lat, cj = r.split(":", 3)
        try:
            j = fio_job(fj)
        except Exception:
            rows[mode].append(None)
            continue
        c = j["write"]["clat_ns"]
        p = c.get("percentile", {})
        over = sum(v for k, v in j.get("latency_ms", {}).items())  # buckets > 1 ms
        entry = {"iops": j["write"]["iops"], "p99": p.get("99.000000", float("nan")),
                 "p999": p.get("99.900000", float("nan")), "p9999": p.get("99.990000", float("nan")),
                 "max": c.get("max", float("nan")), "over1ms": over, "win": None, "cuts": None}
        if mode == "with" and cj != "-" and os.path.exists(cj):
            cuts = json.load(open(cj))
            entry["cuts"] = cuts
            entry["win"] = classify_windows(lat, cuts["cuts"])
        rows[mode].append(entry)

    all_cuts = [c for e in rows["with"] if e and e["cuts"] for c in e["cuts"]["cuts"]]
    errors = sum(e["cuts"]["errors"] for e in rows["with"] if e and e["cuts"])
    cut_ns = [c[2] for c in all_cuts if c[2] is not None]
    rtt = [c[1] for c in all_cuts]
    if what == "full":
        print(f"Checkpoints cut during the runs with cuts: {len(all_cuts)} (one every {interval_ms} ms)"
              + (f", {errors} failed" if errors else "") + ".")
        print()
        cutstats(cut_ns, rtt)
    n_wo, n_w = len(rows["without"]), len(rows["with"])
    print(f"| {title} | without cuts ({n_wo} run{'s' if n_wo > 1 else ''}) "
          f"| with a cut every {interval_ms} ms ({n_w} run{'s' if n_w > 1 else ''}"
          f"{f', {len(all_cuts)} cuts' if what != 'full' else ''}) |")
    fiotable(rows)


def cutstats(cut_ns, rtt):
    print("| measure | value | bar |")
    print("|---|---:|---|")
    if cut_ns:
        ok = "met" if max(cut_ns) < 1e6 else "**missed**"
        print(f"| cut_ns (epoch switch in the daemon) max | {fmt_ns(max(cut_ns))} | < 1 ms: {ok} |")
        print(f"| cut_ns p99 | {fmt_ns(pct(cut_ns, 99))} | |")
        print(f"| cut_ns mean | {fmt_ns(statistics.fmean(cut_ns))} | |")
    else:
        print("| cut_ns | n/a | < 1 ms |")
    if rtt:
        print(f"| API round trip (POST .../checkpoints, incl. the seal's fdatasync) mean / p99 / max "
              f"| {fmt_ns(statistics.fmean(rtt))} / {fmt_ns(pct(rtt, 99))} / {fmt_ns(max(rtt))} | informational |")
    print()


def fiotable(rows):
    def cell(mode, f):
        return ", ".join("n/a" if e is None else f(e) for e in rows[mode]) or "n/a"

    print("|---|---|---|")
    for label, f in (("IOPS", lambda e: fmt_k(e["iops"])),
                     ("clat p99", lambda e: fmt_ns(e["p99"])),
                     ("clat p99.9", lambda e: fmt_ns(e["p999"])),
                     ("clat p99.99", lambda e: fmt_ns(e["p9999"])),
                     ("clat max", lambda e: fmt_ns(e["max"])),
                     ("requests > 1 ms", lambda e: f"{e['over1ms']:.2f}%")):
        print(f"| {label} | {cell('without', f)} | {cell('with', f)} |")

    def win(e, which):
        if not e["win"]:
            return "n/a"
        v = e["win"][which]
        if not v:
            return "none"
        over = sum(1 for x in v if x > 1e6)
        return f"max {fmt_ns(max(v))}, p99 {fmt_ns(pct(v, 99))}; {over} of {len(v)} windows > 1 ms"

    print(f"| per-job 10 ms windows whose slowest request may have overlapped a cut call | — | "
          f"{cell('with', lambda e: win(e, 0))} |")
    print(f"| per-job 10 ms windows whose slowest request cannot have overlapped one | — | "
          f"{cell('with', lambda e: win(e, 1))} |")


def nbd_handle(uri):
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def write_chunks(uri, offsets):
    """4 KiB of random data at each offset, 64 requests in flight."""
    from rcttest import nbdio
    h = nbd_handle(uri)
    nbdio.pwrite_pipelined(h, offsets)
    h.flush()
    h.shutdown()


def write_sparse(uri, size, gran, fraction, seed):
    size, gran = int(size), int(gran)
    chunks = size // gran
    n = int(chunks * float(fraction))
    rng = random.Random(int(seed))
    picked = sorted(rng.sample(range(chunks), n))
    # 4 KiB somewhere inside each chosen chunk
    write_chunks(uri, [c * gran + rng.randrange(gran // 4096) * 4096 for c in picked])
    print(n)


def write_dense(uri, span, gran):
    n = int(span) // (2 * int(gran))
    write_chunks(uri, [i * 2 * int(gran) for i in range(n)])
    print(n)


def time_changes(sock, disk, since, repeat):
    """GET changes (one page of up to 1M extents) `repeat` times over one
    connection; print extents, then each round trip in ns (body read in full)."""
    conn = UnixHTTP(sock)
    times, n = [], None
    for _ in range(int(repeat)):
        p0 = time.perf_counter_ns()
        conn.request("GET", f"/v1/disks/{disk}/changes?since={since}&limit=1000000")
        resp = conn.getresponse()
        body = resp.read()
        times.append(time.perf_counter_ns() - p0)
        if resp.status != 200:
            raise SystemExit(f"changes: HTTP {resp.status}: {body[:200]!r}")
        d = json.loads(body)
        if d.get("next_cursor") is not None:
            raise SystemExit("changes: more than one page")
        n = len(d["extents"])
    print(n, *times)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
