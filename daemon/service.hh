// service_monitor: rctd's health as systemd sees it (sd_notify(3)).
//
// One thread, started once rctd is ready and stopped before it begins to
// stop. Every second or so it checks that each worker's event loop still
// turns (worker::last_tick(): the loop's one-second timer) and sends
//   STATUS=  a line for `systemctl status`: disks, clients, ublk devices, or
//            which worker has stopped turning and for how long;
//   WATCHDOG=1  when WatchdogSec= is set (WATCHDOG_USEC), only while every
//            worker turns. A worker stuck for half the watchdog interval (a
//            system call hung on a dead device, a livelock) stops the pings,
//            so systemd's watchdog restarts rctd; ublk devices wait for the
//            next rctd, which recovers them. A worker that moves again
//            brings the pings back before systemd acts.
// Outside systemd (no NOTIFY_SOCKET) it is not started.
//
// An rctd started by a live upgrade inherits the old one's WATCHDOG_PID;
// adopt_watchdog() makes it its own (the pings of both reach the same
// service, and the new one's MAINPID= follows), so the watchdog carries
// across any number of upgrades.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <rct/thread_annotations.hh>

#include <sys/types.h>

namespace rct::daemon {

class worker;

class service_monitor {
public:
    // status() is called on the monitor's thread; workers outlive the
    // monitor.
    service_monitor(const std::vector<std::unique_ptr<worker>>& workers, std::function<std::string()> status);
    // Stops and joins the thread.
    ~service_monitor();
    service_monitor(const service_monitor&) = delete;
    service_monitor& operator=(const service_monitor&) = delete;

    // A live upgrade's new rctd, before it starts any thread (setenv):
    // WATCHDOG_PID naming the predecessor is rewritten to this process.
    static void adopt_watchdog(pid_t predecessor);
    // The WatchdogSec= systemd asked for, if any (WATCHDOG_USEC and
    // WATCHDOG_PID as sd_watchdog_enabled(3) reads them).
    static std::optional<std::chrono::microseconds> watchdog_interval();

private:
    void run();
    // Sleeps one period; false once stopping.
    bool wait_period() EXCLUDES(mutex_);
    // The first worker whose loop has not turned for longer than `stuck`,
    // and for how long; nullopt when all turn.
    std::optional<std::pair<unsigned, std::chrono::milliseconds>> stuck_worker() const;

    const std::vector<std::unique_ptr<worker>>& workers_;
    const std::function<std::string()> status_;
    const std::optional<std::chrono::microseconds> watchdog_;
    std::chrono::milliseconds stuck_{0};
    std::chrono::milliseconds period_{0};

    rct::mutex mutex_;
    rct::cond_var wake_;
    bool stop_ GUARDED_BY(mutex_) = false;
    std::thread thread_;
};

}  // namespace rct::daemon
