#include "command_line.hh"

#include <rct/buffer_pool.hh>
#include <rct/disk_registry.hh>
#include <rct/size.hh>

#include <algorithm>
#include <thread>

namespace rct::daemon {

namespace {

void add_limit_options(CLI::App& app, daemon_config& cfg)
{
    const auto seconds = CLI::Range(0u, 86400u);
    app.add_option("--max-connections", cfg.max_connections,
                   "NBD connections served at once; more are closed at accept (also capped so that the "
                   "descriptor limit minus --fd-reserve is never crossed)")
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--max-connections-per-peer", cfg.max_connections_per_peer,
                   "NBD connections one peer may hold: a Unix client's uid or a TCP client's address")
        ->check(CLI::Range(1u, 1000000u));
    app.add_option("--fd-reserve", cfg.fd_reserve,
                   "file descriptors kept free of NBD clients for disks, tracking, snapshots and the control API")
        ->check(CLI::Range(64u, 1000000u));
    app.add_option("--handshake-timeout", cfg.handshake_timeout,
                   "seconds a client has from connecting to choosing an export (0 = no limit)")
        ->check(seconds);
    app.add_option("--idle-timeout", cfg.idle_timeout,
                   "close a connection that asks nothing for this many seconds with nothing in flight (0 = never)")
        ->check(seconds);
    app.add_option("--send-timeout", cfg.send_timeout,
                   "disconnect a client that reads none of its queued replies for this many seconds (0 = never)")
        ->check(seconds);
    app.add_option("--shutdown-timeout", cfg.shutdown_timeout,
                   "seconds SIGTERM waits for in-flight replies to be read before cutting the clients off (0 = at once)")
        ->check(CLI::Range(0u, 3600u));
    app.add_option("--control-max-connections", cfg.control_max_connections, "control API connections at once")
        ->check(CLI::Range(2u, 100000u));
    app.add_option("--control-max-connections-per-peer", cfg.control_max_connections_per_peer,
                   "control API connections one uid may hold")
        ->check(CLI::Range(1u, 100000u));
    app.add_option("--control-idle-timeout", cfg.control_idle_timeout,
                   "seconds before an idle control API connection is closed")
        ->check(CLI::Range(1u, 86400u));
}

// A validator for a size option ("64M", "0"), so that a bad value is
// reported as the option's (or the config key's) own error.
CLI::Validator size_value(bool allow_auto = false)
{
    return CLI::Validator(
        [allow_auto](std::string& v) {
            return (allow_auto && v == "auto") || rct::parse_size(v) ? std::string()
                                                                      : "expected a size (e.g. 0, 512M, 20G)";
        },
        "SIZE");
}

// A validator for "DISK=VALUE" options: a valid disk name, then a value.
CLI::Validator disk_pair(const std::string& form)
{
    return CLI::Validator(
        [form](std::string& v) {
            const auto eq = v.find('=');
            return eq != std::string::npos && eq + 1 < v.size() && rct::disk_registry::valid_name(v.substr(0, eq))
                       ? std::string()
                       : "expected " + form;
        },
        form);
}

void add_disk_options(CLI::App& app, command_line& cl)
{
    daemon_config& cfg = cl.cfg;
    app.add_flag("!--no-tracking", cfg.tracking, "serve disks without change tracking (for comparison benchmarks)");
    app.add_option("--intent-region", cl.intent_region,
                   "write-intent region size: after a crash, at most the regions written during the last "
                   "persist interval are over-reported (a power of two, at least 1M)")
        ->check(CLI::Validator(
            [](std::string& v) {
                const auto r = rct::parse_size(v);
                return r && *r >= (1u << 20) && (*r & (*r - 1)) == 0 ? std::string()
                                                                     : "expected a power of two of at least 1M";
            },
            "SIZE"));
    app.add_option("--snapshot-store-limit", cl.store_limit,
                   "bytes of copied chunks each disk's snapshot store may hold (0 = as the filesystem allows); "
                   "beyond it the disk keeps working and the snapshots needing a copy become invalid")
        ->check(size_value());
    app.add_option("--persist-interval", cfg.persist_interval_ms, "milliseconds between change-map persists")
        ->check(CLI::Range(10u, 3600000u));
}

void add_memory_and_access_options(CLI::App& app, command_line& cl)
{
    app.add_option("--memory-budget", cl.memory_budget,
                   "bytes all NBD clients together may hold in request payloads and queued replies, split "
                   "between the workers; a client over it waits (auto = 256M, or four --connection-memory shares per "
                   "worker if more)")
        ->check(size_value(true));
    app.add_option("--connection-memory", cl.connection_memory,
                   "one NBD client's share of the memory budget: a client that does not read its replies "
                   "holds at most this much, then is no longer read (at least 32M, the largest request)")
        ->check(size_value());
    app.add_option("--socket-group", cl.socket_group,
                   "group that may use the NBD and control sockets (mode 0660) and manage every disk; "
                   "default: root only (0600)");
    app.add_option("--api-readers", cl.api_readers,
                   "group that may call the control API's read-only endpoints (list, info, changes, ...); "
                   "the control socket becomes 0666 and every request is checked by its peer's uid");
    app.add_option("--export-group", cl.export_groups,
                   "DISK=GROUP: only root and GROUP may open DISK and its snapshots over NBD, and not over "
                   "TCP (repeatable)")
        ->check(disk_pair("DISK=GROUP"));
}

void add_tls_options(CLI::App& app, command_line& cl)
{
    const auto mode = CLI::IsMember({"off", "on", "require"});
    app.add_option("--tls", cl.tls_tcp,
                   "NBD over TLS on the TCP listeners: off, on (offered) or require (nothing but STARTTLS in the "
                   "clear); default require when certificates or a PSK file are given, else off")
        ->check(CLI::IsMember({"auto", "off", "on", "require"}));
    app.add_option("--unix-tls", cl.tls_unix, "NBD over TLS on the Unix socket: off, on or require")->check(mode);
    app.add_option("--tls-certificates", cl.tls_certificates,
                   "directory holding server-cert.pem, server-key.pem and (for --tls-verify-peer) ca-cert.pem, "
                   "optionally ca-crl.pem");
    app.add_flag("--tls-verify-peer", cl.cfg.tls.verify_peer,
                 "demand a client certificate signed by ca-cert.pem");
    app.add_option("--tls-psk", cl.tls_psk, "pre-shared keys: a file of USERNAME:HEXKEY lines (psktool's format)");
    app.add_option("--tls-export-identity", cl.tls_export_identities,
                   "DISK=IDENTITY: serve DISK and its snapshots only over TLS, to this PSK username or client "
                   "certificate subject DN (repeatable)")
        ->check(disk_pair("DISK=IDENTITY"));
}

std::optional<std::string> resolve_tls(command_line& cl)
{
    tls_settings& t = cl.cfg.tls;
    t.certificates = cl.tls_certificates;
    t.psk_file = cl.tls_psk;
    if (!t.certificates.empty() && !t.psk_file.empty()) {
        return "--tls-certificates and --tls-psk cannot be used together";
    }
    if (t.verify_peer && t.certificates.empty()) {
        return "--tls-verify-peer needs --tls-certificates";
    }
    t.tcp = cl.tls_tcp == "auto" ? (t.configured() ? tls_mode::require : tls_mode::off) : *parse_tls_mode(cl.tls_tcp);
    t.unix_socket = *parse_tls_mode(cl.tls_unix);
    if ((t.tcp != tls_mode::off || t.unix_socket != tls_mode::off) && !t.configured()) {
        return "--tls and --unix-tls need --tls-certificates or --tls-psk";
    }
    for (const auto& spec : cl.tls_export_identities) {
        const auto eq = spec.find('=');
        t.export_identities[spec.substr(0, eq)].insert(spec.substr(eq + 1));
    }
    if (!t.export_identities.empty() && !t.configured()) {
        return "--tls-export-identity needs --tls-certificates or --tls-psk";
    }
    if (!t.export_identities.empty() && !t.certificates.empty() && !t.verify_peer) {
        return "--tls-export-identity with certificates needs --tls-verify-peer (a client's DN is its certificate's)";
    }
    return std::nullopt;
}

// Sets the memory budget from its options; the reason when they do not fit
// together. Every request must fit a connection's share, and a share must fit
// a worker's part of the budget, or a request could wait for ever.
std::optional<std::string> resolve_memory(daemon_config& cfg, const std::string& budget, const std::string& share)
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
    return std::nullopt;
}

}  // namespace

void add_options(CLI::App& app, command_line& cl)
{
    daemon_config& cfg = cl.cfg;
    // Defaults are shown in --help and by --check-config.
    app.option_defaults()->always_capture_default();
    app.add_flag("--version", cl.version, "print the version and git revision, then exit");
    app.add_option("--config", cl.config_file,
                   "configuration file (TOML, rctd.conf(5)); default /etc/rctd/rctd.conf when it exists. "
                   "An option given here wins over the file");
    app.add_flag("--check-config", cl.check_config,
                 "check the options and the configuration file, print the effective settings, then exit");
    app.add_option("--state-dir", cl.state_dir, "directory holding the disks");
    app.add_option("--socket", cl.nbd_socket, "NBD Unix socket (default STATE/nbd.sock)");
    app.add_option("--listen", cfg.listen, "also listen for NBD on tcp:HOST[:PORT] (port 10809 by default)")
        ->check([](const std::string& s) {
            return s.rfind("tcp:", 0) == 0 && s.size() > 4 ? std::string() : "expected tcp:HOST[:PORT]";
        });
    app.add_option("--control-socket", cl.control_socket, "control API socket (default STATE/control.sock)");
    app.add_option("--default-export", cfg.default_export, "disk served for the empty export name");
    app.add_option("--ublk", cfg.ublk, "attach this disk as /dev/ublkbN at start (repeatable)");
    app.add_option("--ublk-recovery-window", cfg.ublk_recovery_window,
                   "seconds a ublk device holds its I/O for the next rctd after this one exits; then it is "
                   "removed (0 = wait for ever)")
        ->check(CLI::Range(0u, 86400u));
    app.add_option("--ublk-watchdog", cl.watchdog_parent)->group("");  // internal: see ublk/watchdog.hh
    app.add_option("--takeover-fd", cl.takeover_fd)->group("");        // internal: see upgrade/driver.hh
    app.add_option("--workers", cfg.workers, "I/O worker threads (0 = one per CPU)")->check(CLI::Range(0u, 256u));
    app.add_option("--io-threads", cfg.io_threads,
                   "kernel threads per worker for buffered writes, syncs and fallocate (more contend for the "
                   "file's lock)")
        ->check(CLI::Range(1u, 64u));
    app.add_option("--log-level", cl.log_level, "error, warning, notice, info or debug")
        ->check(CLI::IsMember({"error", "warning", "notice", "info", "debug"}));
    add_disk_options(app, cl);
    add_memory_and_access_options(app, cl);
    add_limit_options(app, cfg);
    add_tls_options(app, cl);
    app.add_flag("-v,--verbose", cfg.verbose, "log per-connection detail (same as --log-level debug)");
}

std::optional<std::string> resolve(command_line& cl)
{
    daemon_config& cfg = cl.cfg;
    // Both checked by the options' validators.
    cfg.intent_region = *rct::parse_size(cl.intent_region);
    cfg.snapshot_store_limit = *rct::parse_size(cl.store_limit);
    if (cfg.workers == 0) {
        cfg.workers = std::max(1u, std::thread::hardware_concurrency());
    }
    if (auto why = resolve_memory(cfg, cl.memory_budget, cl.connection_memory)) {
        return why;
    }
    if (auto why = resolve_tls(cl)) {
        return why;
    }
    cfg.state_dir = cl.state_dir;
    cfg.nbd_socket = cl.nbd_socket.empty() ? cfg.state_dir / "nbd.sock" : std::filesystem::path(cl.nbd_socket);
    cfg.control_socket =
        cl.control_socket.empty() ? cfg.state_dir / "control.sock" : std::filesystem::path(cl.control_socket);
    try {
        if (!cl.socket_group.empty()) {
            cfg.access.socket_group = resolve_group(cl.socket_group);
        }
        if (!cl.api_readers.empty()) {
            cfg.access.api_readers = resolve_group(cl.api_readers);
        }
        for (const auto& spec : cl.export_groups) {
            const auto eq = spec.find('=');
            cfg.access.export_groups[spec.substr(0, eq)] = resolve_group(spec.substr(eq + 1));
        }
    } catch (const std::exception& e) {
        return e.what();
    }
    return std::nullopt;
}

}  // namespace rct::daemon
