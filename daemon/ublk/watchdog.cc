#include "watchdog.hh"

#include "control.hh"
#include "record.hh"

#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace rct::daemon::ublk {
namespace {

void remove_devices(const std::filesystem::path& state_dir)
{
    const auto dir = state_dir / "ublk";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        if (entry.path().extension() != ".json") {
            continue;
        }
        const auto rec = read_record(entry.path());
        if (!rec) {
            continue;  // the next rctd reports it
        }
        try {
            control ctrl;
            if (auto info = ctrl.dev_info(rec->dev_id)) {
                if (info->state != state_dead) {
                    ctrl.stop_dev(rec->dev_id);
                }
                ctrl.del_dev(rec->dev_id);
            }
            remove_record(dir, rec->disk);
            log::notice("ublk watchdog: no rctd came back: removed /dev/ublkb{} of disk {}", rec->dev_id, rec->disk);
        } catch (const std::exception& e) {
            log::error("ublk watchdog: cannot remove /dev/ublkb{} of disk {}: {}", rec->dev_id, rec->disk, e.what());
        }
    }
}

}  // namespace

void start_watchdog(const std::filesystem::path& state_dir, std::chrono::seconds window)
{
    static std::once_flag once;
    std::call_once(once, [&] {
        const std::string parent = std::to_string(::getpid());
        const std::string dir = std::filesystem::absolute(state_dir).string();
        const std::string secs = std::to_string(window.count());
        std::vector<std::string> args{"rctd", "--ublk-watchdog", parent, "--state-dir", dir, "--ublk-recovery-window",
                                      secs};
        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        // A session of its own: a Ctrl-C meant for rctd must not take the
        // watchdog with it. Every fd of ours is close-on-exec, the state
        // dir lock included, so the watchdog holds none of them.
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        // rctd's threads block SIGTERM and SIGINT (main takes them with
        // sigwait); the watchdog should die of them like any process.
        sigset_t none;
        sigemptyset(&none);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
        pid_t pid = 0;
        const int r = posix_spawn(&pid, "/proc/self/exe", nullptr, &attr, argv.data(), environ);
        posix_spawnattr_destroy(&attr);
        if (r != 0) {
            throw_errno("cannot start the ublk watchdog", r);
        }
        log::debug("ublk watchdog started (pid {}, recovery window {} s)", pid, window.count());
    });
}

int run_watchdog(pid_t parent, const std::filesystem::path& state_dir, std::chrono::seconds window)
{
    // One watchdog per rctd process: a rolled-back upgrade re-executes rctd
    // under the same pid, which starts another one for it.
    const std::filesystem::path mine = state_dir / ("ublk-watchdog." + std::to_string(parent) + ".lock");
    const unique_fd held(::open(mine.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (held && ::flock(held.get(), LOCK_EX | LOCK_NB) != 0) {
        return 0;  // that rctd is watched already
    }
    const auto done = [&](int rc) {
        if (held) {
            ::unlink(mine.c_str());
        }
        return rc;
    };
    // glibc 2.36's <sys/pidfd.h> lacks extern "C"; the system call it is.
    unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, parent, 0)));
    if (pidfd) {
        pollfd p{pidfd.get(), POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
    } else if (errno != ESRCH) {
        log::error("ublk watchdog: cannot watch rctd (pid {}): {}", parent, std::strerror(errno));
        return done(1);
    }
    std::this_thread::sleep_for(window);
    unique_fd lock(::open((state_dir / "rctd.lock").c_str(), O_RDWR | O_CLOEXEC));
    if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
        return done(0);  // a new rctd runs (or the state dir is gone): not ours to touch
    }
    remove_devices(state_dir);
    return done(0);
}

}  // namespace rct::daemon::ublk
