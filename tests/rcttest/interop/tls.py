"""NBD over TLS (tests/interop/tls.sh): certificates and keys made with
GnuTLS's certtool and psktool, and the STARTTLS cases libnbd will not send
(options in the clear under FORCEDTLS, a second STARTTLS, garbage instead of
a TLS handshake, state negotiated in the clear surviving STARTTLS)."""
import os
import socket
import ssl
import struct
import subprocess

from rcttest import cli
from rcttest.rawnbd import OPT_REPLY_MAGIC, closed_within, greet, recvn

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 8, 10
REP_ACK = 1
ERR_POLICY, ERR_INVALID, ERR_TLS_REQD = 0x80000002, 0x80000003, 0x80000005

CA = "cn = rct test CA {name}\nca\ncert_signing_key\nexpiration_days = 30\n"
SERVER = ("organization = rct test\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\n"
          "tls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n")
CLIENT = "organization = rct test\ncn = {name}\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n"


def certtool(*args):
    subprocess.run(["certtool", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(root, name):
    key, cert, info = f"{root}/{name}-ca-key.pem", f"{root}/{name}-ca-cert.pem", f"{root}/{name}-ca.info"
    with open(info, "w") as f:
        f.write(CA.format(name=name))
    certtool("--generate-privkey", "--outfile", key)
    certtool("--generate-self-signed", "--load-privkey", key, "--template", info, "--outfile", cert)
    return key, cert


def make_cert(root, ca, out_dir, role, name):
    """A key and certificate in out_dir (qemu's and libnbd's file names),
    signed by ca, with ca-cert.pem beside them."""
    ca_key, ca_cert = ca
    os.makedirs(out_dir, exist_ok=True)
    info = f"{root}/{name}.info"
    with open(info, "w") as f:
        f.write(SERVER if role == "server" else CLIENT.format(name=name))
    key, cert = f"{out_dir}/{role}-key.pem", f"{out_dir}/{role}-cert.pem"
    certtool("--generate-privkey", "--outfile", key)
    certtool("--generate-certificate", "--load-ca-certificate", ca_cert, "--load-ca-privkey", ca_key,
             "--load-privkey", key, "--template", info, "--outfile", cert)
    with open(ca_cert, "rb") as src, open(f"{out_dir}/ca-cert.pem", "wb") as dst:
        dst.write(src.read())


def certs(argv):
    """certs DIR: DIR/server (rctd's), DIR/alice and DIR/bob (clients of the
    same CA), DIR/rogue (a client of another CA, which trusts rctd's CA so
    that only rctd's check can refuse it), DIR/psk/keys.psk (alice) and
    DIR/wrong/keys.psk (alice with another key)."""
    root = argv[1]
    good = make_ca(root, "good")
    other = make_ca(root, "other")
    make_cert(root, good, f"{root}/server", "server", "localhost")
    make_cert(root, good, f"{root}/alice", "client", "alice")
    make_cert(root, good, f"{root}/bob", "client", "bob")
    make_cert(root, other, f"{root}/rogue", "client", "mallory")
    with open(good[1], "rb") as src, open(f"{root}/rogue/ca-cert.pem", "wb") as dst:
        dst.write(src.read())
    for d in ("psk", "wrong"):
        os.makedirs(f"{root}/{d}")
        subprocess.run(["psktool", "-u", "alice", "-p", f"{root}/{d}/keys.psk"], check=True,
                       stdout=subprocess.DEVNULL)


def send_option(s, opt, data=b""):
    s.sendall(b"IHAVEOPT" + struct.pack(">II", opt, len(data)) + data)


def reply(s):
    """(option, type, payload) of one option reply."""
    magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
    assert magic == OPT_REPLY_MAGIC, f"bad option reply magic {magic:#x}"
    return opt, typ, recvn(s, ln)


def final_reply(s):
    """Skips NBD_REP_INFO and NBD_REP_SERVER replies; the ACK or error."""
    while True:
        opt, typ, payload = reply(s)
        if typ in (REP_ACK,) or typ & 0x80000000:
            return opt, typ, payload


def expect(s, opt, want, what):
    got_opt, typ, payload = final_reply(s)
    assert got_opt == opt, f"{what}: reply for option {got_opt}, want {opt}"
    assert typ == want, f"{what}: reply {typ:#x} ({payload!r}), want {want:#x}"
    print(f"   ok: {what}: {typ:#x}")


def go_data(name):
    return struct.pack(">I", len(name)) + name.encode() + struct.pack(">H", 0)


def opened(addr):
    """A connected socket past the greeting and client flags."""
    if isinstance(addr, tuple):
        s = socket.create_connection(addr, timeout=10)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(addr)
    flags = greet(s)
    s.sendall(struct.pack(">I", 1 | (flags & 2)))
    return s


def starttls(s, client_dir):
    send_option(s, OPT_STARTTLS)
    expect(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{client_dir}/ca-cert.pem")
    ctx.load_cert_chain(f"{client_dir}/client-cert.pem", f"{client_dir}/client-key.pem")
    return ctx.wrap_socket(s, server_hostname="localhost")


def forced(argv):
    """forced HOST PORT EXPORT CLIENT_DIR: the listener requires TLS."""
    addr, name, client = (argv[1], int(argv[2])), argv[3], argv[4]
    s = opened(addr)
    for opt, data, what in ((OPT_LIST, b"", "LIST in the clear"), (OPT_INFO, go_data(name), "INFO in the clear"),
                            (OPT_GO, go_data(name), "GO in the clear"),
                            (OPT_STRUCTURED_REPLY, b"", "STRUCTURED_REPLY in the clear")):
        send_option(s, opt, data)
        expect(s, opt, ERR_TLS_REQD, what)
    send_option(s, OPT_STARTTLS, b"x")
    expect(s, OPT_STARTTLS, ERR_INVALID, "STARTTLS with data")
    send_option(s, OPT_ABORT)
    expect(s, OPT_ABORT, REP_ACK, "ABORT in the clear")
    s.close()

    s = opened(addr)
    send_option(s, OPT_EXPORT_NAME, name.encode())
    assert closed_within(s, 5), "EXPORT_NAME in the clear was not answered by a disconnect"
    print("   ok: EXPORT_NAME in the clear: disconnected")

    s = opened(addr)
    send_option(s, OPT_STARTTLS)
    expect(s, OPT_STARTTLS, REP_ACK, "STARTTLS")
    s.sendall(os.urandom(4096))
    assert closed_within(s, 10), "garbage instead of a TLS handshake: connection still open"
    print("   ok: garbage instead of a ClientHello: disconnected")

    t = starttls(opened(addr), client)
    send_option(t, OPT_STARTTLS)
    expect(t, OPT_STARTTLS, ERR_INVALID, "a second STARTTLS")
    send_option(t, OPT_GO, go_data(name))
    expect(t, OPT_GO, REP_ACK, "GO over TLS")
    t.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 7, 0, 4096))
    magic, err, cookie = struct.unpack(">IIQ", recvn(t, 16))
    assert (magic, err, cookie) == (0x67446698, 0, 7), f"READ over TLS: {magic:#x} {err} {cookie}"
    assert len(recvn(t, 4096)) == 4096
    print("   ok: READ over TLS")
    t.close()


def selective(argv):
    """selective SOCKET EXPORT CLIENT_DIR: the Unix socket offers TLS (on):
    GO in the clear works, STARTTLS works, and what was negotiated in the
    clear is forgotten after it."""
    sock, name, client = argv[1], argv[2], argv[3]
    s = opened(sock)
    send_option(s, OPT_GO, go_data(name))
    expect(s, OPT_GO, REP_ACK, "GO in the clear on a listener with tls = on")
    s.close()
    s = opened(sock)
    send_option(s, OPT_STRUCTURED_REPLY)
    expect(s, OPT_STRUCTURED_REPLY, REP_ACK, "STRUCTURED_REPLY in the clear")
    t = starttls(s, client)
    query = struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", 1)
    query += struct.pack(">I", len("base:allocation")) + b"base:allocation"
    send_option(t, OPT_SET_META_CONTEXT, query)
    expect(t, OPT_SET_META_CONTEXT, ERR_INVALID, "SET_META_CONTEXT relying on a STRUCTURED_REPLY from before STARTTLS")
    t.close()


def plain(argv):
    """plain SOCKET: a listener with tls = off refuses STARTTLS by policy."""
    s = opened(argv[1])
    send_option(s, OPT_STARTTLS)
    expect(s, OPT_STARTTLS, ERR_POLICY, "STARTTLS where TLS is off")


if __name__ == "__main__":
    cli.run({"certs": certs, "forced": forced, "selective": selective, "plain": plain})
