// api_server: rctd's control API, HTTP/1.1 + JSON on a Unix socket
// (documented in docs/control-api.md; rctctl is its client).
//
// libmicrohttpd serves it: one internal thread accepts and each connection
// gets a thread of its own, so a long request (importing a large image)
// never holds up the others. Handlers only call the disk_registry, which is
// thread-safe, and the ublk frontend, and hold no state of their own.
// Every request is authorized by its peer's credentials (access.hh): root
// and the socket group may call everything, --api-readers the read-only
// endpoints, anyone else nothing (403). Imports read a file the caller
// opened and passed through the fd_inbox beside the socket; the path form
// is for root callers only.
//
// Limits: libmicrohttpd caps connections in all and closes idle ones; the
// per-uid cap is ours (libmicrohttpd's per-IP limit means nothing on a Unix
// socket): each new connection's SO_PEERCRED uid is counted, and one above
// its uid's share is shut down at once, before it can hold a thread.
//
// The server owns the socket path: it replaces a stale socket at start
// (refusing when another process still answers on it) and unlinks it when
// destroyed.
#pragma once

#include "../access.hh"
#include "../ublk/frontend.hh"
#include "fd_inbox.hh"

#include <rct/disk_registry.hh>
#include <rct/thread_annotations.hh>

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>

struct MHD_Daemon;

namespace rct::daemon {

// Where the NBD frontend listens, so that API replies can tell clients how
// to reach a disk.
struct export_addresses {
    std::string unix_socket;  // empty when unknown (socket activation)
    std::string tcp_host;
    int tcp_port = 0;  // 0 = no tcp
};

struct control_limits {
    unsigned max_connections = 128;
    unsigned max_per_uid = 16;
    unsigned idle_timeout = 30;  // seconds
};

class api_server {
public:
    // Starts serving at once. Throws rct::error when the socket cannot be
    // set up or the HTTP server does not start.
    // The import fd socket is socket_path + ".fd".
    api_server(disk_registry& reg, ublk::frontend& ublk, std::filesystem::path socket_path, export_addresses addrs,
               const access_policy& access, control_limits limits);
    // Stops accepting, waits for running requests, unlinks the socket.
    ~api_server();
    api_server(const api_server&) = delete;
    api_server& operator=(const api_server&) = delete;

    const std::filesystem::path& socket_path() const noexcept { return socket_path_; }

private:
    class handler;  // the request handling, all in api_server.cc

    // Called by libmicrohttpd's start/close notification (handler::notify).
    void* admit(int fd) EXCLUDES(peers_mu_);
    void release(void* key) noexcept EXCLUDES(peers_mu_);

    disk_registry& registry_;
    ublk::frontend& ublk_;
    const std::filesystem::path socket_path_;
    const export_addresses addrs_;
    const access_policy& access_;
    fd_inbox inbox_;
    ino_t socket_ino_ = 0;  // the socket we bound, so we never unlink another's
    const control_limits limits_;
    MHD_Daemon* daemon_ = nullptr;
    rct::mutex peers_mu_;
    std::map<uid_t, unsigned> per_uid_ GUARDED_BY(peers_mu_);
};

}  // namespace rct::daemon
