#include "control/fd_inbox.hh"

#include <rct/error.hh>
#include <rct/log.hh>

#include <fmt/format.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rct::daemon {
namespace {

constexpr auto ticket_life = std::chrono::seconds(60);
constexpr std::size_t max_per_uid = 8;
constexpr std::size_t max_held = 64;

std::string random_ticket()
{
    unsigned char b[16];
    if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) {
        throw_errno("getrandom", errno);
    }
    std::string out;
    for (unsigned char c : b) {
        out += fmt::format("{:02x}", c);
    }
    return out;
}

// The one fd of an SCM_RIGHTS message (any extra ones are closed), or an
// invalid fd.
unique_fd receive_fd(int conn)
{
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC) <= 0) {
        return {};
    }
    unique_fd first;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < n; ++i) {
            int fd = -1;
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            unique_fd owned(fd);
            if (!first) {
                first = std::move(owned);
            }
        }
    }
    return first;
}

}  // namespace

fd_inbox::fd_inbox(std::filesystem::path path, const access_policy& access, unique_fd inherited)
    : path_(std::move(path)), access_(access), bound_here_(!inherited),
      listen_(inherited ? std::move(inherited) : access.bind_unix(path_, access.control_socket_mode(), "import fd socket")),
      stop_(::eventfd(0, EFD_CLOEXEC))
{
    if (!stop_) {
        throw_errno("eventfd", errno);
    }
    thread_ = std::thread([this] { run(); });
}

fd_inbox::~fd_inbox()
{
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto w = ::write(stop_.get(), &one, sizeof one);
    if (thread_.joinable()) {
        thread_.join();
        if (bound_here_) {
            ::unlink(path_.c_str());
        }
    }
}

int fd_inbox::release()
{
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto w = ::write(stop_.get(), &one, sizeof one);
    thread_.join();
    return listen_.get();
}

void fd_inbox::run()
{
    ::pthread_setname_np(::pthread_self(), "rct-fdinbox");
    for (;;) {
        pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0 && errno != EINTR) {
            log::error("import fd socket: poll: {}", std::strerror(errno));
            return;
        }
        if (p[1].revents != 0) {
            return;
        }
        unique_fd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (conn) {
            serve(conn.get());
        }
    }
}

void fd_inbox::serve(int conn)
{
    const timeval two_seconds{2, 0};
    ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &two_seconds, sizeof two_seconds);
    ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &two_seconds, sizeof two_seconds);
    const auto peer = peer_of_socket(conn);
    std::string reply;
    std::string ticket;
    if (!peer || !access_.may_manage(*peer)) {
        reply = "ERR importing needs root or the socket group\n";
    } else if (unique_fd fd = receive_fd(conn); !fd) {
        reply = "ERR send one byte with one file descriptor (SCM_RIGHTS)\n";
    } else if (std::string why = admit(std::move(fd), peer->uid, ticket); !why.empty()) {
        reply = "ERR " + why + "\n";
    } else {
        reply = "OK " + ticket + "\n";
    }
    [[maybe_unused]] const auto w = ::send(conn, reply.data(), reply.size(), MSG_NOSIGNAL);
}

std::string fd_inbox::admit(unique_fd fd, uid_t uid, std::string& ticket)
{
    const int flags = ::fcntl(fd.get(), F_GETFL);
    struct stat st {};
    if (flags < 0 || (flags & O_ACCMODE) == O_WRONLY || (flags & O_PATH) != 0) {
        return "the file descriptor is not open for reading";
    }
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        return "the file descriptor is not a regular file";
    }
    rct::lock_guard lock(mutex_);
    drop_expired();
    std::size_t mine = 0;
    for (const auto& [t, h] : tickets_) {
        mine += h.uid == uid ? 1 : 0;
    }
    if (mine >= max_per_uid || tickets_.size() >= max_held) {
        return "too many files waiting to be imported; try again in a minute";
    }
    ticket = random_ticket();
    tickets_.emplace(ticket, held{std::move(fd), uid, std::chrono::steady_clock::now() + ticket_life});
    return {};
}

void fd_inbox::drop_expired()
{
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(tickets_, [&](const auto& e) { return e.second.expires <= now; });
}

unique_fd fd_inbox::take(const std::string& ticket, uid_t uid)
{
    rct::lock_guard lock(mutex_);
    drop_expired();
    const auto it = tickets_.find(ticket);
    if (it == tickets_.end() || it->second.uid != uid) {
        throw error(errc::invalid_argument,
                    "'import_fd' names no file this caller passed in the last minute (tickets are single-use)");
    }
    unique_fd fd = std::move(it->second.fd);
    tickets_.erase(it);
    return fd;
}

}  // namespace rct::daemon
