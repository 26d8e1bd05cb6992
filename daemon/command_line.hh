// command_line: rctd's options, from the command line and from rctd.conf
// (config_file.hh), turned into a daemon_config.
//
// add_options() declares every option on a CLI::App, bound to a
// command_line; after parsing, resolve() checks what single options cannot
// (sizes, groups, combinations) and fills in the daemon_config. Setup only,
// on the main thread; errors are messages for the operator.
#pragma once

#include "config.hh"

#include <CLI/CLI.hpp>

#include <optional>
#include <string>
#include <vector>

namespace rct::daemon {

struct command_line {
    daemon_config cfg;
    std::string state_dir = "/var/lib/rctd";
    std::string nbd_socket;
    std::string control_socket;
    std::string log_level = "info";
    std::string intent_region = "64M";
    std::string store_limit = "0";
    std::string memory_budget = "auto";
    std::string connection_memory = "32M";
    std::string socket_group;
    std::string api_readers;
    std::vector<std::string> export_groups;
    std::string tls_tcp = "auto";  // require with credentials, else off
    std::string tls_unix = "off";
    std::string tls_certificates;
    std::string tls_psk;
    std::vector<std::string> tls_export_identities;
    std::string config_file;  // --config; empty: /etc/rctd/rctd.conf if it exists
    bool check_config = false;
    bool version = false;
    int watchdog_parent = 0;  // internal: ublk/watchdog.hh
    int takeover_fd = -1;     // internal: upgrade/driver.hh
};

// Declares rctd's options on `app`, bound to `cl`.
void add_options(CLI::App& app, command_line& cl);

// Fills cl.cfg from the parsed values; the reason when they do not make a
// daemon (the option's name in it), else nullopt.
std::optional<std::string> resolve(command_line& cl);

}  // namespace rct::daemon
