#include "access.hh"

#include <rct/error.hh>

#include <fmt/format.h>

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace rct::daemon {

bool unix_peer::in_group(gid_t g) const noexcept
{
    return gid == g || std::find(groups.begin(), groups.end(), g) != groups.end();
}

std::string unix_peer::describe() const { return fmt::format("uid {} gid {} (pid {})", uid, gid, pid); }

std::optional<unix_peer> peer_of_socket(int fd)
{
    int domain = 0;
    socklen_t len = sizeof domain;
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) {
        return std::nullopt;
    }
    ucred cred{};
    len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        return std::nullopt;
    }
    unix_peer p{cred.pid, cred.uid, cred.gid, {}};
    // Linux 4.13+; without it only the primary group counts.
    std::vector<gid_t> groups(64);
    len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
        const bool retry = errno == ERANGE;
        if (retry) {
            groups.resize(len / sizeof(gid_t));
        }
        // A failed call leaves len as it was: no group may be read from
        // the zeroes (they would make anyone a member of group 0).
        if (!retry || ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
            len = 0;
        }
    }
    groups.resize(len / sizeof(gid_t));
    p.groups = std::move(groups);
    return p;
}

gid_t resolve_group(const std::string& name)
{
    gid_t g = 0;
    const auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), g);
    if (ec == std::errc() && ptr == name.data() + name.size() && !name.empty()) {
        return g;
    }
    group gr{};
    group* found = nullptr;
    std::vector<char> buf(16384);
    if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        throw error(errc::invalid_argument, fmt::format("no group named '{}'", name));
    }
    return found->gr_gid;
}

bool access_policy::may_manage(const unix_peer& p) const noexcept
{
    return p.uid == 0 || (socket_group && p.in_group(*socket_group));
}

bool access_policy::may_read(const unix_peer& p) const noexcept
{
    return may_manage(p) || (api_readers && p.in_group(*api_readers));
}

bool access_policy::may_open(const std::optional<unix_peer>& peer, std::string_view disk) const noexcept
{
    const auto it = export_groups.find(disk.substr(0, disk.find('@')));
    if (it == export_groups.end()) {
        return true;  // whoever could connect
    }
    return peer && (peer->uid == 0 || peer->in_group(it->second));
}

void access_policy::secure_socket(const std::filesystem::path& path, mode_t mode) const
{
    // The path sits in a directory only we can write (or one the admin
    // chose), so nothing can swap it between bind and these calls.
    const gid_t group = socket_group.value_or(::getegid());
    if (::lchown(path.c_str(), ::geteuid(), group) != 0 || ::chmod(path.c_str(), mode) != 0) {
        throw_errno(fmt::format("cannot set owner and mode of socket {}", path.string()), errno);
    }
}

unique_fd access_policy::bind_unix(const std::filesystem::path& path, mode_t mode, const char* what) const
{
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string& p = path.native();
    if (p.empty() || p.size() >= sizeof addr.sun_path) {
        throw error(errc::invalid_argument, fmt::format("{} path '{}' is empty or longer than {} bytes", what,
                                                        p, sizeof addr.sun_path - 1));
    }
    std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);

    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        throw_errno(fmt::format("{}: socket", what), errno);
    }

    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            throw error(errc::exists, fmt::format("{} exists and is not a socket; refusing to replace it", p));
        }
        // A socket nobody answers on is a leftover of an earlier run.
        unique_fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
            throw error(errc::busy,
                        fmt::format("another process is serving the {} {} (is rctd already running?)", what, p));
        }
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
            throw_errno(fmt::format("{}: unlink stale {}", what, p), errno);
        }
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        throw_errno(fmt::format("{}: bind {}", what, p), errno);
    }
    try {
        secure_socket(path, mode);
    } catch (...) {
        ::unlink(p.c_str());
        throw;
    }
    if (::listen(fd.get(), 64) != 0) {
        const int err = errno;
        ::unlink(p.c_str());
        throw_errno(fmt::format("{} {}", what, p), err);
    }
    return fd;
}

}  // namespace rct::daemon
