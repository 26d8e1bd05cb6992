#include "config_file.hh"

#include <toml++/toml.h>

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace rct::daemon {

namespace {

using enum value_kind;

// One option argument taken from the file, with where it came from.
struct file_argument {
    std::string token;  // --option=value, or --flag
    std::string where;  // "PATH:LINE: key"
};

const config_key* find_key(std::string_view key)
{
    const auto& keys = config_keys();
    const auto it = std::find_if(keys.begin(), keys.end(), [&](const config_key& k) { return k.key == key; });
    return it == keys.end() ? nullptr : &*it;
}

bool is_section(std::string_view path)
{
    const auto& keys = config_keys();
    return std::any_of(keys.begin(), keys.end(), [&](const config_key& k) {
        return k.key.size() > path.size() && k.key.substr(0, path.size()) == path && k.key[path.size()] == '.';
    });
}

std::string where(const std::string& file, const toml::node& n, std::string_view key)
{
    return fmt::format("{}:{}: {}", file, n.source().begin.line, key);
}

// The option arguments one key's value stands for.
std::vector<std::string> arguments(const config_key& k, const toml::node& n, const std::string& file)
{
    const std::string opt(k.option);
    const std::string at = where(file, n, k.key);
    switch (k.kind) {
    case text:
        if (const auto* s = n.as_string()) {
            // "" leaves the option at its default.
            return s->get().empty() ? std::vector<std::string>{} : std::vector<std::string>{opt + "=" + s->get()};
        }
        if (const auto* i = n.as_integer()) {
            return {opt + "=" + std::to_string(i->get())};
        }
        throw config_error(at + ": expected a string");
    case number:
        if (const auto* i = n.as_integer()) {
            return {opt + "=" + std::to_string(i->get())};
        }
        throw config_error(at + ": expected an integer");
    case flag:
    case inverted:
        if (const auto* b = n.as_boolean()) {
            return b->get() == (k.kind == flag) ? std::vector<std::string>{opt} : std::vector<std::string>{};
        }
        throw config_error(at + ": expected true or false");
    case list: {
        const auto* a = n.as_array();
        if (a == nullptr) {
            throw config_error(at + ": expected an array of strings");
        }
        std::vector<std::string> out;
        for (const toml::node& e : *a) {
            const auto* s = e.as_string();
            if (s == nullptr) {
                throw config_error(where(file, e, k.key) + ": expected an array of strings");
            }
            out.push_back(opt + "=" + s->get());
        }
        return out;
    }
    }
    return {};
}

void collect(const toml::table& t, const std::string& prefix, const std::string& file, const CLI::App& app,
             std::vector<file_argument>& out)
{
    for (const auto& [name, node] : t) {
        const std::string key = prefix.empty() ? std::string(name.str()) : prefix + "." + std::string(name.str());
        const std::string at = where(file, node, key);
        if (const auto* sub = node.as_table(); sub != nullptr && is_section(key)) {
            collect(*sub, key, file, app, out);
            continue;
        }
        const config_key* k = find_key(key);
        if (k == nullptr) {
            throw config_error(at + ": unknown key");
        }
        const std::vector<std::string> args = arguments(*k, node, file);
        if (app.get_option(std::string(k->option))->count() > 0) {
            continue;  // the command line gave it: it wins
        }
        for (const auto& a : args) {
            out.push_back({a, at});
        }
    }
}

std::optional<std::filesystem::path> chosen_file(const CLI::App& app)
{
    const CLI::Option* opt = app.get_option("--config");
    if (opt->count() > 0) {
        return std::filesystem::path(opt->results().back());
    }
    // Only a file that is not there means none: one that cannot be read
    // must not start rctd without the restrictions it may hold.
    std::error_code ec;
    const auto st = std::filesystem::status(default_config_file, ec);
    if (st.type() == std::filesystem::file_type::not_found) {
        return std::nullopt;
    }
    if (ec) {
        throw config_error(std::string("cannot read configuration file ") + default_config_file + ": " + ec.message());
    }
    return std::filesystem::path(default_config_file);
}

// CLI11 takes a vector of arguments last first.
void parse_arguments(CLI::App& app, std::vector<std::string> args)
{
    std::reverse(args.begin(), args.end());
    app.clear();
    app.parse(args);
}

}  // namespace

const std::vector<config_key>& config_keys()
{
    static const std::vector<config_key> keys{
        {"state_dir", "--state-dir", text},
        {"log_level", "--log-level", text},
        {"verbose", "--verbose", flag},
        {"workers", "--workers", number},
        {"io_threads", "--io-threads", number},
        {"listen.socket", "--socket", text},
        {"listen.control_socket", "--control-socket", text},
        {"listen.tcp", "--listen", list},
        {"listen.default_export", "--default-export", text},
        {"access.socket_group", "--socket-group", text},
        {"access.api_readers", "--api-readers", text},
        {"access.export_groups", "--export-group", list},
        {"limits.memory_budget", "--memory-budget", text},
        {"limits.connection_memory", "--connection-memory", text},
        {"limits.max_connections", "--max-connections", number},
        {"limits.max_connections_per_peer", "--max-connections-per-peer", number},
        {"limits.fd_reserve", "--fd-reserve", number},
        {"limits.handshake_timeout", "--handshake-timeout", number},
        {"limits.idle_timeout", "--idle-timeout", number},
        {"limits.send_timeout", "--send-timeout", number},
        {"limits.shutdown_timeout", "--shutdown-timeout", number},
        {"limits.control_max_connections", "--control-max-connections", number},
        {"limits.control_max_connections_per_peer", "--control-max-connections-per-peer", number},
        {"limits.control_idle_timeout", "--control-idle-timeout", number},
        {"disks.tracking", "--no-tracking", inverted},
        {"disks.intent_region", "--intent-region", text},
        {"disks.persist_interval", "--persist-interval", number},
        {"disks.snapshot_store_limit", "--snapshot-store-limit", text},
        {"tls.tcp", "--tls", text},
        {"tls.unix", "--unix-tls", text},
        {"tls.certificates", "--tls-certificates", text},
        {"tls.verify_peer", "--tls-verify-peer", flag},
        {"tls.psk_file", "--tls-psk", text},
        {"tls.export_identities", "--tls-export-identity", list},
        {"ublk.attach", "--ublk", list},
        {"ublk.recovery_window", "--ublk-recovery-window", number},
    };
    return keys;
}

bool parse_with_config(CLI::App& app, int argc, const char* const* argv)
{
    app.parse(argc, argv);
    if (app.get_option("--version")->count() > 0) {
        return false;
    }
    // The ublk watchdog, started long after rctd with what it needs on its
    // command line, must not fail on a file edited since.
    if (app.get_option("--ublk-watchdog")->count() > 0) {
        return true;
    }
    const std::optional<std::filesystem::path> file = chosen_file(app);
    if (!file) {
        return true;
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*file, ec)) {
        throw config_error("cannot read configuration file " + file->string() + ": " +
                           (ec ? ec.message() : std::string("not a regular file")));
    }
    toml::table table;
    try {
        table = toml::parse_file(file->string());
    } catch (const toml::parse_error& e) {
        throw config_error(fmt::format("{}:{}: {}", file->string(), e.source().begin.line, e.description()));
    }
    std::vector<file_argument> from_file;
    collect(table, "", file->string(), app, from_file);
    const std::vector<std::string> command_line(argv + 1, argv + argc);
    // Each argument alone first, so that a bad value is reported as its key's.
    for (const file_argument& a : from_file) {
        try {
            parse_arguments(app, {a.token});
        } catch (const CLI::ParseError& e) {
            throw config_error(a.where + ": " + e.what());
        }
    }
    std::vector<std::string> all;
    for (const file_argument& a : from_file) {
        all.push_back(a.token);
    }
    all.insert(all.end(), command_line.begin(), command_line.end());
    parse_arguments(app, all);
    return true;
}

std::string toml_string(const std::string& s)
{
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
            out += fmt::format("\\u{:04X}", static_cast<unsigned char>(c));
        } else {
            out += c;
        }
    }
    return out + "\"";
}

namespace {

std::string value_text(const config_key& k, const CLI::Option& opt)
{
    const bool given = opt.count() > 0;
    const std::vector<std::string> values = given ? opt.results() : std::vector<std::string>{opt.get_default_str()};
    switch (k.kind) {
    case flag:
        return given ? "true" : "false";
    case inverted:
        return given ? "false" : "true";
    case number:
        return values.back().empty() ? "0" : values.back();
    case text:
        return toml_string(values.back());
    case list: {
        std::string out = "[";
        for (const auto& v : given ? values : std::vector<std::string>{}) {
            out += (out.size() > 1 ? ", " : "") + toml_string(v);
        }
        return out + "]";
    }
    }
    return {};
}

}  // namespace

std::string effective_config(const CLI::App& app, const std::map<std::string, std::string>& resolved)
{
    std::string out;
    std::string section;
    for (const config_key& k : config_keys()) {
        const auto dot = k.key.find('.');
        const std::string s = dot == std::string_view::npos ? "" : std::string(k.key.substr(0, dot));
        if (s != section) {
            out += "\n[" + s + "]\n";
            section = s;
        }
        const std::string name(dot == std::string_view::npos ? k.key : k.key.substr(dot + 1));
        const auto r = resolved.find(std::string(k.key));
        out += name + " = " + (r != resolved.end() ? r->second : value_text(k, *app.get_option(std::string(k.option)))) +
               "\n";
    }
    return out;
}

}  // namespace rct::daemon
