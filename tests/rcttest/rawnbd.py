"""A raw NBD client over a Unix socket, for breaking the protocol on purpose
(libnbd will not send what a buggy or hostile client sends)."""
import socket
import struct
import time

REQ_MAGIC, SIMPLE_MAGIC, OPT_REPLY_MAGIC = 0x25609513, 0x67446698, 0x3E889045565A9
CMD_READ, CMD_WRITE = 0, 1


def conn(sock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    return s


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError(f"server closed the connection after {len(b)}/{n} bytes")
        b += c
    return b


def greet(s):
    """Read the newstyle greeting; returns the handshake flags."""
    g = recvn(s, 18)
    assert g[:16] == b"NBDMAGICIHAVEOPT", f"bad greeting {g!r}"
    return struct.unpack(">H", g[16:])[0]


def go(s, name):
    """Fixed newstyle, NBD_OPT_GO on export name, simple replies; returns the
    export size."""
    hflags = greet(s)
    s.sendall(struct.pack(">I", 1 | (hflags & 2)))
    data = struct.pack(">I", len(name)) + name.encode() + struct.pack(">H", 0)
    s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
    size = None
    while True:
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        assert magic == OPT_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
        payload = recvn(s, ln)
        if typ & 0x80000000:
            raise RuntimeError(f"NBD_OPT_GO refused: {typ:#x} {payload!r}")
        if typ == 3 and struct.unpack(">H", payload[:2])[0] == 0:
            size = struct.unpack(">Q", payload[2:10])[0]
        if typ == 1:
            return size


def request(s, typ, offset, length, cookie, flags=0):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, typ, cookie, offset, length))


def simple_reply(s):
    """Returns (error, cookie) of a simple reply."""
    magic, err, cookie = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == SIMPLE_MAGIC, f"bad reply magic {magic:#x}"
    return err, cookie


def closed_within(s, secs):
    """True if the server closes the connection within secs (reading and
    discarding whatever it sends)."""
    s.settimeout(secs)
    end = time.monotonic() + secs
    try:
        while time.monotonic() < end:
            if not s.recv(65536):
                return True
    except (socket.timeout, TimeoutError):
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def normal_read(s, cookie):
    """A 512-byte READ at 0 that must succeed."""
    request(s, CMD_READ, 0, 512, cookie)
    err, c = simple_reply(s)
    assert (err, c) == (0, cookie), f"normal read: error {err}, cookie {c:#x}"
    recvn(s, 512)
