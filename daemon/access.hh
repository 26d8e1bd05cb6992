// access: who may do what, decided from a Unix peer's credentials
// (SO_PEERCRED and SO_PEERGROUPS) and the groups given on the command line;
// docs/security.md states the model. The policy is built once in main from
// daemon_config and only read afterwards, by the listener, the workers and
// the control API's threads, so it needs no lock.
//
// Roles: root and members of --socket-group manage (every endpoint, every
// export); members of --api-readers may call the read-only endpoints; an
// export named in --export-group DISK=GROUP may be opened only by root and
// that group's members, and never over TCP (a TCP peer has no credentials).
#pragma once

#include <rct/unique_fd.hh>

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rct::daemon {

// The credentials of the process at the other end of a Unix socket.
struct unix_peer {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups, when the kernel tells them

    bool in_group(gid_t g) const noexcept;
    std::string describe() const;
};

// The peer of fd, or nullopt when fd is not a Unix socket (TCP).
std::optional<unix_peer> peer_of_socket(int fd);

// A group name or number, resolved; throws rct::error naming it.
gid_t resolve_group(const std::string& name);

class access_policy {
public:
    std::optional<gid_t> socket_group;    // --socket-group
    std::optional<gid_t> api_readers;     // --api-readers
    std::map<std::string, gid_t, std::less<>> export_groups;  // --export-group DISK=GROUP

    bool may_manage(const unix_peer& p) const noexcept;
    bool may_read(const unix_peer& p) const noexcept;
    // peer is nullopt for TCP clients. Snapshots DISK@SNAP follow DISK.
    bool may_open(const std::optional<unix_peer>& peer, std::string_view disk) const noexcept;

    // Mode and group of the NBD and control sockets: 0600 root-only, 0660
    // with the socket group, 0666 for the control socket when --api-readers
    // lets others in (each request is then checked by its peer's uid).
    mode_t nbd_socket_mode() const noexcept { return socket_group ? 0660 : 0600; }
    mode_t control_socket_mode() const noexcept { return api_readers ? 0666 : nbd_socket_mode(); }
    // Gives an already bound socket its owner (root), group and mode;
    // throws rct::error naming it.
    void secure_socket(const std::filesystem::path& path, mode_t mode) const;
    // A listening, non-blocking Unix socket at path with that mode: a stale
    // socket there is replaced, one another process answers on is refused.
    // what names it in errors ("control socket").
    unique_fd bind_unix(const std::filesystem::path& path, mode_t mode, const char* what) const;
};

}  // namespace rct::daemon
