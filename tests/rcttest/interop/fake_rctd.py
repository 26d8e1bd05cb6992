"""A new "rctd" that fails a live upgrade on purpose (upgrade_rollback.sh).

Started by the old rctd as `fake_rctd.sh MODE ARGS... --takeover-fd N`, it
speaks the hand-over protocol of docs/upgrade.md as far as MODE says and
then fails in its own way:
  exit           exits at once, before saying anything
  hang           says nothing, sleeps past any deadline
  version        says hello with a hand-over version no rctd speaks
  partial        says hello, takes the state and some descriptors, exits
  stall          says hello, takes the whole state, never says ready
  garbage        says hello, takes the state, answers a malformed message
It is a second, independent reader of the documented byte layout: if the
daemon's messages differ from docs/upgrade.md, `partial` and `stall` fail
here with a message instead of reaching the failure they are for.
"""
import os
import socket
import struct
import sys
import time

MAGIC = 0x55544352
HEADER = struct.Struct("<IHHIIQ")  # magic, type, version, payload length, fd count, reserved
HELLO, STATE, FDS, READY = 1, 2, 3, 4
VERSION = 1


def send(sock, typ, payload=b"", version=VERSION):
    sock.sendmsg([HEADER.pack(MAGIC, typ, version, len(payload), 0, 0) + payload])


def hello_payload():
    v = b"fake-0"
    return struct.pack("<I", os.getpid()) + struct.pack("<H", len(v)) + v


def receive(sock):
    fds_size = socket.CMSG_SPACE(253 * 4)
    data, anc, flags, _ = sock.recvmsg(65536 + HEADER.size, fds_size)
    fds = []
    for level, typ, raw in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds += list(struct.unpack("%di" % (len(raw) // 4), raw[:len(raw) - len(raw) % 4]))
    if not data:
        sys.exit("fake rctd: the old rctd closed the channel")
    magic, typ, version, length, nfds, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or length != len(data) - HEADER.size or nfds != len(fds):
        sys.exit("fake rctd: a message that does not match docs/upgrade.md: %r" % (HEADER.unpack_from(data),))
    return typ, data[HEADER.size:], fds


def take_state(sock, all_fds):
    typ, payload, fds = receive(sock)
    if typ != STATE or len(fds) != 1 or len(payload) != 4:
        sys.exit("fake rctd: expected the state message, got type %d" % typ)
    blob = os.pread(fds[0], 32, 0)
    if blob[:8] != b"RTSTATE1":
        sys.exit("fake rctd: the memfd does not hold a state blob")
    total = struct.unpack("<I", payload)[0]
    got = []
    while len(got) < total:
        typ, payload, fds = receive(sock)
        if typ != FDS or struct.unpack("<I", payload)[0] != len(got):
            sys.exit("fake rctd: descriptors out of order")
        got += fds
        if not all_fds:
            return
    print("fake rctd: took the state and %d descriptors" % len(got), file=sys.stderr, flush=True)


def main():
    mode = sys.argv[1]
    fd = int(sys.argv[sys.argv.index("--takeover-fd") + 1])
    sock = socket.socket(fileno=fd)
    if mode == "exit":
        sys.exit(3)
    if mode == "hang":
        time.sleep(3600)
    if mode == "version":
        send(sock, HELLO, hello_payload(), version=99)
        time.sleep(3600)
    send(sock, HELLO, hello_payload())
    if mode == "partial":
        take_state(sock, all_fds=False)
        sys.exit(4)
    take_state(sock, all_fds=True)
    if mode == "garbage":
        sock.sendmsg([b"not a hand-over message"])
    time.sleep(3600)


if __name__ == "__main__":
    main()
