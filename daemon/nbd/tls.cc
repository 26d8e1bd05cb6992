#include "tls.hh"

#include <rct/error.hh>
#include <rct/log.hh>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <thread>

namespace rct::daemon {
namespace {

// TLS 1.2 and 1.3 only (the NBD spec asks for at least 1.2).
constexpr const char* x509_priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
constexpr const char* psk_priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK";
constexpr std::size_t inbound_buffer = 64 * 1024;
// Up to a whole 1 MiB read reply per receive, sent as 16 KiB records.
constexpr std::size_t outbound_buffer = 1024 * 1024;

[[noreturn]] void fail(const std::string& what, int r)
{
    throw error(errc::invalid_argument, "TLS: " + what + ": " + gnutls_strerror(r));
}

void require_readable(const std::filesystem::path& p)
{
    if (::access(p.c_str(), R_OK) != 0) {
        throw error(errc::invalid_argument, "TLS: cannot read " + p.string() + ": " + std::strerror(errno));
    }
}

bool is_hex(std::string_view s)
{
    return !s.empty() && s.size() % 2 == 0 &&
           s.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
}

// GnuTLS reads the file itself at each handshake (so keys can be changed
// without a restart); this only makes a broken file an error at start.
void check_psk_file(const std::filesystem::path& p)
{
    require_readable(p);
    std::ifstream in(p);
    std::string line;
    unsigned n = 0;
    unsigned keys = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.empty()) {
            continue;
        }
        const auto colon = line.find(':');
        if (colon == 0 || colon == std::string::npos || !is_hex(std::string_view(line).substr(colon + 1))) {
            throw error(errc::invalid_argument,
                        "TLS: " + p.string() + ":" + std::to_string(n) + ": expected USERNAME:HEXKEY");
        }
        ++keys;
    }
    if (keys == 0) {
        throw error(errc::invalid_argument, "TLS: " + p.string() + " holds no key");
    }
}

void set_timeout(int fd, int opt, unsigned seconds) noexcept
{
    timeval tv{};
    tv.tv_sec = seconds;
    ::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

bool write_all(int fd, const std::byte* p, std::size_t n) noexcept
{
    while (n != 0) {
        const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

}  // namespace

std::optional<tls_mode> parse_tls_mode(std::string_view s)
{
    if (s == "off") {
        return tls_mode::off;
    }
    if (s == "on") {
        return tls_mode::on;
    }
    if (s == "require") {
        return tls_mode::require;
    }
    return std::nullopt;
}

std::string_view to_string(tls_mode m)
{
    switch (m) {
    case tls_mode::on:
        return "on";
    case tls_mode::require:
        return "require";
    default:
        return "off";
    }
}

bool tls_settings::may_open(std::string_view disk, const std::string* identity) const
{
    const auto it = export_identities.find(disk);
    return it == export_identities.end() || (identity != nullptr && it->second.contains(*identity));
}

std::string tls_session::identity() const
{
    rct::lock_guard l(mu_);
    return identity_;
}

void tls_session::set_identity(std::string id)
{
    rct::lock_guard l(mu_);
    identity_ = std::move(id);
}

struct tls_server::credentials {
    gnutls_certificate_credentials_t x509 = nullptr;
    gnutls_psk_server_credentials_t psk = nullptr;
    gnutls_priority_t priority = nullptr;
    bool verify_peer = false;

    credentials() = default;
    credentials(const credentials&) = delete;
    credentials& operator=(const credentials&) = delete;
    ~credentials()
    {
        if (priority != nullptr) {
            gnutls_priority_deinit(priority);
        }
        if (x509 != nullptr) {
            gnutls_certificate_free_credentials(x509);
        }
        if (psk != nullptr) {
            gnutls_psk_free_server_credentials(psk);
        }
    }

    void load_x509(const std::filesystem::path& dir, bool verify)
    {
        const auto cert = dir / "server-cert.pem";
        const auto key = dir / "server-key.pem";
        require_readable(cert);
        require_readable(key);
        if (int r = gnutls_certificate_allocate_credentials(&x509); r < 0) {
            fail("allocating credentials", r);
        }
        if (int r = gnutls_certificate_set_x509_key_file(x509, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM); r < 0) {
            fail(cert.string() + " and " + key.string(), r);
        }
        const auto ca = dir / "ca-cert.pem";
        if (verify) {
            require_readable(ca);
            const int r = gnutls_certificate_set_x509_trust_file(x509, ca.c_str(), GNUTLS_X509_FMT_PEM);
            if (r < 0) {
                fail(ca.string(), r);
            }
            if (r == 0) {
                throw error(errc::invalid_argument, "TLS: " + ca.string() + " holds no certificate");
            }
            const auto crl = dir / "ca-crl.pem";
            if (::access(crl.c_str(), F_OK) == 0) {
                if (int c = gnutls_certificate_set_x509_crl_file(x509, crl.c_str(), GNUTLS_X509_FMT_PEM); c < 0) {
                    fail(crl.string(), c);
                }
            }
        }
        gnutls_certificate_set_known_dh_params(x509, GNUTLS_SEC_PARAM_MEDIUM);
        verify_peer = verify;
        init_priority(x509_priority);
    }

    void load_psk(const std::filesystem::path& file)
    {
        check_psk_file(file);
        if (int r = gnutls_psk_allocate_server_credentials(&psk); r < 0) {
            fail("allocating credentials", r);
        }
        if (int r = gnutls_psk_set_server_credentials_file(psk, file.c_str()); r < 0) {
            fail(file.string(), r);
        }
        gnutls_psk_set_server_known_dh_params(psk, GNUTLS_SEC_PARAM_MEDIUM);
        init_priority(psk_priority);
    }

    void init_priority(const char* p)
    {
        if (int r = gnutls_priority_init(&priority, p, nullptr); r < 0) {
            fail("priority string", r);
        }
    }
};

// Lives as long as either of its threads; see tls.hh.
class tls_server::tunnel {
public:
    tunnel(tls_server& srv, unique_fd plain, std::span<const std::byte> early, std::string peer, deadlines d)
        : srv_(srv), plain_(std::move(plain)), rx_(std::max(inbound_buffer, early.size())), rx_len_(early.size()),
          peer_(std::move(peer)), deadlines_(d)
    {
        std::copy(early.begin(), early.end(), rx_.begin());
    }
    ~tunnel()
    {
        if (s_ != nullptr) {
            gnutls_deinit(s_);
        }
        srv_.forget(this);
    }
    tunnel(const tunnel&) = delete;
    tunnel& operator=(const tunnel&) = delete;

    std::shared_ptr<tls_session> session = std::make_shared<tls_session>();

    // A GnuTLS error code.
    int init() noexcept
    {
        const credentials& c = *srv_.creds_;
        int r = gnutls_init(&s_, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
        if (r >= 0) {
            r = gnutls_priority_set(s_, c.priority);
        }
        if (r >= 0) {
            r = c.psk != nullptr ? gnutls_credentials_set(s_, GNUTLS_CRD_PSK, c.psk)
                                 : gnutls_credentials_set(s_, GNUTLS_CRD_CERTIFICATE, c.x509);
        }
        if (r < 0) {
            return r;
        }
        if (c.verify_peer) {
            gnutls_certificate_server_set_request(s_, GNUTLS_CERT_REQUIRE);
            gnutls_session_set_verify_cert(s_, nullptr, 0);
        }
        // The whole handshake's deadline (through pull_timeout); the socket
        // timeouts bound each single wait as well.
        gnutls_handshake_set_timeout(s_, deadlines_.handshake_s * 1000u);
        gnutls_transport_set_ptr(s_, this);
        gnutls_transport_set_pull_function(s_, &tunnel::pull);
        gnutls_transport_set_pull_timeout_function(s_, &tunnel::pull_timeout);
        gnutls_transport_set_push_function(s_, &tunnel::push);
        return 0;
    }

    // The client's socket, taken before the threads start (and given back
    // if they cannot).
    void adopt(unique_fd& client) noexcept { client_ = std::move(client); }
    void give_back(unique_fd& client) noexcept { client = std::move(client_); }

    void shut() noexcept
    {
        ::shutdown(client_.get(), SHUT_RDWR);
        ::shutdown(plain_.get(), SHUT_RDWR);
    }

    static void run(const std::shared_ptr<tunnel>& self) noexcept
    {
        ::pthread_setname_np(::pthread_self(), "rct-tls");
        if (!self->handshake()) {
            self->shut();
            return;
        }
        try {
            std::thread([self] {
                ::pthread_setname_np(::pthread_self(), "rct-tls-out");
                self->outbound();
            }).detach();
        } catch (const std::exception& e) {
            log::warn("{}: cannot start a TLS thread: {}", self->peer_, e.what());
            self->shut();
            return;
        }
        self->inbound();
    }

private:
    bool handshake() noexcept
    {
        if (deadlines_.handshake_s != 0) {
            set_timeout(client_.get(), SO_RCVTIMEO, deadlines_.handshake_s);
            set_timeout(client_.get(), SO_SNDTIMEO, deadlines_.handshake_s);
        }
        int r;
        do {
            r = gnutls_handshake(s_);
        } while (r < 0 && r != GNUTLS_E_AGAIN && gnutls_error_is_fatal(r) == 0);
        if (r < 0) {
            RCT_LOG_LIMITED(log::level::warning, "{}: TLS handshake failed: {}", peer_,
                            r == GNUTLS_E_AGAIN ? "timed out" : gnutls_strerror(r));
            return false;
        }
        std::string id = identity();
        log::info("{}: TLS {} {}", peer_, gnutls_protocol_get_name(gnutls_protocol_get_version(s_)),
                  id.empty() ? std::string("(no client identity)") : "as " + id);
        session->set_identity(std::move(id));
        set_timeout(client_.get(), SO_RCVTIMEO, 0);
        set_timeout(client_.get(), SO_SNDTIMEO, deadlines_.send_s);
        return true;
    }

    // The PSK username, or the client certificate's subject DN.
    std::string identity() const
    {
        if (srv_.creds_->psk != nullptr) {
            const char* u = gnutls_psk_server_get_username(s_);
            return u != nullptr ? u : "";
        }
        unsigned n = 0;
        const gnutls_datum_t* certs = gnutls_certificate_get_peers(s_, &n);
        if (certs == nullptr || n == 0) {
            return "";
        }
        gnutls_x509_crt_t crt = nullptr;
        std::string dn;
        if (gnutls_x509_crt_init(&crt) >= 0) {
            gnutls_datum_t d{};
            if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
                gnutls_x509_crt_get_dn3(crt, &d, 0) >= 0) {
                dn.assign(reinterpret_cast<const char*>(d.data), d.size);
                gnutls_free(d.data);
            }
            gnutls_x509_crt_deinit(crt);
        }
        return dn;
    }

    // Client to connection. The client's EOF or close_notify becomes the
    // connection's EOF; anything else ends both sides.
    //
    // Records that have arrived already are decrypted into one buffer and
    // passed on with one write: while it holds data, the transport does not
    // wait for more (pull answers EAGAIN), so nothing decrypted is held back
    // waiting for the client, which may be waiting for our reply.
    void inbound() noexcept
    {
        std::vector<std::byte> buf(inbound_buffer);
        std::size_t have = 0;
        for (;;) {
            rx_nonblocking_ = have > 0;
            const ssize_t n = gnutls_record_recv(s_, buf.data() + have, buf.size() - have);
            if (n == GNUTLS_E_AGAIN && have > 0) {
                if (!write_all(plain_.get(), buf.data(), have)) {
                    shut();
                    return;
                }
                have = 0;
                continue;
            }
            if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN) {
                continue;
            }
            if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
                if (write_all(plain_.get(), buf.data(), have)) {
                    ::shutdown(plain_.get(), SHUT_WR);
                } else {
                    shut();
                }
                return;
            }
            if (n < 0) {
                log::debug("{}: TLS receive failed: {}", peer_, gnutls_strerror(static_cast<int>(n)));
                shut();
                return;
            }
            have += static_cast<std::size_t>(n);
            if (have == buf.size()) {
                if (!write_all(plain_.get(), buf.data(), have)) {
                    shut();
                    return;
                }
                have = 0;
            }
        }
    }

    // Connection to client. The connection closing its end ends the session
    // with close_notify.
    void outbound() noexcept
    {
        std::vector<std::byte> buf(outbound_buffer);
        for (;;) {
            const ssize_t n = ::recv(plain_.get(), buf.data(), buf.size(), 0);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                if (n == 0) {
                    gnutls_bye(s_, GNUTLS_SHUT_WR);
                }
                shut();
                return;
            }
            if (!send_all(buf.data(), static_cast<std::size_t>(n))) {
                shut();
                return;
            }
        }
    }

    // Corked: the records of one read go out in as few sends as the socket
    // takes, not one per 16 KiB record. A socket that takes nothing within
    // --send-timeout (SO_SNDTIMEO) fails the send.
    bool send_all(const std::byte* p, std::size_t n) noexcept
    {
        gnutls_record_cork(s_);
        std::size_t off = 0;
        while (off < n) {
            const ssize_t r = gnutls_record_send(s_, p + off, n - off);
            if (r == GNUTLS_E_INTERRUPTED) {
                continue;
            }
            if (r < 0) {
                return send_failed(r);
            }
            off += static_cast<std::size_t>(r);
        }
        for (;;) {
            const int r = gnutls_record_uncork(s_, 0);
            if (r >= 0) {
                return true;
            }
            if (r != GNUTLS_E_INTERRUPTED) {
                return send_failed(r);
            }
        }
    }

    bool send_failed(ssize_t r) noexcept
    {
        RCT_LOG_LIMITED(log::level::warning, "{}: TLS send failed: {}", peer_,
                        r == GNUTLS_E_AGAIN ? "the client read nothing within --send-timeout"
                                            : gnutls_strerror(static_cast<int>(r)));
        return false;
    }

    // Transport: the bytes the NBD handshake read past STARTTLS come first.
    // Reads fill rx_ (gnutls asks for a record's header, then its body: one
    // receive serves several); without waiting while inbound() holds data.
    static ssize_t pull(gnutls_transport_ptr_t p, void* buf, std::size_t len)
    {
        auto* t = static_cast<tunnel*>(p);
        if (t->rx_at_ == t->rx_len_) {
            t->rx_at_ = t->rx_len_ = 0;
            const ssize_t n =
                ::recv(t->client_.get(), t->rx_.data(), t->rx_.size(), t->rx_nonblocking_ ? MSG_DONTWAIT : 0);
            if (n <= 0) {
                gnutls_transport_set_errno(t->s_, n < 0 ? errno : 0);
                return n;
            }
            t->rx_len_ = static_cast<std::size_t>(n);
        }
        const std::size_t n = std::min(len, t->rx_len_ - t->rx_at_);
        std::memcpy(buf, t->rx_.data() + t->rx_at_, n);
        t->rx_at_ += n;
        return static_cast<ssize_t>(n);
    }
    static int pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
    {
        auto* t = static_cast<tunnel*>(p);
        if (t->rx_at_ < t->rx_len_) {
            return 1;
        }
        pollfd pfd{t->client_.get(), POLLIN, 0};
        return ::poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : static_cast<int>(ms));
    }
    static ssize_t push(gnutls_transport_ptr_t p, const void* buf, std::size_t len)
    {
        return ::send(static_cast<tunnel*>(p)->client_.get(), buf, len, MSG_NOSIGNAL);
    }

    tls_server& srv_;
    unique_fd client_;
    unique_fd plain_;
    // Received from the client, not yet taken by gnutls (first: what the
    // handshake read past STARTTLS). Inbound thread (and the handshake).
    std::vector<std::byte> rx_;
    std::size_t rx_len_;
    std::size_t rx_at_ = 0;
    bool rx_nonblocking_ = false;
    const std::string peer_;
    const deadlines deadlines_;
    gnutls_session_t s_ = nullptr;
};

tls_server::tls_server(const tls_settings& s) : creds_(std::make_unique<credentials>())
{
    if (!s.certificates.empty()) {
        creds_->load_x509(s.certificates, s.verify_peer);
    } else {
        creds_->load_psk(s.psk_file);
    }
}

tls_server::~tls_server()
{
    rct::unique_lock l(mu_);
    for (tunnel* t : tunnels_) {
        t->shut();
    }
    gone_.wait(l, [&]() NO_THREAD_SAFETY_ANALYSIS { return tunnels_.empty(); });
}

void tls_server::forget(tunnel* t) noexcept
{
    rct::lock_guard l(mu_);
    tunnels_.erase(t);
    gone_.notify_all();
}

int tls_server::start(unique_fd& client, std::span<const std::byte> early, std::string peer, deadlines d,
                      started& out)
{
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        return -errno;
    }
    unique_fd mine(pair[0]);
    unique_fd theirs(pair[1]);
    // Room for a whole large reply on the way to the tunnel.
    const int buf = 1 << 20;
    for (int fd : pair) {
        if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) != 0) {
            ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        }
    }
    std::shared_ptr<tunnel> t;
    try {
        t = std::make_shared<tunnel>(*this, std::move(theirs), early, std::move(peer), d);
    } catch (const std::bad_alloc&) {
        return -ENOMEM;
    }
    {
        rct::lock_guard l(mu_);
        tunnels_.insert(t.get());
    }
    if (t->init() < 0) {
        return -EPROTO;
    }
    t->adopt(client);
    try {
        std::thread([t] { tunnel::run(t); }).detach();
    } catch (const std::exception&) {
        t->give_back(client);
        return -EAGAIN;
    }
    out.session = t->session;
    out.plain = std::move(mine);
    return 0;
}

}  // namespace rct::daemon
