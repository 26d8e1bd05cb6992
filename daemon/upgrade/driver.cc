// Live upgrade: the old daemon's driver and the new daemon's takeover.
#include "driver.hh"

#include "../config.hh"
#include "../listener.hh"
#include "../worker.hh"

#include <rct/codec.hh>
#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>
#include <rct/control_api.hh>

extern char** environ;

namespace rct::daemon::upgrade {

namespace error_code = rct::control_api::error_code;
namespace {

using clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

// How long a connection may take to reach a point where it can be frozen
// before its send is stopped (and, at twice this, before it is cut off).
constexpr std::chrono::milliseconds freeze_grace{250};

upgrade_refusal refusal(std::string message)
{
    log::warn("upgrade refused: {}; serving on", message);
    return {500, error_code::upgrade_failed, std::move(message)};
}

// Only a binary root alone could have put there may become rctd.
std::string check_binary(const std::string& path)
{
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return fmt::format("cannot use {}: {}", path, std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & S_IXUSR) == 0) {
        return fmt::format("{} is not an executable file", path);
    }
    if ((st.st_uid != 0 && st.st_uid != ::geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return fmt::format("{} may be changed by others than root (owner {}, mode {:o}); refusing to run it as rctd",
                           path, st.st_uid, st.st_mode & 07777);
    }
    return {};
}

std::vector<std::string> child_args(const launch_info& l, const std::string& exe, int channel)
{
    std::vector<std::string> a = l.args;
    a.front() = exe;
    a.push_back("--takeover-fd");
    a.push_back(std::to_string(channel));
    return a;
}

std::vector<char*> c_args(std::vector<std::string>& a)
{
    std::vector<char*> v;
    for (auto& s : a) {
        v.push_back(s.data());
    }
    v.push_back(nullptr);
    return v;
}

pid_t spawn(const std::string& exe, std::vector<std::string> args, int channel)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    // dup2 onto itself clears close-on-exec: the one descriptor it inherits.
    posix_spawn_file_actions_adddup2(&fa, channel, channel);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    auto argv = c_args(args);
    pid_t pid = -1;
    const int r = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r != 0) {
        throw_errno("cannot start " + exe, r);
    }
    return pid;
}

std::string exit_text(int status)
{
    if (WIFEXITED(status)) {
        return fmt::format("exit status {}", WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return fmt::format("killed by signal {}", WTERMSIG(status));
    }
    return "stopped";
}

// How long a new daemon that gave up (or closed the channel) may take to
// exit on its own: its unwinding closes the disks it opened. Killed half
// way, it would leave them unsealed, and the rolled-back daemon would
// recover their change tracking as after a crash.
constexpr std::chrono::milliseconds exit_grace{5000};

// Ends the new daemon for good, after up to `grace` for it to exit by
// itself; returns how it ended.
std::string kill_child(pid_t pid, std::chrono::milliseconds grace = std::chrono::milliseconds(0))
{
    int status = 0;
    const auto until = clock::now() + grace;
    for (;;) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            return exit_text(status);
        }
        if (clock::now() >= until) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return "killed (it was still running)";
}

void answer_http(int fd, unsigned status, const json& body) noexcept
{
    try {
        const std::string b = body.dump(2) + "\n";
        const std::string msg = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
                                            "Connection: close\r\n\r\n{}",
                                            status, status == 200 ? "OK" : "Internal Server Error", b.size(), b);
        std::size_t done = 0;
        while (done < msg.size()) {
            const ssize_t n = ::send(fd, msg.data() + done, msg.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return;
            }
            done += static_cast<std::size_t>(n);
        }
    } catch (...) {
        // The caller is told nothing; the daemon's log says what happened.
    }
}

struct frozen {
    state st;
    std::vector<int> fds;                  // what st's indices name
    std::vector<frozen_connection> conns;  // owners of the connection sockets
    std::vector<unique_fd> sockets;        // owners of the NBD listening sockets
};

std::uint32_t add_fd(frozen& f, int fd)
{
    f.fds.push_back(fd);
    return static_cast<std::uint32_t>(f.fds.size() - 1);
}

// Everything stops here: no request is read, none is in flight, no disk is
// open. Throws only for what leaves no way back (the caller exits).
frozen freeze(serving_parts& p)
{
    frozen f;
    f.st.old_pid = static_cast<std::uint32_t>(::getpid());
    f.st.old_version = RCT_VERSION;
    f.st.frozen_at_ns = monotonic_ns();
    f.st.lock_fd = add_fd(f, p.lock_fd);
    f.sockets = p.nbd.release();
    for (const auto& s : f.sockets) {
        f.st.sockets.push_back({socket_kind::nbd, add_fd(f, s.get()), "nbd"});
    }
    const auto [control, inbox] = p.api.release_sockets();
    f.st.sockets.push_back({socket_kind::control, add_fd(f, control), "control"});
    f.st.sockets.push_back({socket_kind::fd_inbox, add_fd(f, inbox), "fd inbox"});
    std::vector<std::future<std::vector<frozen_connection>>> pending;
    for (auto& w : p.workers) {
        pending.push_back(w->freeze(freeze_grace));
    }
    for (auto& fut : pending) {
        // Every connection is frozen or cut off within twice the grace; a
        // worker that does not report back is a bug, and hanging here would
        // stop the daemon for good: exit, so that a restart recovers.
        if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
            log::error("upgrade: a worker did not freeze its connections within 10 s; exiting");
            ::_exit(1);
        }
        for (auto& c : fut.get()) {
            f.conns.push_back(std::move(c));
        }
    }
    for (auto& w : p.workers) {
        w->request_stop();
    }
    for (auto& w : p.workers) {
        w->join();
    }
    const std::int64_t drained = monotonic_ns();
    f.st.disks = p.registry.hand_off_all();
    for (auto& c : f.conns) {
        f.st.connections.push_back({add_fd(f, c.sock.get()), c.state});
    }
    log::notice("upgrade: frozen {} NBD connection(s) in {} ms ({} ms of it handing the disks off)", f.conns.size(),
                (monotonic_ns() - f.st.frozen_at_ns) / 1000000, (monotonic_ns() - drained) / 1000000);
    return f;
}

// Takes the frozen state back: this binary again, in takeover mode, with
// the same state, the pid kept. Does not return.
[[noreturn]] void roll_back(serving_parts& p, frozen& f, unique_fd requester, const std::string& why)
{
    log::error("upgrade failed: {}; taking the state back", why);
    try {
        f.st.rollback_reason = why;
        if (requester) {
            f.st.requester_fd = add_fd(f, requester.get());
        }
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) {
            throw_errno("socketpair", errno);
        }
        unique_fd mine(sv[0]);
        send_state(mine.get(), f.st, f.fds);
        mine.reset();  // the rolled-back daemon reads the state, then end of file
        auto args = child_args(p.launch, p.launch.args.front(), sv[1]);
        auto argv = c_args(args);
        ::fexecve(p.launch.self_exe.get(), argv.data(), environ);
        throw_errno("cannot re-execute rctd", errno);
    } catch (const std::exception& e) {
        log::error("upgrade rollback failed: {}; exiting (clients reconnect to the next rctd)", e.what());
    }
    ::_exit(1);
}

}  // namespace

std::string own_path()
{
    std::error_code ec;
    std::string p = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    // After a rollback the running file may have been replaced since: the
    // path, not the old file, is what the next upgrade runs.
    constexpr std::string_view deleted = " (deleted)";
    if (p.size() > deleted.size() && p.ends_with(deleted)) {
        p.resize(p.size() - deleted.size());
    }
    return ec ? std::string("/usr/sbin/rctd") : p;
}

mailbox::mailbox() : event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK))
{
    if (!event_) {
        throw_errno("eventfd", errno);
    }
}

upgrade_refusal mailbox::submit(upgrade_call c)
{
    std::future<upgrade_refusal> f;
    {
        rct::lock_guard l(mu_);
        if (call_ || reply_) {
            return {409, error_code::busy, "an upgrade is already running"};
        }
        call_.emplace(std::move(c));
        reply_.emplace();
        f = reply_->get_future();
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(event_.get(), &one, sizeof one);
    return f.get();
}

std::optional<upgrade_call> mailbox::take()
{
    std::uint64_t v;
    [[maybe_unused]] auto n = ::read(event_.get(), &v, sizeof v);
    rct::lock_guard l(mu_);
    std::optional<upgrade_call> c = std::move(call_);
    call_.reset();
    return c;
}

void mailbox::answer(upgrade_refusal r)
{
    rct::lock_guard l(mu_);
    if (reply_) {
        reply_->set_value(std::move(r));
        reply_.reset();
    }
}

namespace {

// The new daemon, started and past its HELLO.
struct child {
    pid_t pid = -1;
    unique_fd channel;
    hello h;
};

// Starts exe and waits for its HELLO. Until the state is sent, a failure
// costs nothing but the attempt: the refusal says why.
std::optional<child> start_new(serving_parts& p, const std::string& exe, clock::time_point deadline,
                               upgrade_refusal& why)
{
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        why = refusal(fmt::format("socketpair: {}", std::strerror(errno)));
        return std::nullopt;
    }
    child c;
    c.channel = unique_fd(sv[0]);
    unique_fd theirs(sv[1]);
    try {
        c.pid = spawn(exe, child_args(p.launch, exe, theirs.get()), theirs.get());
    } catch (const std::exception& e) {
        why = refusal(e.what());
        return std::nullopt;
    }
    theirs.reset();
    log::notice("upgrade: started {} as pid {}", exe, c.pid);
    try {
        auto m = receive(c.channel.get(), deadline);
        if (!m) {
            why = refusal(
                fmt::format("the new rctd ended before it said hello ({})", kill_child(c.pid, exit_grace)));
            return std::nullopt;
        }
        if (m->type != msg::hello) {
            kill_child(c.pid);
            why = refusal("the new rctd did not begin with hello");
            return std::nullopt;
        }
        c.h = decode_hello(m->payload);
    } catch (const std::exception& e) {
        const std::string how = kill_child(c.pid);
        why = refusal(fmt::format("{} (the new rctd: {})", e.what(), how));
        return std::nullopt;
    }
    return c;
}

// Sends the frozen state and commits once the new daemon is ready; any
// failure before that rolls back (and does not return).
void hand_over(serving_parts& p, frozen& f, child& c, upgrade_call& call, clock::time_point deadline)
{
    bool ending = false;  // the new rctd said it ends: let it close its disks
    try {
        send_state(c.channel.get(), f.st, f.fds);
        auto m = receive(c.channel.get(), deadline);
        ending = !m || m->type == msg::fail;
        if (!m) {
            throw error(errc::io_error, "the new rctd ended before it was ready");
        }
        if (m->type == msg::fail) {
            throw error(errc::io_error, "the new rctd gave up: " + std::string(m->payload.begin(), m->payload.end()));
        }
        if (m->type != msg::ready) {
            throw error(errc::io_error, "the new rctd sent something else than ready");
        }
        send(c.channel.get(), msg::commit, {});
    } catch (const std::exception& e) {
        const std::string how = kill_child(c.pid, ending ? exit_grace : std::chrono::milliseconds(0));
        roll_back(p, f, std::move(call.requester), fmt::format("{} ({})", e.what(), how));
    }
}

// Committed. The new daemon sends FAIL only before it has touched a client
// (docs/upgrade.md): then the state is still ours to take back. Anything
// else and it serves, or will be restarted. Returns how long I/O was held
// (-1: not reported).
std::int64_t await_serving(serving_parts& p, frozen& f, child& c, upgrade_call& call)
{
    try {
        auto m = receive(c.channel.get(), clock::now() + std::chrono::seconds(10));
        if (m && m->type == msg::fail) {
            const std::string why = "the new rctd failed after the commit, before serving: " +
                                    std::string(m->payload.begin(), m->payload.end());
            const std::string how = kill_child(c.pid, exit_grace);
            roll_back(p, f, std::move(call.requester), fmt::format("{} ({})", why, how));
        }
        if (m && m->type == msg::serving && m->payload.size() == 8) {
            return persist::load_le<std::int64_t>(m->payload.data());
        }
    } catch (const std::exception& e) {
        log::warn("upgrade: committed, but the new rctd did not confirm it serves: {}", e.what());
    }
    return -1;
}

}  // namespace

upgrade_refusal run_upgrade(serving_parts& p, upgrade_call call)
{
    const auto started = clock::now();
    const auto deadline = started + call.ready_timeout;
    const std::string exe = call.binary.empty() ? p.launch.exe_path : call.binary;
    if (auto why = check_binary(exe); !why.empty()) {
        return refusal(why);
    }
    upgrade_refusal why;
    std::optional<child> c = start_new(p, exe, deadline, why);
    if (!c) {
        return why;
    }
    if (!p.api.pause(deadline)) {
        kill_child(c->pid);
        return refusal("a management call was still running at --ready-timeout");
    }
    // A job's copy cannot move to the new rctd; paused, no new one starts.
    if (const unsigned jobs = p.api.jobs_running(); jobs > 0) {
        p.api.resume();
        kill_child(c->pid);
        return refusal(fmt::format("{} job(s) running (GET /v1/jobs): wait for them or cancel them", jobs));
    }

    frozen f = freeze(p);
    hand_over(p, f, *c, call, deadline);
    const std::int64_t held_ns = await_serving(p, f, *c, call);
    sd_notifyf(0, "MAINPID=%d\nSTATUS=handed over to pid %d", c->pid, c->pid);
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count();
    log::notice("upgrade: handed over to pid {} (version {}); I/O held {} ms; exiting", c->pid, c->h.version,
                held_ns / 1000000);
    if (call.requester) {
        answer_http(call.requester.get(), 200,
                    json{{"upgraded", true},
                         {"old", {{"pid", ::getpid()}, {"version", RCT_VERSION}}},
                         {"new", {{"pid", c->pid}, {"version", c->h.version}}},
                         {"connections", f.conns.size()},
                         {"held_ms", held_ns < 0 ? json(nullptr) : json(static_cast<double>(held_ns) / 1e6)},
                         {"took_ms", took}});
    }
    ::_exit(0);
}

unique_fd takeover::take_fd(std::uint32_t index)
{
    if (index >= fds.size() || !fds[index]) {
        throw error(errc::corrupt, fmt::format("hand-over state: descriptor {} missing or used twice", index));
    }
    return std::move(fds[index]);
}

takeover begin_takeover(int fd)
{
    takeover t;
    t.channel = unique_fd(fd);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    try {
        send(fd, msg::hello, encode_hello({static_cast<std::uint32_t>(::getpid()), RCT_VERSION}));
    } catch (const rct::error&) {
        // A rollback: the state is already in the channel, its writer gone.
    }
    auto [st, fds] = receive_state(fd, clock::now() + std::chrono::seconds(60));
    t.st = std::move(st);
    t.fds = std::move(fds);
    return t;
}

void await_commit(takeover& t)
{
    try {
        send(t.channel.get(), msg::ready, encode_hello({static_cast<std::uint32_t>(::getpid()), RCT_VERSION}));
    } catch (const rct::error&) {
        return;  // nobody to ask: a rollback, or the old daemon died
    }
    // No deadline: the old daemon either commits, or kills this process.
    auto m = receive(t.channel.get(), clock::now() + std::chrono::hours(24 * 365));
    if (m && m->type != msg::commit) {
        throw error(errc::corrupt, "hand-over channel: expected commit");
    }
}

void report_serving(takeover& t)
{
    const std::int64_t held = monotonic_ns() - t.st.frozen_at_ns;
    persist::payload_writer w;
    w.put<std::int64_t>(held);
    try {
        send(t.channel.get(), msg::serving, w.buf);
    } catch (const rct::error&) {
        // Rolled back, or the old daemon is gone: nobody waits for it.
    }
    t.channel.reset();
    if (t.st.requester_fd != state::no_fd && !t.st.rollback_reason.empty()) {
        const unique_fd r = t.take_fd(t.st.requester_fd);
        answer_http(r.get(), 500,
                    json{{"error",
                          {{"code", error_code::upgrade_failed},
                           {"message", t.st.rollback_reason + "; the old rctd took everything back and serves on"},
                           {"pid", ::getpid()},
                           {"held_ms", static_cast<double>(held) / 1e6}}}});
    }
    log::notice("{}: serving again after {} ms", t.st.rollback_reason.empty() ? "upgrade" : "rollback", held / 1000000);
}

void report_failure(int channel, const std::string& why) noexcept
{
    try {
        send(channel, msg::fail, std::vector<std::uint8_t>(why.begin(), why.begin() + std::min<std::size_t>(why.size(), 4096)));
    } catch (...) {
        // The old daemon learns of it from the channel closing.
    }
}

}  // namespace rct::daemon::upgrade
