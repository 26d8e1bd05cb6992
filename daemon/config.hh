// daemon_config: the settings rctd was started with, fixed for its lifetime
// and read by every thread.
#pragma once

#include "access.hh"
#include "nbd/tls.hh"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rct::daemon {

struct daemon_config {
    std::filesystem::path state_dir = "/var/lib/rctd";
    std::filesystem::path nbd_socket;      // default STATE/nbd.sock
    std::filesystem::path control_socket;  // default STATE/control.sock
    std::vector<std::string> listen;       // extra "tcp:HOST[:PORT]" endpoints
    std::string default_export;            // served for the empty export name
    std::vector<std::string> ublk;         // disks to attach as ublk devices at start
    unsigned ublk_recovery_window = 60;    // seconds a device waits for the next rctd; 0 = for ever
    unsigned workers = 0;                  // 0 = one per CPU
    unsigned io_threads = 2;               // kernel io-wq threads per worker ring for blocking file work
    unsigned max_inflight = 256;           // per connection
    std::uint32_t max_payload = 32u << 20;
    // Bytes all NBD connections together may hold in request payloads and
    // queued replies, split evenly between the workers (memory_budget.hh);
    // 0 = 256 MiB, or 2 × max_payload per worker if that is more.
    std::uint64_t memory_budget = 0;
    std::uint64_t connection_memory = std::uint64_t{32} << 20;  // one connection's share of it
    bool verbose = false;
    bool tracking = true;
    std::uint64_t intent_region = std::uint64_t{64} << 20;
    unsigned persist_interval_ms = 5000;
    std::uint64_t snapshot_store_limit = 0;  // per disk; 0 = no limit
    access_policy access;                    // socket modes, who may manage, read and open what
    tls_settings tls;                        // NBD over TLS (nbd/tls.hh)

    // Limits and deadlines (docs/security.md). Seconds; 0 = no deadline.
    unsigned max_connections = 1024;         // NBD connections in all
    unsigned max_connections_per_peer = 128;  // per Unix uid or TCP address
    unsigned fd_reserve = 512;               // descriptors kept for disks, tracking and the control API
    unsigned handshake_timeout = 10;         // accept to GO / EXPORT_NAME
    unsigned idle_timeout = 0;               // transmission with nothing asked or in flight
    unsigned send_timeout = 30;              // replies queued while the client reads none of them
    unsigned shutdown_timeout = 10;          // SIGTERM until the last client is cut off
    unsigned control_max_connections = 128;
    unsigned control_max_connections_per_peer = 16;  // per uid
    unsigned control_idle_timeout = 30;
};

}  // namespace rct::daemon
