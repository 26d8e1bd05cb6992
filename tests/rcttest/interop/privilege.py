"""Least privilege, seen from outside: what rctd leaves on disk, who can
reach its sockets, and whose authority an import uses (docs/security.md).
Run by tests/interop/privilege.sh, partly as root and partly as nobody
(setpriv), so each check is made by the user it is about.

  modes STATE [GID]          - root: nothing under STATE is open to others;
                               with GID only the sockets (0660) and STATE
                               itself (0710) are open to that group
  outsider PATH...           - nobody: every socket refuses the connection,
                               every file the open (EACCES)
  member CTL URI DATA        - a socket-group member: the API answers, the
                               snapshot export reads DATA's bytes, the path
                               form of import is refused (403)
  path_form CTL LINK VIA_DIR REAL - root: the path form refuses a link and a
                               linked directory, takes the real file
  reader CTL                 - an --api-readers member: lists, may not change
  export_denied URI          - an NBD client --export-group keeps out
"""
import json
import os
import socket
import stat
import sys

import nbd

from rcttest import cli, control

SOCKETS = ("nbd.sock", "control.sock", "control.sock.fd")


def _entries(state):
    yield state, os.lstat(state)
    for root, dirs, files in os.walk(state):
        for n in dirs + files:
            p = os.path.join(root, n)
            yield p, os.lstat(p)


def modes(argv):
    state = argv[1]
    gid = int(argv[2]) if len(argv) > 2 else None
    kinds = {}
    bad = []
    for p, st in _entries(state):
        name = os.path.basename(p)
        kinds[name] = kinds.get(name, 0) + 1
        perm = stat.S_IMODE(st.st_mode)
        if gid is not None and name in SOCKETS:
            want_group = (0o660, gid)
        elif gid is not None and p == state:
            want_group = (0o710, gid)
        else:
            want_group = None
        if st.st_uid != 0:
            bad.append(f"{p}: owner uid {st.st_uid}")
        if want_group:
            if (perm, st.st_gid) != want_group:
                bad.append(f"{p}: mode {perm:o} group {st.st_gid}, expected {want_group[0]:o} group {gid}")
        elif perm & 0o077:
            bad.append(f"{p}: mode {perm:o} is open to group or others")
    for must in ("data.raw", "chunks.dat", "disk.json", "epochs.log", "index.log", "current.map",
                 "rctd.lock", "tracking", "snapshots") + SOCKETS:
        if must not in kinds:
            bad.append(f"nothing named {must} under {state} (the test made none?)")
    print(f"   {sum(kinds.values())} entries checked under {state}")
    if bad:
        sys.exit("FAIL: " + "; ".join(bad))


def outsider(argv):
    assert os.getuid() != 0, "run this as an unprivileged user"
    bad = []
    for p in argv[1:]:
        try:
            if os.path.basename(p) in SOCKETS:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(p)
                finally:
                    s.close()
            else:
                with open(p, "rb") as f:
                    f.read(1)
            bad.append(f"uid {os.getuid()} could open {p}")
        except PermissionError:
            print(f"   refused: {p}")
    if bad:
        sys.exit("FAIL: " + "; ".join(bad))


def _api(ctl, method, path, body=None):
    status, data = control.call(ctl, method, path, body)
    return status, json.loads(data) if data else {}


def member(argv):
    ctl, uri, data = argv[1], argv[2], argv[3]
    assert os.getuid() != 0, "run this as an unprivileged user"
    status, body = _api(ctl, "GET", "/v1/disks")
    assert status == 200, (status, body)
    status, body = _api(ctl, "POST", "/v1/disks/a/checkpoints", {"name": "by-member"})
    assert status == 201, ("the socket group manages", status, body)
    h = nbd.NBD()
    h.connect_uri(uri)
    with open(data, "rb") as f:
        want = f.read()
    got = h.pread(len(want), 0)
    h.shutdown()
    assert got == want, "the snapshot export read other bytes"
    print(f"   uid {os.getuid()} (socket group): API and {uri} answer, {len(want)} bytes match")
    status, body = _api(ctl, "POST", "/v1/disks", {"name": "by-path", "import_from": data})
    assert status == 403, ("the path form is for root", status, body)
    print(f"   path-form import by uid {os.getuid()}: {status} {body['error']['message']}")


def path_form(argv):
    ctl, link, via_dir, real = argv[1:5]
    for name, path in (("via-link", link), ("via-dir", via_dir)):
        status, body = _api(ctl, "POST", "/v1/disks", {"name": name, "import_from": path})
        assert status == 400 and "symbolic link" in body["error"]["message"], (path, status, body)
        print(f"   root, {path}: {status} {body['error']['message']}")
    status, body = _api(ctl, "POST", "/v1/disks", {"name": "by-root", "import_from": real})
    assert status == 201, (status, body)
    status, body = _api(ctl, "GET", "/v1/disks")
    names = {d["name"] for d in body["disks"]}
    assert not names & {"via-link", "via-dir"}, names
    print(f"   root, {real}: imported")


def reader(argv):
    ctl = argv[1]
    status, body = _api(ctl, "GET", "/v1/disks")
    assert status == 200, (status, body)
    status, body = _api(ctl, "GET", "/v1/disks/a/checkpoints")
    assert status == 200, (status, body)
    for method, path, req in (("POST", "/v1/disks/a/checkpoints", {"name": "by-reader"}),
                              ("DELETE", "/v1/disks/b", None),
                              ("POST", "/v1/disks", {"name": "r", "size": 1048576})):
        status, body = _api(ctl, method, path, req)
        assert status == 403, (method, path, status, body)
    print(f"   uid {os.getuid()} (api reader): lists and queries; changes refused with 403")


def export_denied(argv):
    uri = argv[1]
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
    except nbd.Error as e:
        print(f"   {uri}: refused ({e.string})")
        return
    sys.exit(f"FAIL: uid {os.getuid()} opened {uri} despite --export-group")


if __name__ == "__main__":
    cli.run({"modes": modes, "outsider": outsider, "member": member, "path_form": path_form,
             "reader": reader, "export_denied": export_denied})
