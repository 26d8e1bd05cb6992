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
// destroyed. After a live upgrade it serves the listening sockets the
// previous rctd handed over instead.
//
// Live upgrade: POST /v1/upgrade (root only: it starts a binary as rctd)
// goes to the upgrade hook, which the main thread serves; see
// upgrade/driver.hh. While it freezes the daemon, pause() holds every other
// call off (503, "upgrade_in_progress").
#pragma once

#include "../access.hh"
#include "../ublk/frontend.hh"
#include "fd_inbox.hh"
#include "jobs.hh"

#include <rct/disk_registry.hh>
#include <rct/thread_annotations.hh>

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
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

// A live upgrade asked for over the API. The requester is a duplicate of
// the caller's connection, for whoever ends up serving to answer on it.
struct upgrade_call {
    std::string binary;
    std::chrono::milliseconds ready_timeout{10000};
    unique_fd requester;
};
// Returns the error to answer when the upgrade failed before anything was
// frozen (the daemon serves on as before). When it got further it never
// returns: the requester is answered on its own descriptor and this
// process exits (committed) or becomes the rolled-back daemon.
struct upgrade_refusal {
    unsigned status;
    std::string code;
    std::string message;
};
using upgrade_hook = std::function<upgrade_refusal(upgrade_call)>;

// Listening sockets handed over by a previous rctd.
struct inherited_control {
    unique_fd control;
    unique_fd fd_inbox;
};

class api_server {
public:
    // Starts serving at once. Throws rct::error when the socket cannot be
    // set up or the HTTP server does not start.
    // The import fd socket is socket_path + ".fd".
    api_server(disk_registry& reg, ublk::frontend& ublk, std::filesystem::path socket_path, export_addresses addrs,
               const access_policy& access, control_limits limits, upgrade_hook hook,
               inherited_control inherited = {});
    // Stops accepting, waits for running requests, unlinks the socket.
    ~api_server();
    api_server(const api_server&) = delete;
    api_server& operator=(const api_server&) = delete;

    const std::filesystem::path& socket_path() const noexcept { return socket_path_; }

    // Live upgrade. pause(): new calls are refused, running ones (but the
    // upgrade's) are waited for; false if one still runs at the deadline
    // (the pause is then lifted). release_sockets(): stop accepting, and
    // the control and fd-inbox listening sockets, still open and bound,
    // for the next rctd; clients wait in their backlogs meanwhile.
    bool pause(std::chrono::steady_clock::time_point deadline) EXCLUDES(gate_mu_);
    void resume() EXCLUDES(gate_mu_);
    std::pair<int, int> release_sockets();
    // The control and fd-inbox listening sockets (still owned here).
    std::pair<int, int> listening_sockets() const noexcept;

    // Jobs (control/jobs.hh): cancels every running one and waits for it
    // (rctd stopping, before the registry closes); how many run (an upgrade
    // is refused while any do).
    void stop_jobs();
    unsigned jobs_running() const;

private:
    class handler;  // the request handling, all in api_server.cc

    // Called by libmicrohttpd's start/close notification (handler::notify).
    void* admit(int fd) EXCLUDES(peers_mu_);
    void release(void* key) noexcept EXCLUDES(peers_mu_);
    // Every call but the upgrade passes the gate; false while paused.
    bool enter() EXCLUDES(gate_mu_);
    void leave() noexcept EXCLUDES(gate_mu_);

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
    upgrade_hook upgrade_;
    rct::mutex gate_mu_;
    rct::cond_var gate_cv_;
    unsigned active_ GUARDED_BY(gate_mu_) = 0;
    bool paused_ GUARDED_BY(gate_mu_) = false;
    int listen_fd_ = -1;
    // Last: its threads use the members above, and end first.
    control::job_table jobs_;
};

}  // namespace rct::daemon
