"""The control API's jobs (interop jobs): a long import, run as a job, shows
progress and can be cancelled, leaving nothing behind.

`cancel SOCKET STATE SRC`: a detached import of SRC (a slow file) is polled
until it has made progress (bytes done growing, a rate, a time left), a live
upgrade is refused while it runs, DELETE cancels it, it ends `cancelled` and
no disk, staging directory or job thread is left; DELETE then forgets it.
`done SOCKET SRC NAME`: an import job runs to `done` and its result is the
new disk.
"""
import json
import os
import time

from rcttest import cli, control


def call(sock, method, path, body=None, want=None):
    status, data = control.call(sock, method, path, body)
    reply = json.loads(data) if data else None
    if want is not None and status not in want:
        raise SystemExit("%s %s: HTTP %d, want %s: %s" % (method, path, status, want, data[:300]))
    return status, reply


def start_import(sock, name, src):
    """POST /v1/disks?job=true with the path form (root); returns the job."""
    _, job = call(sock, "POST", "/v1/disks?job=true", {"name": name, "import_from": src}, want={202})
    if job["state"] != "running" or not job["id"]:
        raise SystemExit("a new job should be running with an id: %r" % job)
    return job


def wait_ended(sock, job_id, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, job = call(sock, "GET", "/v1/jobs/" + job_id, want={200})
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise SystemExit("job %s still running after %d s" % (job_id, seconds))


def rctd_threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def check_progress(sock, job_id):
    """Bytes done grow; rate and time left are given while it runs."""
    seen = []
    for _ in range(30):
        _, job = call(sock, "GET", "/v1/jobs/" + job_id, want={200})
        seen.append(job["bytes_done"])
        if len(seen) >= 3 and seen[-1] > seen[-3] > 0:
            break
        time.sleep(0.3)
    else:
        raise SystemExit("no progress in 9 s: bytes_done %s" % seen)
    if job["state"] != "running" or job["bytes_total"] <= job["bytes_done"]:
        raise SystemExit("the import should still be running part way: %r" % job)
    if job["bytes_per_second"] <= 0 or job["eta_seconds"] is None or job["eta_seconds"] <= 0:
        raise SystemExit("a running job should show its rate and time left: %r" % job)
    print("   ok: progress %d -> %d of %d bytes, %.1f MiB/s, %.0f s left"
          % (seen[0], seen[-1], job["bytes_total"], job["bytes_per_second"] / 2**20, job["eta_seconds"]))


def cancel(argv):
    """cancel SOCKET STATE SRC RCTD_PID (see the module doc)."""
    sock, state, src, pid = argv[1], argv[2], argv[3], int(argv[4])
    threads = rctd_threads(pid)
    job = start_import(sock, "slow", src)
    check_progress(sock, job["id"])
    if rctd_threads(pid) <= threads:
        raise SystemExit("no thread runs the job (%d threads before, %d now)" % (threads, rctd_threads(pid)))

    status, reply = call(sock, "POST", "/v1/upgrade", {})
    if status == 200 or "job" not in json.dumps(reply):
        raise SystemExit("a live upgrade should be refused while a job runs: HTTP %d %r" % (status, reply))
    print("   ok: upgrade refused while the job runs: %s" % reply["error"]["message"])

    _, mine = call(sock, "GET", "/v1/jobs", want={200})
    if [j["id"] for j in mine["jobs"]] != [job["id"]]:
        raise SystemExit("GET /v1/jobs should list the one job: %r" % mine)

    _, reply = call(sock, "DELETE", "/v1/jobs/" + job["id"], want={202})
    if not reply["cancel_requested"]:
        raise SystemExit("DELETE of a running job should ask it to stop: %r" % reply)
    t0 = time.monotonic()
    ended = wait_ended(sock, job["id"], 20)
    if ended["state"] != "cancelled" or ended["error"]["code"] != "cancelled":
        raise SystemExit("the cancelled job ended %r" % ended)
    print("   ok: cancelled %.1f s after DELETE, at %d of %d bytes"
          % (time.monotonic() - t0, ended["bytes_done"], ended["bytes_total"]))

    call(sock, "GET", "/v1/disks/slow", want={404})
    left = [n for n in os.listdir(os.path.join(state, "disks")) if "slow" in n]
    if left:
        raise SystemExit("the cancelled import left %s in %s/disks" % (left, state))
    time.sleep(0.2)
    if rctd_threads(pid) != threads:
        raise SystemExit("rctd has %d threads after the job, %d before" % (rctd_threads(pid), threads))
    print("   ok: no disk, no staging directory, no thread left")

    call(sock, "DELETE", "/v1/jobs/" + job["id"], want={200})
    call(sock, "GET", "/v1/jobs/" + job["id"], want={404})
    call(sock, "DELETE", "/v1/jobs/" + job["id"], want={404})
    call(sock, "POST", "/v1/disks?job=true", {"name": "x", "size": 4096}, want={400})
    print("   ok: DELETE forgets the ended job; a plain create is not a job")
    return 0


def done(argv):
    """done SOCKET SRC NAME: an import job to its end."""
    sock, src, name = argv[1], argv[2], argv[3]
    job = start_import(sock, name, src)
    ended = wait_ended(sock, job["id"], 60)
    size = os.path.getsize(src)
    if ended["state"] != "done" or ended["result"]["name"] != name or ended["result"]["size"] != size:
        raise SystemExit("the import job ended %r" % ended)
    if ended["bytes_done"] != size or ended["bytes_total"] != size:
        raise SystemExit("a done job should count every byte: %r" % ended)
    print("   ok: import job done: disk %s, %d bytes" % (name, size))
    return 0


COMMANDS = {"cancel": cancel, "done": done}

if __name__ == "__main__":
    cli.run(COMMANDS)
