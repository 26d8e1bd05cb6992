// ublk::watchdog: no ublk device waits forever for an rctd that is gone.
//
// While rctd is down its devices hold their I/O, so that the next rctd can
// recover them without a single error reaching a mounted filesystem. That
// must not become a hang when no rctd comes back: the watchdog, a small
// process of its own (rctd re-executed with --ublk-watchdog), waits for its
// rctd to exit, however it exits, then for the recovery window. If by then
// no rctd holds the state dir's lock, it takes the lock itself, stops and
// deletes every device recorded in STATE/ublk (their held I/O fails with
// EIO, /dev/ublkbN goes away) and removes the records. If an rctd holds the
// lock, that rctd has taken the devices over, and the watchdog just exits.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>

namespace rct::daemon::ublk {

// Starts this rctd's watchdog (once; later calls do nothing). Throws
// rct::error when it cannot be started.
void start_watchdog(const std::filesystem::path& state_dir, std::chrono::seconds window);

// The watchdog process: returns its exit status. One per rctd process: it
// holds STATE/ublk-watchdog.PID.lock while it runs, and a second one for the
// same pid (a rolled-back upgrade re-executes rctd under its pid) exits.
int run_watchdog(pid_t parent, const std::filesystem::path& state_dir, std::chrono::seconds window);

}  // namespace rct::daemon::ublk
