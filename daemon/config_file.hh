// config_file: rctd.conf (TOML, docs/configuration.md), read with toml++.
//
// Each key stands for one command-line option (config_keys()). A key's value
// becomes that option's argument unless the command line gave the option, so
// the command line wins and both go through the same validators. Errors name
// the file, line, and key. Setup only, on the main thread.
#pragma once

#include <CLI/CLI.hpp>

#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rct::daemon {

enum class value_kind {
    text,      // a string (sizes too: "64M"); an integer is taken as its digits
    number,    // an integer
    flag,      // true or false
    inverted,  // true or false, for a --no-X flag (false gives the flag)
    list,      // an array of strings: the option once per element
};

struct config_key {
    std::string_view key;     // "limits.max_connections"
    std::string_view option;  // "--max-connections"
    value_kind kind;
};

// Every key rctd.conf may hold, in the order --check-config prints them.
const std::vector<config_key>& config_keys();

// A configuration file that cannot be used; what() names file, line and key.
struct config_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline constexpr const char* default_config_file = "/etc/rctd/rctd.conf";

// Parses the command line (argv), then the file its --config names (or
// default_config_file if it exists), and leaves `app` parsed with both: the
// file's keys become options the command line did not give. Returns false
// when --version was given (`app` parsed without the file). Throws
// CLI::ParseError for the command line (--help too), config_error for the
// file.
bool parse_with_config(CLI::App& app, int argc, const char* const* argv);

// The settings in effect after parse_with_config, as rctd.conf text;
// `resolved` gives keys whose option's value stands for another (a socket
// path left to its default, "0 workers" for one per CPU) their real one.
std::string effective_config(const CLI::App& app, const std::map<std::string, std::string>& resolved);

// A TOML string holding s.
std::string toml_string(const std::string& s);

}  // namespace rct::daemon
