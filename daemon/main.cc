// rctd: serves the disks of a state directory over NBD and as ublk devices.
//
// Threads: one listener (accepts NBD clients), N workers (each an io_uring
// event loop for its connections, its ublk queues and their disk I/O), the
// control API's server threads, and this main thread, which only sets up,
// recovers ublk devices, waits for a signal and tears down. See
// docs/architecture.md.
#include "command_line.hh"
#include "config.hh"
#include "config_file.hh"
#include "control/api_server.hh"
#include "listener.hh"
#include "service.hh"
#include "ublk/frontend.hh"
#include "ublk/watchdog.hh"
#include "upgrade/driver.hh"
#include "worker.hh"

#include <rct/buffer_pool.hh>
#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include "revision.hh"
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
#include <cstring>
#include <exception>
#include <map>
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
    // A TLS connection holds three descriptors: its socket and a socketpair.
    const rlim_t room = (rl.rlim_cur - cfg.fd_reserve - cfg.control_max_connections) / (cfg.tls.configured() ? 3 : 1);
    if (room < cfg.max_connections) {
        rct::log::warn("the descriptor limit {} allows {} NBD connections, not --max-connections {}", rl.rlim_cur,
                       room, cfg.max_connections);
        return static_cast<unsigned>(room);
    }
    return cfg.max_connections;
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

// What a socket systemd passed is for: its FileDescriptorName= (control,
// fd-inbox, anything else NBD) or, as one .socket unit gives all its
// sockets one name, the path it is bound to.
std::string activated_socket_role(int fd, const char* name, const daemon_config& cfg)
{
    if (name != nullptr && (std::strcmp(name, "control") == 0 || std::strcmp(name, "fd-inbox") == 0)) {
        return name;
    }
    const std::string control = cfg.control_socket.string();
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, control.c_str(), 0) > 0) {
        return "control";
    }
    const std::string inbox = control + ".fd";
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, inbox.c_str(), 0) > 0) {
        return "fd-inbox";
    }
    return "nbd";
}

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
            const std::string name = activated_socket_role(fd.get(), names != nullptr ? names[i] : nullptr, cfg);
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

// The STATUS= line systemctl status shows while rctd serves.
std::string serving_status(rct::disk_registry& reg, const std::vector<std::unique_ptr<rct::daemon::worker>>& workers,
                           const rct::daemon::ublk::frontend& ublk)
{
    unsigned clients = 0;
    for (const auto& w : workers) {
        clients += w->connection_count();
    }
    return fmt::format("serving {} disk(s) to {} NBD client(s), {} ublk device(s)", reg.list().size(), clients,
                       ublk.device_count());
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
        rct::daemon::service_monitor::adopt_watchdog(static_cast<pid_t>(from->st.old_pid));
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
    // Before the workers, too: their TLS connections' tunnels end first.
    const std::unique_ptr<rct::daemon::tls_server> tls =
        cfg.tls.configured() ? std::make_unique<rct::daemon::tls_server>(cfg.tls) : nullptr;
    std::vector<std::unique_ptr<rct::daemon::worker>> workers;
    for (unsigned i = 0; i < cfg.workers; ++i) {
        workers.push_back(std::make_unique<rct::daemon::worker>(i, cfg, registry, tls.get()));
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
    std::optional<rct::daemon::service_monitor> monitor;
    monitor.emplace(workers, [&] { return serving_status(registry, workers, ublk); });

    upgrade::serving_parts parts{cfg, launch, lock.get(), listener, workers, api, registry};
    const int sig = wait_for_stop(box, parts);
    rct::log::notice("{}: finishing in-flight requests and exiting", strsignal(sig));
    monitor.reset();
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing in-flight requests");
    api.stop_jobs();

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

void set_log_level(const rct::daemon::command_line& cl)
{
    using rct::log::level;
    const std::string& name = cl.log_level;
    const level l = name == "error"     ? level::err
                    : name == "warning" ? level::warning
                    : name == "notice"  ? level::notice
                    : name == "debug"   ? level::debug
                                        : level::info;
    rct::log::set_level(cl.cfg.verbose ? level::debug : l);
}

void print_effective_config(const CLI::App& app, const daemon_config& cfg)
{
    using rct::daemon::toml_string;
    const std::map<std::string, std::string> resolved{
        {"listen.socket", toml_string(cfg.nbd_socket.string())},
        {"listen.control_socket", toml_string(cfg.control_socket.string())},
        {"workers", std::to_string(cfg.workers)},
    };
    const bool file =
        app.get_option("--config")->count() > 0 || std::filesystem::exists(rct::daemon::default_config_file);
    std::printf("# rctd %s: the effective settings (%s)\n%s", RCT_VERSION,
                file ? "command line over the configuration file" : "command line; no configuration file",
                rct::daemon::effective_config(app, resolved).c_str());
}

// How this daemon was started, for an upgrade to start the next one alike.
rct::daemon::upgrade::launch_info launch_from(int argc, char** argv, const rct::daemon::command_line& cl)
{
    rct::daemon::upgrade::launch_info launch;
    launch.takeover_fd = cl.takeover_fd;
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
    return launch;
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

    rct::daemon::command_line cl;
    CLI::App app{"rctd: serves change-tracked virtual disks over NBD and ublk"};
    rct::daemon::add_options(app, cl);
    try {
        if (!rct::daemon::parse_with_config(app, argc, argv)) {
            std::printf("rctd %s (%s)\n", RCT_VERSION, RCT_REVISION);
            return 0;
        }
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const rct::daemon::config_error& e) {
        std::fprintf(stderr, "rctd: %s\n", e.what());
        return 2;
    }
    if (const auto why = rct::daemon::resolve(cl)) {
        std::fprintf(stderr, "rctd: %s\n", why->c_str());
        return 2;
    }
    if (cl.check_config) {
        try {
            // The credentials too: a bad certificate or key file is an error now, not at start.
            if (cl.cfg.tls.configured()) {
                rct::daemon::tls_server check(cl.cfg.tls);
            }
        } catch (const std::exception& e) {
            std::fprintf(stderr, "rctd: %s\n", e.what());
            return 2;
        }
        print_effective_config(app, cl.cfg);
        return 0;
    }
    set_log_level(cl);
    daemon_config& cfg = cl.cfg;
    try {
        if (cl.watchdog_parent > 0) {
            return rct::daemon::ublk::run_watchdog(cl.watchdog_parent, cfg.state_dir,
                                                   std::chrono::seconds(cfg.ublk_recovery_window));
        }
        rct::daemon::upgrade::launch_info launch = launch_from(argc, argv, cl);
        return run(cfg, launch);
    } catch (const std::exception& e) {
        rct::log::error("cannot start: {}", e.what());
        return 1;
    }
}
