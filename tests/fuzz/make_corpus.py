#!/usr/bin/python3
"""Writes the seed corpora of tests/fuzz/corpus/: for each harness a few
small inputs, valid ones that reach deep into the parser and invalid ones
that stop at each of its checks. Run it from anywhere after changing the
seeds; it rewrites the seed-* files and leaves the regress-* inputs
(crashes found by fuzzing, kept as regression tests) alone.

    tests/fuzz/make_corpus.py
"""
import ctypes
import json
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

# --- NBD (daemon/nbd/wire.hh) ---------------------------------------------
IHAVEOPT = 0x49484156454F5054
OPT = dict(export_name=1, abort=2, list=3, info=6, go=7, structured_reply=8,
           list_meta_context=9, set_meta_context=10)


def nbd_string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def option(opt, data=b"", length=None):
    n = len(data) if length is None else length
    return struct.pack(">QII", IHAVEOPT, OPT[opt], n) + data


def info(name, *types):
    return nbd_string(name) + struct.pack(">H", len(types)) + b"".join(struct.pack(">H", t) for t in types)


def meta(name, *queries):
    return nbd_string(name) + struct.pack(">I", len(queries)) + b"".join(map(nbd_string, queries))


def handshake_seeds():
    flags = struct.pack(">I", 3)
    return {
        "go": flags + option("go", info("d")),
        "info-name-description": flags + option("info", info("d", 1, 2, 3)) + option("go", info("", 2)),
        "meta-contexts": flags + option("structured_reply")
        + option("list_meta_context", meta("d"))
        + option("set_meta_context", meta("d", "base:allocation", "qemu:dirty-bitmap:c1"))
        + option("go", info("d")),
        "meta-wildcards": flags + option("structured_reply")
        + option("list_meta_context", meta("d", "base:", "qemu:", "qemu:dirty-bitmap:mon", "other:x"))
        + option("set_meta_context", meta("d", "qemu:dirty-bitmap:", "qemu:dirty-bitmap:c1", "base:allocation")),
        "export-name": flags + option("list") + option("export_name", b"d"),
        "snapshot-export": flags + option("go", info("d@s1", 1)),
        "bad-info-count": flags + option("go", nbd_string("d") + struct.pack(">H", 5)),
        "bad-meta-overrun": flags + option("set_meta_context", nbd_string("d") + struct.pack(">I", 2) + nbd_string("x")),
        "truncated-option": flags + option("go", info("d"), length=100),
        "bad-magic": flags + struct.pack(">QII", 0x1122334455667788, 7, 0),
        "bad-client-flags": struct.pack(">I", 0x80),
    }


REQUEST_MAGIC = 0x25609513
CMD = dict(read=0, write=1, disc=2, flush=3, trim=4, cache=5, write_zeroes=6, block_status=7)


def session(size=1 << 20, max_payload=32 << 20, read_only=False, structured=True, meta_context=True):
    bits = read_only | structured << 1 | meta_context << 2
    return struct.pack(">QIB", size, max_payload, bits)


def request(cmd, offset=0, length=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, CMD[cmd], cookie, offset, length) + payload


def request_seeds():
    return {
        "mixed": session() + request("write", 0, 8, flags=1, payload=b"abcdefgh") + request("read", 0, 4096)
        + request("flush") + request("trim", 4096, 4096) + request("write_zeroes", 8192, 4096, flags=0x12)
        + request("block_status", 0, 1 << 20, flags=8) + request("cache", 0, 512) + request("disc"),
        "read-only": session(read_only=True, structured=False, meta_context=False)
        + request("write", 0, 4, payload=b"xxxx") + request("read", 0, 512, flags=4) + request("block_status", 0, 512),
        "past-end": session(size=4096) + request("read", 4096, 1) + request("write_zeroes", 1 << 63, 1 << 31),
        "oversized-write": session(max_payload=4096) + request("write", 0, 8192),
        "bad-magic": session() + struct.pack(">IHHQQI", 0x12345678, 0, 0, 0, 0, 0),
        "unknown-command": session() + struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 99, 0, 0, 0),
    }


# --- control API (daemon/control/request.hh): "METHOD\nURL\nBODY" -------------
def control_seeds():
    def req(method, url, body=""):
        return f"{method}\n{url}\n{body}".encode()
    return {
        "version": req("GET", "/v1/version"),
        "create": req("POST", "/v1/disks", json.dumps({"name": "vm1", "size": "10G", "granularity": "64K"})),
        "import": req("POST", "/v1/disks", json.dumps({"name": "vm1", "import_from": "/srv/a.raw", "move": True})),
        "import-fd": req("POST", "/v1/disks", json.dumps({"name": "vm1", "import_fd": "0" * 32,
                                                          "import_from": "/srv/a.raw", "move": True})),
        "create-both": req("POST", "/v1/disks", json.dumps({"name": "vm1", "size": 4096, "import_from": "/a"})),
        "resize": req("POST", "/v1/disks/vm1/resize", json.dumps({"size": 1 << 30, "force": False})),
        "resize-negative": req("POST", "/v1/disks/vm1/resize", '{"size": -1.5}'),
        "checkpoint": req("POST", "/v1/disks/vm1/checkpoints", '{"name": "mon"}'),
        "checkpoint-delete": req("DELETE", "/v1/disks/vm1/checkpoints/mon"),
        "changes": req("GET", "/v1/disks/vm1/changes?since=mon&until=tue&cursor=0&limit=1000"),
        "changes-bad-limit": req("GET", "/v1/disks/vm1/changes?since=&limit=0"),
        "changes-next-page": req("GET", "/v1/disks/vm1/changes?since=mon&cursor=1048576.3.2.0"),
        "changes-bad-cursor": req("GET", "/v1/disks/vm1/changes?since=mon&cursor=1.2.3.99999999999"),
        "diff": req("GET", "/v1/disks/vm1/diff?from=mon&to=live"),
        "snapshot": req("POST", "/v1/disks/vm1/snapshots", "{}"),
        "clone": req("POST", "/v1/disks/vm1/snapshots/mon/clone", '{"name": "vm2"}'),
        "restore": req("POST", "/v1/disks/vm1/restore", '{"from": "mon", "force": true}'),
        "ublk": req("POST", "/v1/disks/vm1/ublk", ""),
        "delete-force": req("DELETE", "/v1/disks/vm1?force=maybe"),
        "wrong-method": req("PUT", "/v1/disks/vm1/resize"),
        "unknown-field": req("POST", "/v1/disks", '{"name": "d", "size": 1, "colour": "red"}'),
        "not-json": req("POST", "/v1/disks", '{"name": '),
        "no-endpoint": req("GET", "/v2/disks//x/"),
    }


# --- change tokens (lib/src/tracking/token.cc) ------------------------------
def token(disk_id, generation=1, epoch=3, size=1 << 30, granularity=65536):
    xxh = ctypes.CDLL("libxxhash.so.0")
    xxh.XXH64.restype = ctypes.c_uint64
    xxh.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    raw = bytes([1, 0, 0, 0]) + struct.pack("<I", generation) + disk_id + struct.pack("<QQI", epoch, size, granularity)
    raw += struct.pack("<I", xxh.XXH64(raw, 44, 0) & 0xffffffff)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    out = "rct1."
    for i in range(0, 48, 3):
        v = raw[i] << 16 | raw[i + 1] << 8 | raw[i + 2]
        out += "".join(alphabet[(v >> (6 * k)) & 63] for k in (3, 2, 1, 0))
    return out


def token_seeds():
    uuid = "0f5e3c1a-9b2d-4e7f-8a6b-1c2d3e4f5a6b"
    good = token(bytes.fromhex(uuid.replace("-", "")))
    return {
        "valid": good.encode(),
        "bad-checksum": (good[:-1] + ("A" if good[-1] != "A" else "B")).encode(),
        "short": good[:-4].encode(),
        "bad-char": (good[:10] + "*" + good[11:]).encode(),
        "uuid": uuid.encode(),
        "uuid-long": (uuid + "0").encode(),
    }


# --- disk.json (lib/src/disk_record.cc) ---------------------------------------
def disk_record_seeds():
    good = {"format": "rct-disk", "version": 1, "name": "vm1", "id": "0f5e3c1a-9b2d-4e7f-8a6b-1c2d3e4f5a6b",
            "size": 1 << 30, "created_at": 1700000000}

    def variant(**changes):
        d = dict(good, **changes)
        return json.dumps({k: v for k, v in d.items() if v is not None}, indent=4).encode()
    return {
        "valid": variant(),
        "resizing": variant(resize_to=2 << 30),
        "wrong-format": variant(format="rct-ublk"),
        "version-2": variant(version=2),
        "odd-size": variant(size=1000),
        "no-id": variant(id=None),
        "bad-resize": variant(resize_to=-1),
        "not-object": b"[1, 2]",
    }


# --- ublk records (daemon/ublk/record.cc): "FILENAME\nTEXT" ---------------------
def ublk_record_seeds():
    def rec(filename, **fields):
        d = {"format": "rct-ublk", "version": 1, "disk": "vm1", "disk_id": "x", "dev_id": 3}
        d.update(fields)
        return f"{filename}\n".encode() + json.dumps({k: v for k, v in d.items() if v is not None}, indent=4).encode()
    return {
        "valid": rec("vm1.json"),
        "other-file": rec("vm2.json"),
        "dev-id-too-big": rec("vm1.json", dev_id=0xffffffff),
        "no-disk-id": rec("vm1.json", disk_id=None),
        "version-2": rec("vm1.json", version=2),
    }


# --- live-upgrade state blob (docs/upgrade.md) ------------------------------
def hs(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def handover_blob(body, version=2):
    xxh = ctypes.CDLL("libxxhash.so.0")
    xxh.XXH3_64bits.restype = ctypes.c_uint64
    xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return (b"RTSTATE1" + struct.pack("<IIQQ", version, 0, len(body), xxh.XXH3_64bits(body, len(body))) + body)


def handover_seeds():
    conn_tx = (struct.pack("<I", 3) + bytes([3, 1]) + hs("client 1") + hs("d@s0") + hs("d@s0")
               + struct.pack("<IQ", 0, 0) + struct.pack("<I", 1)
               + struct.pack("<IBQI", 1, 1, 7, 2) + hs("qemu:dirty-bitmap:c1")
               + struct.pack("<I", 13) + bytes(13) + struct.pack("<I", 4) + b"\x67\x44\x66\x98")
    conn_hs = (struct.pack("<I", 4) + bytes([2, 0]) + hs("client 2") + hs("") + hs("")
               + struct.pack("<IQ", 3, 1000) + struct.pack("<I", 0)
               + struct.pack("<I", 10) + bytes(10) + struct.pack("<I", 0))
    head = (struct.pack("<I", 4242) + hs("0.1.0") + struct.pack("<q", 1) + struct.pack("<I", 0)
            + struct.pack("<I", 2) + bytes([1]) + struct.pack("<I", 1) + hs("nbd")
            + bytes([2]) + struct.pack("<I", 2) + hs("control") + struct.pack("<I", 0xffffffff) + hs(""))
    # Two disks' live maps: generation, epoch, chunks, runs (start, count).
    disks = (struct.pack("<I", 2)
             + hs("0f5e3c1a") + struct.pack("<IQQQ", 7, 3, 16384, 2) + struct.pack("<QQQQ", 0, 4, 100, 1)
             + hs("9b2d4e7f") + struct.pack("<IQQQ", 1, 1, 16, 0))
    body = head + struct.pack("<I", 2) + conn_tx + conn_hs + disks
    no_disks = struct.pack("<I", 0)
    return {
        "two-connections": bytes([5]) + handover_blob(body),
        "empty": bytes([1]) + handover_blob(head + struct.pack("<I", 0) + no_disks),
        "fd-out-of-range": bytes([2]) + handover_blob(body),
        "version-3": bytes([5]) + handover_blob(body, version=3),
        "count-lies": bytes([5]) + handover_blob(head + struct.pack("<I", 0x7fffffff)),
        "runs-lie": bytes([5]) + handover_blob(head + struct.pack("<I", 0) + struct.pack("<I", 1) + hs("x")
                                                + struct.pack("<IQQQ", 1, 1, 16, 1 << 60)),
    }


def main():
    for name, seeds in {
        "nbd_handshake": handshake_seeds(),
        "nbd_request": request_seeds(),
        "control_request": control_seeds(),
        "token": token_seeds(),
        "disk_record": disk_record_seeds(),
        "ublk_record": ublk_record_seeds(),
        "handover_state": handover_seeds(),
    }.items():
        d = CORPUS / name
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            old.unlink()
        for seed, data in seeds.items():
            (d / f"seed-{seed}").write_bytes(data)


if __name__ == "__main__":
    main()
