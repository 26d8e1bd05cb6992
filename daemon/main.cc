// rctd: serves the disks of a state directory over NBD and as ublk devices.
//
// Threads: one listener (accepts NBD clients), N workers (each an io_uring
// event loop for its connections, its ublk queues and their disk I/O), the
// control API's server threads, and this main thread, which only sets up,
// recovers ublk devices, waits for a signal and tears down. See
// docs/architecture.md.
#include "config.hh"
#include "control/api_server.hh"
#include "listener.hh"
#include "ublk/frontend.hh"
#include "ublk/watchdog.hh"
#include "upgrade/driver.hh"
#include "worker.hh"

#include <rct/buffer_pool.hh>
#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/size.hh>
#include <rct/small_file.hh>

#include <CLI/CLI.hpp>
#include <systemd/sd-daemon.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace {

using rct::daemon::daemon_config;

// The state dir is rctd's alone (0700); with a socket group or API
// readers whose sockets live in it, they may pass through it to reach the
// sockets (0710 or 0711), but not list it.
void secure_state_dir(const daemon_config& cfg)
{
    const auto& dir = cfg.state_dir;
    rct::persist::make_dirs(dir);
    const bool sockets_inside = cfg.nbd_socket.parent_path() == dir || cfg.control_socket.parent_path() == dir;
    const rct::daemon::access_policy& a = cfg.access;
    mode_t mode = 0700;
    if (sockets_inside && a.api_readers) {
        mode = 0711;
    } else if (sockets_inside && a.socket_group) {
        mode = 0710;
    }
    const gid_t group = sockets_inside && a.socket_group ? *a.socket_group : ::getegid();
    if (::chown(dir.c_str(), ::geteuid(), group) != 0 || ::chmod(dir.c_str(), mode) != 0) {
        rct::throw_errno("cannot set owner and mode of state dir " + dir.string(), errno);
    }
}

// One daemon per state directory: a second one would race the first over
// staging directories and sockets. The lock dies with the process.
rct::unique_fd lock_state_dir(const std::filesystem::path& dir)
{
    const auto path = dir / "rctd.lock";
    rct::unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd || ::fchmod(fd.get(), 0600) != 0) {
        rct::throw_errno("cannot open " + path.string(), errno);
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw rct::error(rct::errc::busy, "another rctd is already using state dir " + dir.string());
        }
        rct::throw_errno("cannot lock " + path.string(), errno);
    }
    return fd;
}

// NBD sockets beyond this would take the descriptors that disks, tracking
// persistence, snapshots and the control API need (--fd-reserve).
unsigned connection_cap(const daemon_config& cfg)
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return cfg.max_connections;
    }
    if (rl.rlim_cur <= cfg.fd_reserve + cfg.control_max_connections) {
        throw rct::error(rct::errc::invalid_argument,
                         fmt::format("the descriptor limit {} leaves nothing for NBD clients after --fd-reserve {} "
                                     "and --control-max-connections {}; raise LimitNOFILE",
                                     rl.rlim_cur, cfg.fd_reserve, cfg.control_max_connections));
    }
    const rlim_t room = rl.rlim_cur - cfg.fd_reserve - cfg.control_max_connections;
    if (room < cfg.max_connections) {
        rct::log::warn("the descriptor limit {} allows {} NBD connections, not --max-connections {}", rl.rlim_cur,
                       room, cfg.max_connections);
        return static_cast<unsigned>(room);
    }
    return cfg.max_connections;
}

// Sets the memory budget from its options; the reason when they do not fit
// together. Every request must fit a connection's share, and a share must fit
// a worker's part of the budget, or a request could wait for ever.
const char* resolve_memory(daemon_config& cfg, const std::string& budget, const std::string& share)
{
    const std::uint64_t largest = rct::buffer_pool::rounded(cfg.max_payload);
    const auto conn = rct::parse_size(share);
    if (!conn || *conn < largest) {
        return "--connection-memory must be a size of at least 32M (the largest request)";
    }
    if (budget == "auto") {
        // Room for four clients' shares per worker: one client that stops
        // reading never holds all of its worker's memory.
        cfg.memory_budget = std::max<std::uint64_t>(std::uint64_t{256} << 20, std::uint64_t{cfg.workers} * 4 * *conn);
    } else if (const auto total = rct::parse_size(budget)) {
        cfg.memory_budget = *total;
    } else {
        return "--memory-budget must be a size (e.g. 256M, 2G) or auto";
    }
    if (cfg.memory_budget / cfg.workers < *conn) {
        return "--memory-budget must give each worker at least --connection-memory (budget / workers)";
    }
    cfg.connection_memory = *conn;
    return nullptr;
}

int serve(const daemon_config& cfg, rct::daemon::upgrade::launch_info& launch, rct::daemon::upgrade::takeover* from);

// When serve() fails after opening the disks, seals them on the way out,
// once the workers (declared after it) have gone: nothing serves them any
// more. The next opener, a rolled-back upgrade's daemon above all (the old
// one sealed them before the hand-over), then finds them as after a clean
// stop, not as after a crash.
class seal_on_failure {
public:
    explicit seal_on_failure(rct::disk_registry& reg) : reg_(reg) {}
    seal_on_failure(const seal_on_failure&) = delete;
    seal_on_failure& operator=(const seal_on_failure&) = delete;
    ~seal_on_failure()
    {
        if (std::uncaught_exceptions() > unwinding_) {
            try {
                reg_.close_all();
            } catch (const std::exception& e) {
                rct::log::error("closing the disks after a failed start: {}", e.what());
            }
        }
    }

private:
    rct::disk_registry& reg_;
    const int unwinding_ = std::uncaught_exceptions();
};

// The listening sockets: handed over by the previous rctd, passed by
// systemd (the NBD socket of rctd.socket, and after a crash restart the
// control sockets this rctd stored with FDSTORE=1, by name), or our own.
rct::daemon::export_addresses set_up_listeners(const daemon_config& cfg, rct::daemon::listener& listener,
                                               rct::daemon::upgrade::takeover* from,
                                               rct::daemon::inherited_control& control)
{
    rct::daemon::export_addresses addrs;
    if (from != nullptr) {
        for (const auto& s : from->st.sockets) {
            if (s.kind == rct::daemon::upgrade::socket_kind::nbd) {
                listener.adopt_listening(from->take_fd(s.fd));
            }
        }
        // As the previous rctd knew it: its own socket, or none it could name
        // (socket activation).
        std::error_code ec;
        if (std::filesystem::is_socket(cfg.nbd_socket, ec)) {
            addrs.unix_socket = cfg.nbd_socket.string();
        }
    } else {
        char** names = nullptr;
        const int activated = sd_listen_fds_with_names(1, &names);
        if (activated < 0) {
            throw rct::error(rct::errc::invalid_argument,
                             std::string("bad socket activation environment: ") + std::strerror(-activated));
        }
        bool nbd = false;
        for (int i = 0; i < activated; ++i) {
            rct::unique_fd fd(SD_LISTEN_FDS_START + i);
            const std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
            if (name == "control") {
                control.control = std::move(fd);
            } else if (name == "fd-inbox") {
                control.fd_inbox = std::move(fd);
            } else {
                listener.adopt_listening(std::move(fd));
                nbd = true;
            }
        }
        for (int i = 0; names != nullptr && names[i] != nullptr; ++i) {
            std::free(names[i]);
        }
        std::free(names);
        if (!nbd) {
            listener.listen_unix(cfg.nbd_socket, cfg.access);
            addrs.unix_socket = cfg.nbd_socket.string();
        }
    }
    for (const auto& spec : cfg.listen) {
        if (from == nullptr) {
            listener.listen_tcp(spec.substr(4));
        }
        if (addrs.tcp_port == 0) {
            const auto rest = spec.substr(4);
            const auto colon = rest.rfind(':');
            const bool has_port = colon != std::string::npos && rest.find(']', colon) == std::string::npos;
            addrs.tcp_host = has_port ? rest.substr(0, colon) : rest;
            addrs.tcp_port = has_port ? std::atoi(rest.c_str() + colon + 1) : 10809;
        }
    }
    return addrs;
}

// Under systemd, the control sockets go into its descriptor store, so that
// after a crash the restarted rctd gets them back (callers queue in their
// backlogs meanwhile instead of finding no socket). Elsewhere a no-op.
void store_control_sockets(const rct::daemon::api_server& api)
{
    const auto [control, inbox] = api.listening_sockets();
    int fd = control;
    sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=control", &fd, 1);
    fd = inbox;
    sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=fd-inbox", &fd, 1);
}

// A handed-over connection's export, looked up again here; throws when it
// is gone (the takeover then fails and the old daemon serves on).
rct::daemon::nbd_export resolve_export(rct::disk_registry& reg, const std::string& name)
{
    rct::daemon::nbd_export e;
    const auto at = name.find('@');
    e.d = reg.find(name.substr(0, at));
    if (!e.d) {
        throw rct::error(rct::errc::not_found, "a handed-over connection's disk is gone: " + name);
    }
    if (at != std::string::npos) {
        rct::snapshot_store* s = e.d->snapshots();
        if (s == nullptr) {
            throw rct::error(rct::errc::not_found, "a handed-over connection's snapshot is gone: " + name);
        }
        e.snap = s->view(name.substr(at + 1));
    }
    return e;
}

struct resumable {
    rct::daemon::frozen_connection conn;
    rct::daemon::nbd_export exp;
};

std::vector<resumable> resolve_connections(rct::disk_registry& reg, rct::daemon::upgrade::takeover& from)
{
    std::vector<resumable> out;
    for (auto& c : from.st.connections) {
        resumable r{{std::move(c.state), from.take_fd(c.fd)}, {}};
        if (r.conn.state.at == rct::nbd::phase::transmission) {
            try {
                r.exp = resolve_export(reg, r.conn.state.export_name);
            } catch (const std::exception& e) {
                // Its snapshot became invalid, say: that client loses its
                // connection, as it would have lost its export; the rest move.
                rct::log::warn("{}: not taken over: {}", r.conn.state.peer, e.what());
                continue;
            }
        }
        out.push_back(std::move(r));
    }
    return out;
}

void resume_connections(std::vector<resumable>& conns, std::vector<std::unique_ptr<rct::daemon::worker>>& workers,
                        rct::daemon::admission& slots)
{
    std::size_t next = 0;
    for (auto& r : conns) {
        std::string why;
        auto ticket = slots.admit(r.conn.state.peer, &why);
        if (!ticket) {
            rct::log::warn("{}: kept across the upgrade although {}", r.conn.state.peer, why);
        }
        auto* w = workers[next++ % workers.size()].get();
        auto box = std::make_shared<resumable>(std::move(r));
        auto slot = std::make_shared<rct::daemon::admission::ticket>(ticket ? std::move(*ticket)
                                                                             : rct::daemon::admission::ticket());
        w->post([w, box, slot] { w->resume(std::move(box->conn), std::move(box->exp), std::move(*slot)); });
    }
}

// Signals and upgrade calls, until SIGTERM or SIGINT.
int wait_for_stop(rct::daemon::upgrade::mailbox& box, rct::daemon::upgrade::serving_parts& parts)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    const rct::unique_fd sig(::signalfd(-1, &set, SFD_CLOEXEC));
    if (!sig) {
        rct::throw_errno("signalfd", errno);
    }
    for (;;) {
        pollfd p[2] = {{sig.get(), POLLIN, 0}, {box.event_fd(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            continue;
        }
        if ((p[0].revents & POLLIN) != 0) {
            signalfd_siginfo si{};
            [[maybe_unused]] auto n = ::read(sig.get(), &si, sizeof si);
            return static_cast<int>(si.ssi_signo);
        }
        if ((p[1].revents & POLLIN) != 0) {
            if (auto call = box.take()) {
                box.answer(rct::daemon::upgrade::run_upgrade(parts, std::move(*call)));
                parts.api.resume();
            }
        }
    }
}

int run(const daemon_config& cfg, rct::daemon::upgrade::launch_info& launch)
{
    namespace upgrade = rct::daemon::upgrade;
    std::optional<upgrade::takeover> from;
    if (launch.takeover_fd >= 0) {
        from.emplace(upgrade::begin_takeover(launch.takeover_fd));
        rct::log::notice("taking over from rctd pid {} (version {}): {} NBD connection(s)", from->st.old_pid,
                         from->st.old_version, from->st.connections.size());
    }
    try {
        return serve(cfg, launch, from ? &*from : nullptr);
    } catch (const std::exception& e) {
        if (from && from->channel) {
            upgrade::report_failure(from->channel.get(), e.what());
        }
        throw;
    }
}

int serve(const daemon_config& cfg, rct::daemon::upgrade::launch_info& launch, rct::daemon::upgrade::takeover* from)
{
    namespace upgrade = rct::daemon::upgrade;
    secure_state_dir(cfg);
    const rct::unique_fd lock = from ? from->take_fd(from->st.lock_fd) : lock_state_dir(cfg.state_dir);
    rct::disk_options opts;
    opts.tracking = cfg.tracking;
    opts.tracker.region_size = cfg.intent_region;
    opts.tracker.persist_interval = std::chrono::milliseconds(cfg.persist_interval_ms);
    opts.snapshots.store_limit = cfg.snapshot_store_limit;
    // After a live upgrade each disk's tracking goes on from the previous
    // rctd's live map: nothing to seal, recover or rewrite (tracker_handoff).
    rct::disk_registry registry(cfg.state_dir, opts, from ? from->st.disks : std::map<std::string, rct::tracker_handoff>());
    const seal_on_failure sealer(registry);

    // Before the workers: connections (and adopt tasks) they still own when
    // they go hand their slots back to it.
    rct::daemon::admission slots(connection_cap(cfg), cfg.max_connections_per_peer);
    std::vector<std::unique_ptr<rct::daemon::worker>> workers;
    for (unsigned i = 0; i < cfg.workers; ++i) {
        workers.push_back(std::make_unique<rct::daemon::worker>(i, cfg, registry));
    }

    rct::daemon::listener listener(workers, slots);
    rct::daemon::inherited_control inherited;
    const rct::daemon::export_addresses addrs = set_up_listeners(cfg, listener, from, inherited);
    std::vector<resumable> resumed = from ? resolve_connections(registry, *from) : std::vector<resumable>();

    // Destroyed before the workers, after they stopped: devices stay for
    // the next rctd to recover.
    rct::daemon::ublk::frontend ublk(registry, workers, cfg.state_dir,
                                     std::chrono::seconds(cfg.ublk_recovery_window));
    for (auto& w : workers) {
        w->start();
    }
    if (from) {
        upgrade::await_commit(*from);
        for (const auto& s : from->st.sockets) {
            if (s.kind == upgrade::socket_kind::control) {
                inherited.control = from->take_fd(s.fd);
            } else if (s.kind == upgrade::socket_kind::fd_inbox) {
                inherited.fd_inbox = from->take_fd(s.fd);
            }
        }
    }
    upgrade::mailbox box;
    rct::daemon::api_server api(registry, ublk, cfg.control_socket, addrs, cfg.access,
                                {cfg.control_max_connections, cfg.control_max_connections_per_peer,
                                 cfg.control_idle_timeout},
                                [&box](rct::daemon::upgrade_call c) { return box.submit(std::move(c)); },
                                std::move(inherited));
    store_control_sockets(api);
    // SERVING is the last word to the old daemon, before any client is
    // touched: up to here a failure is reported (FAIL) and rolled back.
    if (from) {
        upgrade::report_serving(*from);
    }
    resume_connections(resumed, workers, slots);
    listener.start();
    ublk.recover(cfg.ublk);
    rct::log::notice("rctd ready: {} disk(s), {} worker(s), state dir {}, control socket {}",
                     registry.list().size(), workers.size(), cfg.state_dir.string(), cfg.control_socket.string());
    sd_notifyf(0, "READY=1\nMAINPID=%d", ::getpid());

    upgrade::serving_parts parts{cfg, launch, lock.get(), listener, workers, api, registry};
    const int sig = wait_for_stop(box, parts);
    rct::log::notice("{}: finishing in-flight requests and exiting", strsignal(sig));
    sd_notify(0, "STOPPING=1");

    listener.stop();
    for (auto& w : workers) {
        w->request_stop();
    }
    for (auto& w : workers) {
        w->join();
    }
    registry.close_all();
    rct::log::notice("rctd stopped cleanly");
    return 0;
}

void add_limit_options(CLI::App& app, daemon_config& cfg)
{
    const auto seconds = CLI::Range(0u, 86400u);
    app.add_option("--max-connections", cfg.max_connections,
                   "NBD connections served at once; more are closed at accept (also capped so that the "
                   "descriptor limit minus --fd-reserve is never crossed)")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--max-connections-per-peer", cfg.max_connections_per_peer,
                   "NBD connections one peer may hold: a Unix client's uid or a TCP client's address")
        ->capture_default_str()
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--fd-reserve", cfg.fd_reserve,
                   "file descriptors kept free of NBD clients for disks, tracking, snapshots and the control API")
        ->capture_default_str()
        ->check(CLI::Range(64u, 1000000u));
    app.add_option("--handshake-timeout", cfg.handshake_timeout,
                   "seconds a client has from connecting to choosing an export (0 = no limit)")
        ->capture_default_str()
        ->check(seconds);
    app.add_option("--idle-timeout", cfg.idle_timeout,
                   "close a connection that asks nothing for this many seconds with nothing in flight (0 = never)")
        ->capture_default_str()
        ->check(seconds);
    app.add_option("--send-timeout", cfg.send_timeout,
                   "disconnect a client that reads none of its queued replies for this many seconds (0 = never)")
        ->capture_default_str()
        ->check(seconds);
    app.add_option("--shutdown-timeout", cfg.shutdown_timeout,
                   "seconds SIGTERM waits for in-flight replies to be read before cutting the clients off (0 = at once)")
        ->capture_default_str()
        ->check(CLI::Range(0u, 3600u));
    app.add_option("--control-max-connections", cfg.control_max_connections,
                   "control API connections at once")
        ->capture_default_str()
        ->check(CLI::Range(2u, 100000u));
    app.add_option("--control-max-connections-per-peer", cfg.control_max_connections_per_peer,
                   "control API connections one uid may hold")
        ->capture_default_str()
        ->check(CLI::Range(1u, 100000u));
    app.add_option("--control-idle-timeout", cfg.control_idle_timeout,
                   "seconds before an idle control API connection is closed")
        ->capture_default_str()
        ->check(CLI::Range(1u, 86400u));
}

}  // namespace

int main(int argc, char** argv)
{
    // Every thread inherits this mask; the main thread alone takes the
    // signals, synchronously, through a signalfd.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    // Every file and directory rctd makes is for root (or its group) only,
    // whatever umask it was started with; explicit modes do the rest.
    ::umask(077);
    // Each client is a socket; thousands of idle ones are legitimate.
    if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }

    daemon_config cfg;
    std::string state_dir = cfg.state_dir.string();
    std::string nbd_socket;
    std::string control_socket;
    std::string log_level = "info";

    CLI::App app{"rctd: serves change-tracked virtual disks over NBD and ublk"};
    app.add_option("--state-dir", state_dir, "directory holding the disks")->capture_default_str();
    app.add_option("--socket", nbd_socket, "NBD Unix socket (default STATE/nbd.sock)");
    app.add_option("--listen", cfg.listen, "also listen for NBD on tcp:HOST[:PORT] (port 10809 by default)")
        ->check([](const std::string& s) {
            return s.rfind("tcp:", 0) == 0 && s.size() > 4 ? std::string() : "expected tcp:HOST[:PORT]";
        });
    app.add_option("--control-socket", control_socket, "control API socket (default STATE/control.sock)");
    app.add_option("--default-export", cfg.default_export, "disk served for the empty export name");
    app.add_option("--ublk", cfg.ublk, "attach this disk as /dev/ublkbN at start (repeatable)");
    app.add_option("--ublk-recovery-window", cfg.ublk_recovery_window,
                   "seconds a ublk device holds its I/O for the next rctd after this one exits; then it is "
                   "removed (0 = wait for ever)")
        ->capture_default_str()
        ->check(CLI::Range(0u, 86400u));
    int watchdog_parent = 0;
    app.add_option("--ublk-watchdog", watchdog_parent)->group("");  // internal: see ublk/watchdog.hh
    rct::daemon::upgrade::launch_info launch;
    app.add_option("--takeover-fd", launch.takeover_fd)->group("");  // internal: see upgrade/driver.hh
    app.add_option("--workers", cfg.workers, "I/O worker threads (default: one per CPU)")
        ->check(CLI::Range(0u, 256u));
    app.add_option("--io-threads", cfg.io_threads,
                   "kernel threads per worker for buffered writes, syncs and fallocate (default 2; more "
                   "contend for the file's lock)")
        ->check(CLI::Range(1u, 64u));
    app.add_option("--log-level", log_level, "error, warning, notice, info or debug")
        ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}))
        ->capture_default_str();
    std::string intent_region = "64M";
    app.add_flag("!--no-tracking", cfg.tracking, "serve disks without change tracking (for comparison benchmarks)");
    app.add_option("--intent-region", intent_region,
                   "write-intent region size: after a crash, at most the regions written during the last "
                   "persist interval are over-reported")
        ->capture_default_str();
    std::string store_limit = "0";
    app.add_option("--snapshot-store-limit", store_limit,
                   "bytes of copied chunks each disk's snapshot store may hold (0 = as the filesystem allows); "
                   "beyond it the disk keeps working and the snapshots needing a copy become invalid")
        ->capture_default_str();
    std::string memory_budget = "auto";
    app.add_option("--memory-budget", memory_budget,
                   "bytes all NBD clients together may hold in request payloads and queued replies, split "
                   "between the workers; a client over it waits (auto = 256M, or four --connection-memory shares per "
                   "worker if more)")
        ->capture_default_str();
    std::string connection_memory = "32M";
    app.add_option("--connection-memory", connection_memory,
                   "one NBD client's share of the memory budget: a client that does not read its replies "
                   "holds at most this much, then is no longer read (at least 32M, the largest request)")
        ->capture_default_str();
    app.add_option("--persist-interval", cfg.persist_interval_ms, "milliseconds between change-map persists")
        ->capture_default_str()
        ->check(CLI::Range(10u, 3600000u));
    std::string socket_group;
    app.add_option("--socket-group", socket_group,
                   "group that may use the NBD and control sockets (mode 0660) and manage every disk; "
                   "default: root only (0600)");
    std::string api_readers;
    app.add_option("--api-readers", api_readers,
                   "group that may call the control API's read-only endpoints (list, info, changes, ...); "
                   "the control socket becomes 0666 and every request is checked by its peer's uid");
    std::vector<std::string> export_groups;
    app.add_option("--export-group", export_groups,
                   "DISK=GROUP: only root and GROUP may open DISK and its snapshots over NBD, and not over "
                   "TCP (repeatable)");
    add_limit_options(app, cfg);
    app.add_flag("-v,--verbose", cfg.verbose, "log per-connection detail (same as --log-level debug)");
    CLI11_PARSE(app, argc, argv);

    using rct::log::level;
    level l = log_level == "error"     ? level::err
              : log_level == "warning" ? level::warning
              : log_level == "notice"  ? level::notice
              : log_level == "debug"   ? level::debug
                                       : level::info;
    rct::log::set_level(cfg.verbose ? level::debug : l);

    const auto region = rct::parse_size(intent_region);
    if (!region || *region < (1u << 20) || (*region & (*region - 1)) != 0) {
        std::fprintf(stderr, "rctd: --intent-region must be a power of two of at least 1M\n");
        return 2;
    }
    cfg.intent_region = *region;
    const auto limit = rct::parse_size(store_limit);
    if (!limit) {
        std::fprintf(stderr, "rctd: --snapshot-store-limit must be a size (e.g. 0, 512M, 20G)\n");
        return 2;
    }
    cfg.snapshot_store_limit = *limit;
    if (cfg.workers == 0) {
        cfg.workers = std::max(1u, std::thread::hardware_concurrency());
    }
    if (const char* why = resolve_memory(cfg, memory_budget, connection_memory)) {
        std::fprintf(stderr, "rctd: %s\n", why);
        return 2;
    }
    cfg.state_dir = state_dir;
    cfg.nbd_socket = nbd_socket.empty() ? cfg.state_dir / "nbd.sock" : std::filesystem::path(nbd_socket);
    cfg.control_socket =
        control_socket.empty() ? cfg.state_dir / "control.sock" : std::filesystem::path(control_socket);

    try {
        using rct::daemon::resolve_group;
        if (!socket_group.empty()) {
            cfg.access.socket_group = resolve_group(socket_group);
        }
        if (!api_readers.empty()) {
            cfg.access.api_readers = resolve_group(api_readers);
        }
        for (const auto& spec : export_groups) {
            const auto eq = spec.find('=');
            if (eq == std::string::npos || !rct::disk_registry::valid_name(spec.substr(0, eq))) {
                std::fprintf(stderr, "rctd: --export-group must be DISK=GROUP, not '%s'\n", spec.c_str());
                return 2;
            }
            cfg.access.export_groups[spec.substr(0, eq)] = resolve_group(spec.substr(eq + 1));
        }
        if (watchdog_parent > 0) {
            return rct::daemon::ublk::run_watchdog(watchdog_parent, cfg.state_dir,
                                                   std::chrono::seconds(cfg.ublk_recovery_window));
        }
        launch.args.assign(argv, argv + argc);
        for (auto it = launch.args.begin(); it != launch.args.end();) {
            if (*it == "--takeover-fd") {
                it = launch.args.erase(it, std::min(it + 2, launch.args.end()));
            } else if (it->rfind("--takeover-fd=", 0) == 0) {
                it = launch.args.erase(it);
            } else {
                ++it;
            }
        }
        launch.exe_path = rct::daemon::upgrade::own_path();
        launch.self_exe = rct::unique_fd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
        return run(cfg, launch);
    } catch (const std::exception& e) {
        rct::log::error("cannot start: {}", e.what());
        return 1;
    }
}
