"""The raw-protocol cases of tests/interop/negative.sh: a client that breaks
the NBD protocol on purpose, one case per run."""
import os
import struct
import sys

from rcttest import cli
from rcttest.rawnbd import CMD_READ, CMD_WRITE, REQ_MAGIC, closed_within, conn, go, greet, normal_read, \
    request, simple_reply


def raw(argv):
    """raw CASE SOCKET EXPORT [URI]: one abuse case against the server on
    SOCKET; URI (many-connections) is the export a real client must still
    get served meanwhile."""
    CASE, SOCK, NAME = argv[1], argv[2], argv[3]
    s = conn(SOCK)
    if CASE == "bad-client-flags":
        greet(s)
        s.sendall(struct.pack(">I", 0xFFFFFFFF))
        assert closed_within(s, 5), "server kept the connection after unknown client flags (spec: MUST drop)"
        print("   ok: unknown client flags: connection dropped")
    elif CASE == "garbage-at-once":
        s.sendall(os.urandom(4096))
        print("   info: 4 KiB of random bytes before the greeting: connection",
              "closed" if closed_within(s, 5) else "still open after 5 s")
    elif CASE == "garbage-option-magic":
        greet(s)
        s.sendall(struct.pack(">I", 3))
        s.sendall(b"GARBAGE!" * 8)
        print("   info: garbage option magic: connection",
              "closed" if closed_within(s, 5) else "still open after 5 s")
    elif CASE == "huge-option":
        greet(s)
        s.sendall(struct.pack(">I", 3))
        s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, 0xFFFFFFFF) + b"\0" * 65536)
        s.close()
        print("   ok: sent NBD_OPT_GO claiming 4 GiB of data, then hung up")
    elif CASE == "garbage-request-magic":
        go(s, NAME)
        s.sendall(b"\xde\xad\xbe\xef" + os.urandom(24))
        print("   info: garbage request magic: connection",
              "closed" if closed_within(s, 5) else "still open after 5 s")
    elif CASE == "unknown-command":
        go(s, NAME)
        request(s, 0x63, 0, 512, 0x1111)
        err, cookie = simple_reply(s)
        assert cookie == 0x1111, f"reply cookie {cookie:#x}"
        assert err == 22, f"unknown command type 0x63: error {err}, want EINVAL (22)"
        normal_read(s, 0x2222)
        print("   ok: unknown command type: EINVAL, and the connection still works")
    elif CASE == "huge-read":
        go(s, NAME)
        request(s, CMD_READ, 0, 0xFFFFFFFF, 0x3333)
        try:
            err, cookie = simple_reply(s)
        except (EOFError, ConnectionResetError):
            print("   ok: READ of 4 GiB - 1: server disconnected")
        else:
            assert err != 0, "READ of 4 GiB - 1 on a 16 MiB disk succeeded"
            print(f"   ok: READ of 4 GiB - 1: error {err}")
    elif CASE == "huge-write-then-hangup":
        go(s, NAME)
        request(s, CMD_WRITE, 0, 0xFFFFFFFF, 0x4444)
        try:
            s.sendall(b"\xee" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.close()
        print("   ok: WRITE header claiming 4 GiB - 1, 1 MiB of payload, then hung up")
    elif CASE == "write-then-hangup-mid-payload":
        go(s, NAME)
        request(s, CMD_WRITE, 1 << 20, 1 << 20, 0x5555)
        s.sendall(b"\xee" * 1000)
        s.close()
        print("   ok: WRITE of 1 MiB, 1000 bytes of payload, then hung up")
    elif CASE == "hangup-mid-header":
        go(s, NAME)
        s.sendall(struct.pack(">IHH", REQ_MAGIC, 0, CMD_READ))
        s.close()
        print("   ok: 8 bytes of a request header, then hung up")
    elif CASE == "many-connections":
        import resource, subprocess
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
        n = min(2000, min(hard, 8192) - 100)
        conns = [conn(SOCK) for _ in range(n)]
        for c in conns:
            greet(c)
        # While all of them sit idle mid-handshake, a real client is still served.
        out = subprocess.run(["nbdinfo", "--size", argv[4]], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"nbdinfo failed with {n} idle connections open: {out.stderr}")
        for c in conns:
            c.close()
        print(f"   ok: {n} idle connections held mid-handshake; another client was served meanwhile")
    else:
        sys.exit(f"unknown case {CASE}")


COMMANDS = {"raw": raw}

if __name__ == "__main__":
    cli.run(COMMANDS)
