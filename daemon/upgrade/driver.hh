// Live upgrade, both sides (docs/upgrade.md).
//
// The old daemon (run_upgrade, on the main thread): start the new binary
// with the same arguments and one end of a socketpair; wait for its HELLO
// (a wrong version or an early exit costs nothing: nothing was frozen
// yet); pause the control API; freeze: stop the listeners, freeze every
// NBD connection (connection::freeze), stop the workers (ublk queues go
// back to the kernel, which holds their I/O), close every disk cleanly;
// send the state and every descriptor; wait for READY. Then COMMIT, wait
// for SERVING, answer the caller, exit. If the new daemon exits, times
// out, or says anything else before READY, the old one kills it and takes
// its own state back by re-executing its own binary (kept open since it
// started, so replacing the file on disk does not matter) in takeover
// mode: the rolled-back daemon keeps the pid and goes through the same
// takeover path as a new one, which is tested by every upgrade.
//
// The new daemon (takeover): HELLO, receive the state, open the disks,
// resolve every connection's export, start the workers; READY; wait for
// COMMIT (or for the channel to close: the old daemon only closes it
// without COMMIT by dying, and it kills the new one before it rolls back,
// so both never serve at once). Only then does it serve: connections
// resume, listeners and the control API accept, ublk devices recover.
#pragma once

#include "../control/api_server.hh"
#include "handover.hh"

#include <rct/thread_annotations.hh>
#include <rct/unique_fd.hh>

#include <sys/types.h>

#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <vector>

namespace rct {
class disk_registry;
}

namespace rct::daemon {
class listener;
class worker;
struct daemon_config;
}  // namespace rct::daemon

namespace rct::daemon::upgrade {

// How this process was started, to start the next one the same way.
struct launch_info {
    std::vector<std::string> args;  // argv without any --takeover-fd
    std::string exe_path;           // the default binary for an upgrade
    unique_fd self_exe;             // this binary, for a rollback
    int takeover_fd = -1;           // --takeover-fd, or -1
};

// The path this binary was started from (what an upgrade runs by default:
// the file installed there by then).
std::string own_path();

// Upgrade calls from the control API's threads to the main thread.
class mailbox {
public:
    mailbox();
    int event_fd() const noexcept { return event_.get(); }
    // Control API thread: blocks until the main thread answers.
    upgrade_refusal submit(upgrade_call c) EXCLUDES(mu_);
    // Main thread.
    std::optional<upgrade_call> take() EXCLUDES(mu_);
    void answer(upgrade_refusal r) EXCLUDES(mu_);

private:
    unique_fd event_;
    rct::mutex mu_;
    std::optional<upgrade_call> call_ GUARDED_BY(mu_);
    std::optional<std::promise<upgrade_refusal>> reply_ GUARDED_BY(mu_);
};

// What the old daemon freezes and hands over.
struct serving_parts {
    const daemon_config& cfg;
    launch_info& launch;
    int lock_fd;
    listener& nbd;
    std::vector<std::unique_ptr<worker>>& workers;
    api_server& api;
    disk_registry& registry;
};

// Old side. Returns only when the upgrade failed before anything was frozen.
upgrade_refusal run_upgrade(serving_parts& p, upgrade_call call);

// New side: the state received, and the channel to report on.
struct takeover {
    unique_fd channel;
    state st;
    std::vector<unique_fd> fds;

    unique_fd take_fd(std::uint32_t index);
};
// HELLO, then the state. Throws rct::error.
takeover begin_takeover(int fd);
// READY, then waits for COMMIT or the old daemon's end.
void await_commit(takeover& t);
// SERVING; answers a rolled-back upgrade's caller.
void report_serving(takeover& t);
// Best effort: tells the old daemon why this one gives up.
void report_failure(int channel, const std::string& why) noexcept;

}  // namespace rct::daemon::upgrade
