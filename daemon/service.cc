#include "service.hh"

#include "worker.hh"

#include <rct/log.hh>

#include <fmt/format.h>
#include <pthread.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace rct::daemon {

namespace {

using std::chrono::milliseconds;

// The loop's timer ticks every second; a second's lateness is load, not a
// stuck worker.
constexpr milliseconds tick_slack{2000};

bool parse_number(const char* s, unsigned long long& out)
{
    if (s == nullptr || *s == '\0') {
        return false;
    }
    char* end = nullptr;
    errno = 0;
    out = std::strtoull(s, &end, 10);
    return errno == 0 && *end == '\0';
}

}  // namespace

void service_monitor::adopt_watchdog(pid_t predecessor)
{
    const char* p = std::getenv("WATCHDOG_PID");
    unsigned long long pid = 0;
    if (p != nullptr && parse_number(p, pid) && pid == static_cast<unsigned long long>(predecessor)) {
        ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    }
}

std::optional<std::chrono::microseconds> service_monitor::watchdog_interval()
{
    unsigned long long usec = 0;
    if (!parse_number(std::getenv("WATCHDOG_USEC"), usec) || usec == 0) {
        return std::nullopt;
    }
    if (const char* p = std::getenv("WATCHDOG_PID"); p != nullptr) {
        unsigned long long pid = 0;
        if (!parse_number(p, pid)) {
            return std::nullopt;
        }
        if (pid != static_cast<unsigned long long>(::getpid())) {
            return std::nullopt;
        }
    }
    return std::chrono::microseconds(usec);
}

service_monitor::service_monitor(const std::vector<std::unique_ptr<worker>>& workers,
                                 std::function<std::string()> status)
    : workers_(workers), status_(std::move(status)), watchdog_(watchdog_interval())
{
    if (std::getenv("NOTIFY_SOCKET") == nullptr) {
        return;
    }
    if (watchdog_) {
        const auto interval = std::chrono::duration_cast<milliseconds>(*watchdog_);
        stuck_ = std::max(interval / 2, tick_slack);
        period_ = std::clamp(interval / 4, milliseconds(100), milliseconds(5000));
        log::notice("systemd watchdog every {} ms: a worker stuck for {} ms stops the pings", interval.count(),
                    stuck_.count());
    } else {
        stuck_ = milliseconds(10000);
        period_ = milliseconds(5000);
    }
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "rct-service");
        run();
    });
}

service_monitor::~service_monitor()
{
    if (!thread_.joinable()) {
        return;
    }
    {
        rct::lock_guard l(mutex_);
        stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

std::optional<std::pair<unsigned, milliseconds>> service_monitor::stuck_worker() const
{
    const auto now = std::chrono::steady_clock::now();
    for (unsigned i = 0; i < workers_.size(); ++i) {
        const auto idle = std::chrono::duration_cast<milliseconds>(now - workers_[i]->last_tick());
        if (idle > stuck_) {
            return std::make_pair(i, idle);
        }
    }
    return std::nullopt;
}

bool service_monitor::wait_period()
{
    rct::unique_lock l(mutex_);
    return !wake_.wait_until(l, std::chrono::steady_clock::now() + period_, [this]() REQUIRES(mutex_) { return stop_; });
}

// Nothing here holds the mutex: status_() may wait on management locks
// (a ublk attach), which must neither delay the ping nor a stop.
void service_monitor::run()
{
    bool was_stuck = false;
    while (wait_period()) {
        const auto stuck = stuck_worker();
        if (stuck) {
            const auto msg = fmt::format("worker {} has not run for {} ms", stuck->first, stuck->second.count());
            if (!was_stuck) {
                log::error("{}: {}", msg, watchdog_ ? "no more watchdog pings" : "it serves nobody meanwhile");
            }
            sd_notify(0, ("STATUS=" + msg).c_str());
        } else {
            if (was_stuck) {
                log::notice("every worker runs again");
            }
            if (watchdog_) {
                sd_notify(0, "WATCHDOG=1");
            }
            sd_notify(0, ("STATUS=" + status_()).c_str());
        }
        was_stuck = stuck.has_value();
    }
}

}  // namespace rct::daemon
