"""bench/tls.sh: NBD over TLS, rctd beside nbdkit --tls=require on the same
file content, X.509 (server certificate only: fio's nbd engine lets libnbd
read no certificate files), through fio's nbd engine over
TCP on loopback; rctd in the clear on the same listener (tls = on) as the
cost of TLS itself. Servers alternate within each round; prints per-round
ratios and medians and writes JSON."""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from rcttest import fio
from rcttest.interop.tls import certs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
JOBS = {
    "4k randread x1": ["--rw=randread", "--bs=4k", "--numjobs=1"],
    "4k randread x4": ["--rw=randread", "--bs=4k", "--numjobs=4"],
    "1M seq read x1": ["--rw=read", "--bs=1M", "--numjobs=1"],
    "1M seq write x1": ["--rw=write", "--bs=1M", "--numjobs=1"],
}


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait(cmd, secs=20):
    deadline = time.time() + secs
    while subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        if time.time() > deadline:
            raise SystemExit(f"tls bench: {cmd[0]} did not come up")
        time.sleep(0.1)


def run_fio(uri, job, runtime):
    out = tempfile.mktemp(suffix=".json")
    args = ["fio", "--name=tls", "--ioengine=nbd", f"--uri={uri}", "--iodepth=32", "--time_based",
            f"--runtime={runtime}", "--ramp_time=1", "--group_reporting", "--output-format=json",
            f"--output={out}"] + JOBS[job]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    j = fio.job(out)
    os.unlink(out)
    side = j["write"] if "write" in job else j["read"]
    return side["bw_bytes"] / 1e6 if "seq" in job else side["iops"]


def main():
    rounds = int(os.environ.get("RCT_BENCH_ROUNDS", "3"))
    runtime = int(os.environ.get("RCT_BENCH_RUNTIME", "5"))
    size = os.environ.get("RCT_BENCH_SIZE", "1G")
    rctd = os.environ.get("RCTD", f"{ROOT}/build/daemon/rctd")
    rctctl = os.environ.get("RCTCTL", f"{ROOT}/build/tools/rctctl")
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tls-bench.json"
    w = tempfile.mkdtemp(prefix="rct-tls-bench.", dir=os.environ.get("RCT_BENCH_DIR", "/var/tmp"))
    procs = []
    try:
        os.makedirs(f"{w}/certs")
        certs(["certs", f"{w}/certs"])
        image = f"{w}/nbdkit.img"
        subprocess.run(["fio", "--name=fill", f"--filename={image}", "--rw=write", "--bs=1M", f"--size={size}",
                        "--ioengine=psync", "--refill_buffers", "--output=/dev/null"], check=True)
        p_rctd, p_kit = free_port(), free_port()
        state = f"{w}/state"
        os.makedirs(state)
        procs.append(subprocess.Popen([rctd, "--state-dir", state, "--listen", f"tcp:127.0.0.1:{p_rctd}",
                                       "--tls-certificates", f"{w}/certs/server", "--tls", "on"], stdout=subprocess.DEVNULL, stderr=open(f"{w}/rctd.log", "w")))
        wait([rctctl, "--state-dir", state, "list"])
        shutil.copyfile(image, f"{w}/rctd.img")
        subprocess.run([rctctl, "--state-dir", state, "import", "bench", "--from", f"{w}/rctd.img", "--move"],
                       check=True, stdout=subprocess.DEVNULL)
        procs.append(subprocess.Popen(["nbdkit", "-f", "-p", str(p_kit), "-i", "127.0.0.1", "--tls=require",
                                       f"--tls-certificates={w}/certs/server", "file", image],
                                      stdout=subprocess.DEVNULL, stderr=open(f"{w}/nbdkit.log", "w")))
        # fio's nbd engine lets libnbd read no local file (tls-certificates=),
        # so no client certificates: the server's certificate, unverified.
        client = "tls-verify-peer=false"
        uris = {
            "rctd tls": f"nbds://127.0.0.1:{p_rctd}/bench?{client}",
            "nbdkit tls": f"nbds://127.0.0.1:{p_kit}/?{client}",
            "rctd plain": f"nbd://127.0.0.1:{p_rctd}/bench",
        }
        wait(["nbdinfo", "--size", uris["nbdkit tls"]])
        results = {job: {s: [] for s in uris} for job in JOBS}
        for r in range(rounds):
            for job in JOBS:
                order = list(uris) if r % 2 == 0 else list(reversed(uris))
                for s in order:
                    results[job][s].append(run_fio(uris[s], job, runtime))
                v = results[job]
                print(f"round {r + 1} {job}: rctd tls {v['rctd tls'][-1]:.0f}, nbdkit tls {v['nbdkit tls'][-1]:.0f}, "
                      f"rctd plain {v['rctd plain'][-1]:.0f}; rctd/nbdkit "
                      f"{v['rctd tls'][-1] / v['nbdkit tls'][-1]:.2f}", flush=True)
        print("\n| job | rctd TLS | nbdkit TLS | rctd plain | rctd/nbdkit (median of rounds) | TLS/plain |")
        print("|---|---|---|---|---|---|")
        for job, v in results.items():
            med = {s: statistics.median(x) for s, x in v.items()}
            ratio = statistics.median(a / b for a, b in zip(v["rctd tls"], v["nbdkit tls"]))
            unit = "MB/s" if "seq" in job else "IOPS"
            print(f"| {job} ({unit}) | {med['rctd tls']:.0f} | {med['nbdkit tls']:.0f} | {med['rctd plain']:.0f} "
                  f"| {ratio:.2f} | {med['rctd tls'] / med['rctd plain']:.2f} |")
        meta = {"machine": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(), "size": size,
                "rounds": rounds, "runtime_s": runtime,
                "revision": subprocess.run([rctd, "--version"], capture_output=True, text=True).stdout.strip()}
        with open(out_path, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        print(f"\nJSON: {out_path}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
