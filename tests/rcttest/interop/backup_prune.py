"""rct-backup prune killed at every step: on copies of backup_chain's
repository, `prune --keep N-1` (one merge) is killed with SIGKILL before and
after each qemu-img / qemu-nbd call it makes (rcttest.interop.qemu_trap on
PATH). After each crash a restore either works or is refused because the
prune is unfinished (never a wrong image); the next prune finishes the
merge, and every remaining point restores exactly and verifies.

  crash BACKUP STATE DISK WORK
"""
import os
import shutil
import subprocess

from rcttest import cli
from rcttest.interop import backup_chain

EXIT_CONFLICT = 4


def _shims(work):
    d = os.path.join(work, "trap")
    os.makedirs(d, exist_ok=True)
    for tool in ("qemu-img", "qemu-nbd"):
        path = os.path.join(d, tool)
        with open(path, "w") as f:
            f.write('#!/bin/sh\nexec /usr/bin/python3 -m rcttest.interop.qemu_trap %s "$@"\n' % tool)
        os.chmod(path, 0o755)
    return d


def _run(backup, repo, args, env=None):
    return subprocess.run([backup, "--repo", repo] + args, capture_output=True, text=True, env=env)


def _points_in(repo, disk):
    return sorted(f[:-5] for f in os.listdir(os.path.join(repo, disk)) if f.endswith(".json"))


def _fresh(base, work):
    trial = os.path.join(work, "trial")
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(base, trial)
    return trial


def _exact(backup, repo, disk, refs, work):
    """Every point with a reference restores to it; verify finds nothing."""
    out = os.path.join(work, "trial.raw")
    for point_id in _points_in(repo, disk):
        if point_id in refs:
            r = _run(backup, repo, ["restore", disk, "--at", point_id, "--to", out])
            assert r.returncode == 0, r.stderr
            subprocess.run(["cmp", refs[point_id], out], check=True)
    r = _run(backup, repo, ["verify", disk])
    assert r.returncode == 0, r.stdout + r.stderr


def crash(argv):
    backup, disk, work = argv[1], argv[3], argv[4]
    base = os.path.join(work, "repo")
    refs = backup_chain._points(work)
    keep = len(_points_in(base, disk)) - 1
    log = os.path.join(work, "trap.log")
    tests = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PATH=_shims(work) + ":" + os.environ["PATH"], PYTHONPATH=tests, RCT_TRAP_LOG=log)
    prune = ["prune", disk, "--keep", str(keep)]
    if os.path.exists(log):
        os.remove(log)
    r = _run(backup, _fresh(base, work), prune, dict(env, RCT_TRAP_AT="0"))
    assert r.returncode == 0, r.stderr
    calls = open(log).read().split()
    assert "qemu-img" in calls, calls
    trials = 0
    for at, tool in enumerate(calls, start=1):
        for when in ("before", "after") if tool == "qemu-img" else ("before",):
            trial = _fresh(base, work)
            os.remove(log)
            r = _run(backup, trial, prune, dict(env, RCT_TRAP_AT=str(at), RCT_TRAP_WHEN=when))
            assert r.returncode == -9, (at, when, r.returncode, r.stderr)
            unfinished = os.path.exists(os.path.join(trial, disk, ".prune"))
            r = _run(backup, trial, ["restore", disk, "--to", os.path.join(work, "trial.raw")])
            if unfinished:
                assert r.returncode == EXIT_CONFLICT and "prune" in r.stderr, (at, when, r.returncode, r.stderr)
            else:
                assert r.returncode == 0, (at, when, r.stderr)
            r = _run(backup, trial, prune)
            assert r.returncode == 0, (at, when, r.stderr)
            assert ("finishing an interrupted prune" in r.stderr) == unfinished, (at, when, r.stderr)
            assert len(_points_in(trial, disk)) == keep, (at, when, _points_in(trial, disk))
            _exact(backup, trial, disk, refs, work)
            print("ok prune killed %s call %d (%s)%s: finished by the next prune, every point exact" %
                  (when, at, tool, ", restore refused meanwhile" if unfinished else ""))
            trials += 1
    shutil.rmtree(os.path.join(work, "trial"))
    print("ok %d crash points of a prune, each recovered exactly" % trials)


if __name__ == "__main__":
    cli.run({"crash": crash})
