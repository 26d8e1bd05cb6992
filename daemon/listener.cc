#include "listener.hh"

#include <rct/error.hh>
#include <rct/log.hh>

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace rct::daemon {
namespace {

// Who a client is for the per-peer limit ("uid 0", "127.0.0.1") and for the
// log ("client 7 (127.0.0.1:41234)").
struct peer_id {
    std::string key;
    std::string name;
};

peer_id identify(int fd, const sockaddr_storage& ss, socklen_t len, std::uint64_t serial)
{
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        char host[NI_MAXHOST];
        char port[NI_MAXSERV];
        if (getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                        NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
            return {host, fmt::format("client {} ({}:{})", serial, host, port)};
        }
        return {"unknown address", fmt::format("client {}", serial)};
    }
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (ss.ss_family == AF_UNIX && ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
        return {fmt::format("uid {}", cred.uid), fmt::format("client {} (uid {} pid {})", serial, cred.uid, cred.pid)};
    }
    return {"unknown peer", fmt::format("client {}", serial)};
}

unique_fd open_spare()
{
    return unique_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
}

}  // namespace

listener::listener(std::vector<std::unique_ptr<worker>>& workers, admission& slots)
    : workers_(workers), slots_(slots), spare_(open_spare()), stop_fd_(::eventfd(0, EFD_CLOEXEC))
{
    if (!stop_fd_) {
        throw_errno("eventfd", errno);
    }
}

listener::~listener()
{
    stop();
    for (const auto& p : unix_paths_) {
        std::error_code ec;
        std::filesystem::remove(p, ec);
    }
}

void listener::listen_unix(const std::filesystem::path& path, const access_policy& access)
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string s = path.string();
    if (s.size() >= sizeof addr.sun_path) {
        throw error(errc::invalid_argument, "socket path too long (max 107 bytes): " + s);
    }
    std::memcpy(addr.sun_path, s.c_str(), s.size() + 1);
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw_errno("socket", errno);
    }
    struct stat st {};
    if (::lstat(s.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            throw error(errc::exists, s + " exists and is not a socket; refusing to replace it");
        }
        // A socket nobody answers on is a leftover of a crashed daemon.
        unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
            throw error(errc::busy, "another daemon is already listening on " + s);
        }
        ::unlink(s.c_str());
    }
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        throw_errno("bind " + s, errno);
    }
    unix_paths_.push_back(path);
    access.secure_socket(path, access.nbd_socket_mode());
    if (::listen(fd.get(), SOMAXCONN) != 0) {
        throw_errno("listen " + s, errno);
    }
    log::info("listening for NBD on unix:{}", s);
    sockets_.push_back(std::move(fd));
}

void listener::listen_tcp(const std::string& spec)
{
    std::string host = spec;
    std::string port = "10809";
    if (!host.empty() && host.front() == '[') {
        const auto close = host.find(']');
        if (close == std::string::npos) {
            throw error(errc::invalid_argument, "bad TCP address: " + spec);
        }
        if (close + 1 < host.size()) {
            if (host[close + 1] != ':') {
                throw error(errc::invalid_argument, "bad TCP address: " + spec);
            }
            port = host.substr(close + 2);
        }
        host = host.substr(1, close - 1);
    } else if (const auto colon = host.rfind(':'); colon != std::string::npos) {
        port = host.substr(colon + 1);
        host = host.substr(0, colon);
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (int r = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); r != 0) {
        throw error(errc::invalid_argument, "cannot resolve " + spec + ": " + gai_strerror(r));
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, &freeaddrinfo);
    unique_fd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw_errno("socket", errno);
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
        throw_errno("bind tcp:" + spec, errno);
    }
    if (::listen(fd.get(), SOMAXCONN) != 0) {
        throw_errno("listen tcp:" + spec, errno);
    }
    log::info("listening for NBD on tcp:{}:{}", host.empty() ? "*" : host, port);
    sockets_.push_back(std::move(fd));
}

void listener::adopt_listening(unique_fd fd)
{
    log::info("listening for NBD on inherited socket {}", fd.get());
    sockets_.push_back(std::move(fd));
}

void listener::start()
{
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "rct-listener");
        loop();
    });
}

void listener::stop()
{
    if (thread_.joinable()) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(stop_fd_.get(), &one, sizeof one);
        thread_.join();
    }
}

std::vector<unique_fd> listener::release()
{
    stop();
    unix_paths_.clear();
    return std::move(sockets_);
}

worker& listener::pick_worker() noexcept
{
    // Fewest connections wins; ties rotate so equal load spreads evenly.
    const unsigned n = static_cast<unsigned>(workers_.size());
    unsigned best = next_ % n;
    for (unsigned i = 1; i < n; ++i) {
        const unsigned k = (next_ + i) % n;
        if (workers_[k]->connection_count() < workers_[best]->connection_count()) {
            best = k;
        }
    }
    next_ = best + 1;
    return *workers_[best];
}

void listener::loop() noexcept
{
    std::vector<pollfd> fds;
    for (const auto& s : sockets_) {
        fds.push_back({s.get(), POLLIN, 0});
    }
    fds.push_back({stop_fd_.get(), POLLIN, 0});
    for (;;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            log::error("listener: poll failed: {}", std::strerror(errno));
            return;
        }
        if (fds.back().revents != 0) {
            return;
        }
        for (std::size_t i = 0; i + 1 < fds.size(); ++i) {
            if (fds[i].revents != 0) {
                accept_one(fds[i].fd);
            }
        }
    }
}

void listener::accept_one(int listening) noexcept
{
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    unique_fd c(::accept4(listening, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC));
    if (!c) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            shed_one(listening, errno);
        }
        return;
    }
    const peer_id who = identify(c.get(), ss, len, ++accepted_);
    std::string why;
    std::optional<admission::ticket> slot = slots_.admit(who.key, &why);
    if (!slot) {
        // Closing at once is the refusal: the client sees EOF before the greeting.
        RCT_LOG_LIMITED(log::level::warning, "refusing {}: {}", who.name, why);
        return;
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        const int one = 1;
        ::setsockopt(c.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    // A whole 1 MiB read reply fits in one send instead of being fed
    // through the default ~200 KiB buffer in several round trips.
    const int buf = 4 << 20;
    if (::setsockopt(c.get(), SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) != 0) {
        ::setsockopt(c.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    }
    worker& w = pick_worker();
    // std::function needs a copyable callable; the socket and its slot
    // travel in a shared box and are re-owned on the worker.
    struct accepted {
        unique_fd sock;
        std::string peer;
        admission::ticket slot;
    };
    auto box = std::make_shared<accepted>(accepted{std::move(c), who.name, std::move(*slot)});
    w.post([&w, box] { w.adopt(std::move(box->sock), std::move(box->peer), std::move(box->slot)); });
}

void listener::shed_one(int listening, int err) noexcept
{
    if (!spare_) {
        spare_ = open_spare();  // lost to another thread at an earlier shed
    }
    if ((err == EMFILE || err == ENFILE) && spare_) {
        // Take the connection off the queue with the spare slot and drop it,
        // so that poll does not report the same pending client for ever.
        RCT_LOG_LIMITED(log::level::warning, "cannot accept a client: {}; closing it", std::strerror(err));
        spare_.reset();
        unique_fd dropped(::accept4(listening, nullptr, nullptr, SOCK_CLOEXEC));
        dropped.reset();
        spare_ = open_spare();
        return;
    }
    RCT_LOG_LIMITED(log::level::warning, "cannot accept a client: {}; retrying shortly", std::strerror(err));
    ::poll(nullptr, 0, 100);
}

}  // namespace rct::daemon
