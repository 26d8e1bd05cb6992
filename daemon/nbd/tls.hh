// tls: NBD over TLS (NBD_OPT_STARTTLS) with GnuTLS, X.509 or PSK.
//
// The credentials are loaded once at start (tls_server; a bad file is an
// error naming it). A connection that negotiates STARTTLS gives its TCP or
// Unix socket to a tunnel and goes on, unchanged, on one end of a socketpair:
// the tunnel's two threads run the TLS handshake on the client's socket and
// then move records between it and the socketpair, one decrypting client to
// connection, the other encrypting connection to client (GnuTLS allows one
// sender and one receiver on a session at once). So the worker's io_uring
// path, its budget and deadlines are the same with and without TLS; the cost
// is one more copy through the socketpair (docs/tls.md measures it). The
// kernel's TLS offload (kTLS) would remove it, but these hosts lack the tls
// module.
//
// Ending: whichever side ends first (the client's EOF or close_notify, the
// connection closing its end, a TLS or socket error, the handshake or send
// deadline) shuts both sockets, which wakes the other thread. ~tls_server
// shuts every tunnel's sockets and waits for their threads.
//
// The session's identity (the PSK username, or the client certificate's
// subject DN) is set before the first plaintext byte reaches the connection,
// so anything the connection reads after STARTTLS was sent under it.
#pragma once

#include <rct/thread_annotations.hh>
#include <rct/unique_fd.hh>

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rct::daemon {

enum class tls_mode { off, on, require };
std::optional<tls_mode> parse_tls_mode(std::string_view s);
std::string_view to_string(tls_mode m);

struct tls_settings {
    // Per kind of listener: TCP (default require when credentials are
    // configured, else off) and Unix sockets (default off).
    tls_mode tcp = tls_mode::off;
    tls_mode unix_socket = tls_mode::off;
    // X.509: a directory with ca-cert.pem, server-cert.pem and
    // server-key.pem (the layout of qemu's tls-creds-x509 and nbdkit).
    std::filesystem::path certificates;
    bool verify_peer = false;  // demand a client certificate signed by ca-cert.pem
    // PSK: lines "username:hexkey" (psktool's format, as nbdkit and qemu).
    std::filesystem::path psk_file;
    // DISK -> identities that may open it; a disk listed here is served
    // only over TLS, to those identities.
    std::map<std::string, std::set<std::string>, std::less<>> export_identities;

    bool configured() const noexcept { return !certificates.empty() || !psk_file.empty(); }
    // May a session with this identity (nullptr: no TLS) open disk?
    bool may_open(std::string_view disk, const std::string* identity) const;
};

// What the connection learns of its TLS session.
class tls_session {
public:
    std::string identity() const;
    void set_identity(std::string id);

private:
    mutable rct::mutex mu_;
    std::string identity_ GUARDED_BY(mu_);
};

class tls_server {
public:
    // Loads and checks the credentials; throws rct::error naming the file.
    explicit tls_server(const tls_settings& s);
    ~tls_server();
    tls_server(const tls_server&) = delete;
    tls_server& operator=(const tls_server&) = delete;

    struct deadlines {
        unsigned handshake_s = 0;  // 0: none
        unsigned send_s = 0;
    };
    // Starts a tunnel on client, whose first bytes (read by the NBD
    // handshake after STARTTLS) are early, and gives the connection its end
    // of the plaintext socketpair. On success the tunnel owns client; on
    // failure (-errno) client stays with the caller.
    struct started {
        unique_fd plain;
        std::shared_ptr<const tls_session> session;
    };
    int start(unique_fd& client, std::span<const std::byte> early, std::string peer, deadlines d, started& out);

    class tunnel;  // tls.cc

private:
    friend class tunnel;
    void forget(tunnel* t) noexcept;

    struct credentials;
    std::unique_ptr<credentials> creds_;
    rct::mutex mu_;
    rct::cond_var gone_;
    std::set<tunnel*> tunnels_ GUARDED_BY(mu_);
};

}  // namespace rct::daemon
