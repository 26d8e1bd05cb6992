// rctctl: manages rctd's disks through its control API (docs/control-api.md).
//
// One HTTP request per invocation (a page at a time for `changes`), over the
// daemon's Unix socket; an import first passes the file, opened as the
// calling user, over the import fd socket beside it. The exit status tells
// scripts what happened without parsing text: 0 ok, 1 other failure, 2 usage
// error, 3 no such disk or checkpoint, 4 conflict (exists, busy, tracking
// disabled), 5 daemon unreachable, 6 the change token cannot be honoured:
// take a full backup, 7 the caller may not do this.
#include "revision.hh"
#include <rct/control_api.hh>
#include <rct/size.hh>

#include "control_client.hh"
#include "rctctl_stats.hh"
#include "table.hh"

#include <CLI/CLI.hpp>
#include <curl/curl.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using rct::control_api::default_changes_limit;
using rct::control_api::max_changes_limit;
using namespace rct::tools;

struct options {
    std::string socket;
    std::string state_dir = "/var/lib/rctd";
    bool json_output = false;
};

std::uint64_t size_arg(const std::string& text, const std::string& what = "size",
                       const std::string& examples = "4096, 512M, 10G, 1.5T")
{
    if (auto v = rct::parse_size(text)) {
        return *v;
    }
    throw failure{exit_usage, "invalid " + what + " '" + text + "' (examples: " + examples + ")", {}, {}};
}

// The server's JSON as it is, pretty-printed; false when not asked for.
bool print_json(const options& opt, const response& r)
{
    if (!opt.json_output) {
        return false;
    }
    if (!r.body.empty()) {
        std::cout << parse_reply(r).dump(2) << '\n';
    }
    return true;
}

std::string str(const json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "-";
}

// "10s", "500ms", "2m" or plain seconds, as milliseconds.
std::uint64_t duration_ms(const std::string& text)
{
    std::size_t used = 0;
    double v = -1;
    try {
        v = std::stod(text, &used);
    } catch (const std::exception&) {
    }
    const std::string unit = text.substr(used);
    const double scale = unit.empty() || unit == "s" ? 1000 : unit == "ms" ? 1 : unit == "m" ? 60000 : -1;
    if (v < 0 || scale < 0) {
        throw failure{exit_usage, "invalid duration '" + text + "' (examples: 10s, 500ms, 2m)", {}, {}};
    }
    return static_cast<std::uint64_t>(v * scale);
}

std::uint64_t number(const json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

std::uint64_t bytes(const json& j) { return number(j, "size"); }

void cmd_upgrade(client& c, const options& opt, const std::string& binary, const std::string& timeout)
{
    json body{{"ready_timeout_ms", duration_ms(timeout)}};
    if (!binary.empty()) {
        body["binary"] = std::filesystem::absolute(binary).lexically_normal().string();
    }
    const response r = c.call("POST", "/upgrade", body);
    if (print_json(opt, r)) {
        return;
    }
    const json j = parse_reply(r);
    const json& o = j.at("old");
    const json& n = j.at("new");
    std::cout << fmt::format("upgraded rctd: pid {} ({}) -> pid {} ({}); I/O held {} ms; {} NBD connection(s) "
                             "moved; took {} ms\n",
                             o.at("pid").get<long>(), o.at("version").get<std::string>(), n.at("pid").get<long>(),
                             n.at("version").get<std::string>(),
                             j.at("held_ms").is_null() ? std::string("?")
                                                       : fmt::format("{:.1f}", j.at("held_ms").get<double>()),
                             j.at("connections").get<std::size_t>(), j.at("took_ms").get<long>());
}

void cmd_list(client& c, const options& opt)
{
    const response r = c.call("GET", "/disks");
    if (print_json(opt, r)) {
        return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "SIZE", "CLIENTS", "CREATED", "URI"}};
    const json reply = parse_reply(r);
    for (const auto& d : reply.value("disks", json::array())) {
        rows.push_back({str(d, "name"), rct::format_size(bytes(d)), std::to_string(d.value("clients", 0u)),
                        str(d, "created_at"), str(d, "export_uri")});
    }
    print_table(rows);
    for (const auto& q : reply.value("quarantined", json::array())) {
        std::cout << "quarantined (not served): " << str(q, "name") << ": " << str(q, "reason") << '\n';
    }
}

void cmd_info(client& c, const options& opt, const std::string& name)
{
    const response r = c.call("GET", "/disks/" + segment(name));
    if (print_json(opt, r)) {
        return;
    }
    const json d = parse_reply(r);
    std::vector<std::vector<std::string>> rows{
        {"name:", str(d, "name")},
        {"id:", str(d, "id")},
        {"size:", std::to_string(bytes(d)) + " bytes (" + rct::format_size(bytes(d)) + ")"},
        {"created:", str(d, "created_at")},
        {"clients:", std::to_string(d.value("clients", 0u))},
        {"export URI:", str(d, "export_uri")},
    };
    if (const json u = d.value("ublk", json()); u.is_object()) {
        rows.push_back({"ublk device:", str(u, "device")});
    }
    for (const auto& uri : d.value("uris", json::array())) {
        if (uri.is_string() && uri != d.value("export_uri", json())) {
            rows.push_back({"other URI:", uri.get<std::string>()});
        }
    }
    const json t = d.value("tracking", json());
    if (!t.is_object()) {
        rows.push_back({"tracking:", "off"});
        print_table(rows);
        return;
    }
    const std::string reason = t.value("reason", "");
    if (!t.value("active", false)) {
        rows.push_back({"tracking:", "invalidated" + (reason.empty() ? "" : ": " + reason)});
    } else {
        rows.push_back({"tracking:", "active" + (reason.empty() ? "" : " (reset: " + reason + ")")});
    }
    const std::uint64_t granularity = number(t, "granularity");
    const std::uint64_t excess = number(t, "recovery_excess_bytes");
    rows.push_back({"granularity:", std::to_string(granularity) + " bytes (" + rct::format_size(granularity) + ")"});
    rows.push_back({"generation:", std::to_string(number(t, "generation"))});
    rows.push_back({"current epoch:", std::to_string(number(t, "current_epoch"))});
    rows.push_back({"checkpoints:", std::to_string(number(t, "checkpoints"))});
    rows.push_back({"after a crash:", t.value("recovered_after_crash", false)
                                          ? "recovered; " + std::to_string(excess) + " bytes (" +
                                                rct::format_size(excess) +
                                                ") of intent regions counted as changed"
                                          : "no (clean start)"});
    print_table(rows);
}

void cmd_checkpoint(client& c, const options& opt, const std::string& name, const std::optional<std::string>& cp)
{
    json body = json::object();
    if (cp) {
        body["name"] = *cp;
    }
    const response r = c.call("POST", "/disks/" + segment(name) + "/checkpoints", body);
    if (print_json(opt, r)) {
        return;
    }
    // The token alone on stdout, so that TOKEN=$(rctctl checkpoint d) works.
    const json j = parse_reply(r);
    std::cout << str(j, "token") << '\n';
    std::cerr << "checkpoint " << str(j, "name") << " (epoch " << number(j, "epoch") << ") of disk " << name
              << '\n';
}

void cmd_checkpoints(client& c, const options& opt, const std::string& name)
{
    const response r = c.call("GET", "/disks/" + segment(name) + "/checkpoints");
    if (print_json(opt, r)) {
        return;
    }
    std::vector<std::vector<std::string>> rows{{"NAME", "EPOCH", "CREATED", "SIZE", "TOKEN"}};
    for (const auto& cp : parse_reply(r).value("checkpoints", json::array())) {
        rows.push_back({str(cp, "name"), std::to_string(number(cp, "epoch")), str(cp, "created_at"),
                        rct::format_size(bytes(cp)), str(cp, "token")});
    }
    print_table(rows);
}

// Follows next_cursor to the end. Extents that touch across a page boundary
// are joined, so the output does not depend on the page size. Text mode
// prints as it goes; --json has to hold every extent for its one document,
// as plain pairs rather than a JSON tree.
// query: the endpoint and its selection (changes?since=..., diff?from=...).
void cmd_changes(client& c, const options& opt, const std::string& query, std::uint64_t limit)
{
    using byte_range = std::pair<std::uint64_t, std::uint64_t>;  // offset, length
    const std::string path = query + "&limit=" + std::to_string(limit);

    std::vector<byte_range> all;
    std::optional<byte_range> last;  // may still grow with the next page
    const auto flush = [&] {
        if (!last) {
            return;
        }
        if (opt.json_output) {
            all.push_back(*last);
        } else {
            std::cout << last->first << ' ' << last->second << '\n';
        }
    };

    json since_epoch, until_epoch, granularity;
    std::string cursor = "0";
    std::uint64_t position = 0;
    for (bool first = true;; first = false) {
        const json page = parse_reply(c.call("GET", path + "&cursor=" + cursor));
        if (first) {
            since_epoch = page.value("since_epoch", json());
            until_epoch = page.value("until_epoch", json());
            granularity = page.value("granularity", json());
        }
        for (const auto& e : page.value("extents", json::array())) {
            const std::uint64_t offset = number(e, "offset");
            const std::uint64_t length = number(e, "length");
            if (last && last->first + last->second == offset) {
                last->second += length;
            } else {
                flush();
                last.emplace(offset, length);
            }
        }
        const json next = page.value("next_cursor", json());
        if (!next.is_string()) {
            break;
        }
        // A cursor starts with a position on the disk: one that does not
        // move on would loop forever.
        const std::string text = next.get<std::string>();
        const std::uint64_t at = std::strtoull(text.c_str(), nullptr, 10);
        if (at <= position) {
            throw failure{exit_failure, "rctd's change listing did not advance past cursor " + cursor, {}, {}};
        }
        position = at;
        cursor = text;
    }
    flush();
    if (!opt.json_output) {
        return;
    }
    std::cout << "{\n  \"since_epoch\": " << since_epoch.dump() << ",\n  \"until_epoch\": " << until_epoch.dump()
              << ",\n  \"granularity\": " << granularity.dump() << ",\n  \"extents\": [";
    const char* separator = "\n    ";
    for (const auto& [offset, length] : all) {
        std::cout << separator << "{\"offset\": " << offset << ", \"length\": " << length << '}';
        separator = ",\n    ";
    }
    std::cout << (all.empty() ? "]\n}\n" : "\n  ]\n}\n");
}

void cmd_snapshot(client& c, const options& opt, const std::string& name, const std::optional<std::string>& snap)
{
    json body = json::object();
    if (snap) {
        body["name"] = *snap;
    }
    const response r = c.call("POST", "/disks/" + segment(name) + "/snapshots", body);
    if (print_json(opt, r)) {
        return;
    }
    // Like checkpoint: the token alone on stdout.
    const json j = parse_reply(r);
    std::cout << str(j, "token") << '\n';
    std::cerr << "snapshot " << str(j, "name") << " (epoch " << number(j, "epoch") << ") of disk " << name
              << ", exported as " << str(j, "export") << '\n';
}

// A snapshot or checkpoint of several disks at one instant (--group):
// "DISK TOKEN" per member on stdout.
void cmd_group(client& c, const options& opt, const char* kind, const std::string& group,
               const std::vector<std::string>& disks)
{
    const response r = c.call("POST", std::string("/groups/") + kind + "s", json{{"name", group}, {"disks", disks}});
    if (print_json(opt, r)) {
        return;
    }
    const json j = parse_reply(r);
    for (const json& m : j.at("members")) {
        std::cout << str(m, "disk") << ' ' << str(m, "token") << '\n';
    }
    std::cerr << "group " << kind << ' ' << group << " of " << disks.size() << " disks at one instant (new writes held "
              << number(j, "held_ns") / 1000 << " us at most)\n";
}

void cmd_snapshots(client& c, const options& opt, const std::string& name)
{
    const response r = c.call("GET", "/disks/" + segment(name) + "/snapshots");
    if (print_json(opt, r)) {
        return;
    }
    const json j = parse_reply(r);
    std::vector<std::vector<std::string>> rows{{"NAME", "EPOCH", "CREATED", "SIZE", "OWN DATA", "STATE", "TOKEN"}};
    for (const auto& s : j.value("snapshots", json::array())) {
        const bool valid = s.value("valid", false);
        rows.push_back({str(s, "name"), std::to_string(number(s, "epoch")), str(s, "created_at"),
                        rct::format_size(bytes(s)), rct::format_size(number(s, "exclusive_bytes")),
                        valid ? "valid" : "INVALID: " + str(s, "invalid_reason"),
                        s.value("token", json()).is_string() ? str(s, "token") : "-"});
    }
    print_table(rows);
}

void report_disk(const options& opt, const response& r, const char* verb)
{
    if (print_json(opt, r)) {
        return;
    }
    const json d = parse_reply(r);
    std::cout << verb << " disk " << str(d, "name") << " (" << rct::format_size(bytes(d)) << "): "
              << str(d, "export_uri") << '\n';
}

}  // namespace

int main(int argc, char** argv)
{
    options opt;
    std::string name;
    std::string size_text;
    std::string from;
    std::string granularity_text;
    std::string checkpoint;
    std::string since;
    std::string until;
    std::uint64_t limit = default_changes_limit;
    bool force = false;
    bool move = false;

    CLI::App app{"rctctl: manage the disks of a running rctd"};
    app.require_subcommand(1);
    app.fallthrough();
    app.set_version_flag("--version", std::string("rctctl ") + RCT_VERSION + " (" + RCT_REVISION + ")",
                         "print the version and git revision, then exit");
    app.add_option("--socket", opt.socket,
                   "control socket (default: STATE-DIR/control.sock if --state-dir is given, else "
                   "$RCTD_CONTROL_SOCKET, else /var/lib/rctd/control.sock)");
    auto* state_dir = app.add_option("--state-dir", opt.state_dir, "rctd's state directory")->capture_default_str();
    app.add_flag("--json", opt.json_output, "print the server's JSON replies");

    auto* create = app.add_subcommand("create", "create an empty (sparse) disk");
    create->add_option("NAME", name, "disk name")->required();
    create->add_option("--size", size_text, "size, e.g. 10G, 512M, 1073741824")->required();
    auto* granularity = create->add_option("--granularity", granularity_text,
                                           "change-tracking chunk size, a power of two from 4K to 1M (default 64K)");

    auto* list = app.add_subcommand("list", "list the disks");
    auto* stats = app.add_subcommand("stats", "requests, bytes, errors and clients per disk (GET /metrics)");
    std::optional<std::string> stats_disk;
    unsigned watch = 0;
    stats->add_option("NAME", stats_disk, "only this disk");
    stats->add_option("--watch", watch, "refresh every N seconds, as rates, until interrupted")
        ->check(CLI::Range(1u, 3600u));

    auto* info = app.add_subcommand("info", "show one disk");
    info->add_option("NAME", name, "disk name")->required();

    auto* del = app.add_subcommand("delete", "delete a disk and its data");
    del->add_option("NAME", name, "disk name")->required();
    del->add_flag("--force", force, "disconnect connected clients");

    auto* resize = app.add_subcommand("resize", "grow (or with --force shrink) a disk");
    resize->add_option("NAME", name, "disk name")->required();
    resize->add_option("--size", size_text, "new size, e.g. 20G")->required();
    resize->add_flag("--force", force, "allow shrinking, which loses the data past the new end");

    auto* import = app.add_subcommand("import", "make a disk of an existing raw image");
    import->add_option("NAME", name, "disk name")->required();
    import->add_option("--from", from, "raw image file (copied sparsely)")->required();
    import->add_flag("--move", move, "move the file in instead of copying (same filesystem only)");

    std::vector<std::string> more_disks;
    std::string group;
    auto* cp_create = app.add_subcommand("checkpoint", "mark a point to back up from; prints its change token");
    cp_create->add_option("NAME", name, "disk name")->required();
    cp_create->add_option("DISK", more_disks, "more disks, cut at the same instant (with --group)");
    auto* cp_name = cp_create->add_option("--name", checkpoint, "checkpoint name (default: chosen by rctd)");
    auto* cp_group = cp_create->add_option("--group", group, "a consistency group: every disk named gets a "
                                                             "checkpoint of this name, all at one instant");
    cp_group->excludes(cp_name);

    auto* cp_list = app.add_subcommand("checkpoints", "list a disk's checkpoints");
    cp_list->add_option("NAME", name, "disk name")->required();

    auto* cp_delete = app.add_subcommand("checkpoint-delete", "delete a checkpoint");
    cp_delete->add_option("NAME", name, "disk name")->required();
    cp_delete->add_option("CHECKPOINT", checkpoint, "checkpoint name")->required();

    auto* changes = app.add_subcommand("changes", "list the byte ranges changed since a checkpoint");
    changes->add_option("NAME", name, "disk name")->required();
    changes->add_option("--since", since, "checkpoint name or change token")->required();
    auto* until_opt = changes->add_option("--until", until, "checkpoint name or token (default: now)");
    changes->add_option("--limit", limit, "extents per request")
        ->check(CLI::Range(std::uint64_t{1}, max_changes_limit))
        ->capture_default_str();

    std::string snap;
    auto* sn_create = app.add_subcommand("snapshot", "cut a point-in-time snapshot (also a checkpoint); prints its token");
    sn_create->add_option("NAME", name, "disk name")->required();
    sn_create->add_option("DISK", more_disks, "more disks, cut at the same instant (with --group)");
    auto* sn_name = sn_create->add_option("--name", snap, "snapshot name (default: chosen by rctd)");
    auto* sn_group = sn_create->add_option("--group", group, "a consistency group: every disk named gets a "
                                                             "snapshot of this name, all at one instant");
    sn_group->excludes(sn_name);
    auto* sn_list = app.add_subcommand("snapshots", "list a disk's snapshots, with the space each alone holds");
    sn_list->add_option("NAME", name, "disk name")->required();
    auto* sn_delete = app.add_subcommand("snapshot-delete", "free a snapshot's data; it stays as a checkpoint");
    sn_delete->add_option("NAME", name, "disk name")->required();
    sn_delete->add_option("SNAPSHOT", snap, "snapshot name")->required();
    sn_delete->add_flag("--force", force, "delete even while NAME@SNAPSHOT is exported (its clients get errors)");
    auto* diff = app.add_subcommand("diff", "list the byte ranges that differ between two snapshots or checkpoints");
    diff->add_option("NAME", name, "disk name")->required();
    diff->add_option("FROM", since, "snapshot, checkpoint or change token")->required();
    diff->add_option("TO", until, "snapshot, checkpoint, change token, or 'live'")->required();
    diff->add_option("--limit", limit, "extents per request")
        ->check(CLI::Range(std::uint64_t{1}, max_changes_limit))
        ->capture_default_str();
    auto* restore = app.add_subcommand("restore", "rewrite a disk with a snapshot's content");
    restore->add_option("NAME", name, "disk name")->required();
    restore->add_option("--from", snap, "snapshot name")->required();
    restore->add_flag("--force", force, "disconnect the disk's clients first (they would see the data change)");
    std::string source, new_name;
    bool ublk = false;
    auto* attach = app.add_subcommand("attach", "expose a disk as a local block device; prints its path");
    attach->add_option("NAME", name, "disk name")->required();
    attach->add_flag("--ublk", ublk, "as /dev/ublkbN, through the kernel's ublk driver")->required();
    auto* detach = app.add_subcommand("detach", "remove a disk's local block device");
    detach->add_option("NAME", name, "disk name")->required();
    detach->add_flag("--force", force,
                     "detach even while the device is mounted or held (its users then get I/O errors)");
    auto* clone = app.add_subcommand("clone", "make a new, independent disk from a snapshot");
    clone->add_option("SOURCE", source, "DISK@SNAPSHOT")->required();
    clone->add_option("NEWNAME", new_name, "name of the new disk")->required();

    std::string binary, ready_timeout = "10s";
    auto* upgrade = app.add_subcommand("upgrade", "replace the running rctd by a new binary without dropping a client "
                                                  "(docs/upgrade.md)");
    upgrade->add_option("--binary", binary, "the new rctd (default: the file rctd was started from)");
    upgrade->add_option("--ready-timeout", ready_timeout,
                        "how long the new rctd has to take over before the old one takes everything back")
        ->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) {
            return app.exit(e);  // --help
        }
        std::cerr << "rctctl: " << e.what() << "\nRun with --help for more information.\n";
        return exit_usage;
    }

    opt.socket = resolve_socket(opt.socket, opt.state_dir, state_dir->count() != 0);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    int status = exit_ok;
    try {
        client c(opt.socket);
        if (*create) {
            json body{{"name", name}, {"size", size_arg(size_text)}};
            if (granularity->count() != 0) {
                body["granularity"] = size_arg(granularity_text, "granularity", "4K, 64K, 1M");
            }
            const response r = c.call("POST", "/disks", body);
            report_disk(opt, r, "created");
        } else if (*list) {
            cmd_list(c, opt);
        } else if (*stats) {
            cmd_stats(c, stats_disk, watch, opt.json_output);
        } else if (*info) {
            cmd_info(c, opt, name);
        } else if (*del) {
            c.call("DELETE", "/disks/" + segment(name) + (force ? "?force=true" : ""));
            if (!opt.json_output) {
                std::cout << "deleted disk " << name << '\n';
            }
        } else if (*resize) {
            const json body{{"size", size_arg(size_text)}, {"force", force}};
            const response r = c.call("POST", "/disks/" + segment(name) + "/resize", body);
            report_disk(opt, r, "resized");
        } else if (*import) {
            // The path names the file in messages and, for a move, is what
            // rctd renames (only while it is still the passed file).
            const std::string path = std::filesystem::absolute(from).lexically_normal().string();
            const std::string ticket = pass_file(opt.socket, path);
            const response r = c.call(
                "POST", "/disks", json{{"name", name}, {"import_fd", ticket}, {"import_from", path}, {"move", move}});
            report_disk(opt, r, "imported");
        } else if ((*cp_create || *sn_create) && !more_disks.empty() && group.empty()) {
            throw failure{exit_usage, "several disks are cut at one instant only as a group: add --group NAME", {}, {}};
        } else if (*cp_create && !group.empty()) {
            more_disks.insert(more_disks.begin(), name);
            cmd_group(c, opt, "checkpoint", group, more_disks);
        } else if (*sn_create && !group.empty()) {
            more_disks.insert(more_disks.begin(), name);
            cmd_group(c, opt, "snapshot", group, more_disks);
        } else if (*cp_create) {
            cmd_checkpoint(c, opt, name, cp_name->count() != 0 ? std::optional(checkpoint) : std::nullopt);
        } else if (*cp_list) {
            cmd_checkpoints(c, opt, name);
        } else if (*cp_delete) {
            c.call("DELETE", "/disks/" + segment(name) + "/checkpoints/" + segment(checkpoint));
            if (!opt.json_output) {
                std::cout << "deleted checkpoint " << checkpoint << " of disk " << name << '\n';
            }
        } else if (*changes) {
            std::string query = "/disks/" + segment(name) + "/changes?since=" + segment(since);
            if (until_opt->count() != 0) {
                query += "&until=" + segment(until);
            }
            cmd_changes(c, opt, query, limit);
        } else if (*sn_create) {
            cmd_snapshot(c, opt, name, sn_name->count() != 0 ? std::optional(snap) : std::nullopt);
        } else if (*sn_list) {
            cmd_snapshots(c, opt, name);
        } else if (*sn_delete) {
            c.call("DELETE", "/disks/" + segment(name) + "/snapshots/" + segment(snap) + (force ? "?force=1" : ""));
            if (!opt.json_output) {
                std::cout << "deleted snapshot " << snap << " of disk " << name << " (kept as a checkpoint)\n";
            }
        } else if (*diff) {
            cmd_changes(c, opt, "/disks/" + segment(name) + "/diff?from=" + segment(since) + "&to=" + segment(until),
                        limit);
        } else if (*restore) {
            const response r = c.call("POST", "/disks/" + segment(name) + "/restore",
                                      json{{"from", snap}, {"force", force}});
            report_disk(opt, r, "restored");
        } else if (*attach) {
            const response r = c.call("POST", "/disks/" + segment(name) + "/ublk");
            if (!print_json(opt, r)) {
                // The path alone on stdout, so that DEV=$(rctctl attach d --ublk) works.
                const json j = parse_reply(r);
                std::cout << str(j, "device") << '\n';
                std::cerr << "attached disk " << name << " as " << str(j, "device") << " (" << number(j, "queues")
                          << " queue(s) of " << number(j, "depth") << " tags)\n";
            }
        } else if (*detach) {
            c.call("DELETE", "/disks/" + segment(name) + "/ublk" + (force ? "?force=1" : ""));
            if (!opt.json_output) {
                std::cout << "detached disk " << name << '\n';
            }
        } else if (*upgrade) {
            cmd_upgrade(c, opt, binary, ready_timeout);
        } else if (*clone) {
            const auto at = source.find('@');
            if (at == std::string::npos || at == 0 || at + 1 == source.size()) {
                throw failure{exit_usage, "clone: SOURCE must be DISK@SNAPSHOT, not '" + source + "'", {}, {}};
            }
            const response r = c.call("POST",
                                      "/disks/" + segment(source.substr(0, at)) + "/snapshots/" +
                                          segment(source.substr(at + 1)) + "/clone",
                                      json{{"name", new_name}});
            report_disk(opt, r, "cloned");
        }
    } catch (const failure& f) {
        if (opt.json_output && !f.body.empty()) {
            const json j = json::parse(f.body, nullptr, false);
            std::cout << (j.is_discarded() ? f.body : j.dump(2)) << '\n';
        }
        std::cerr << "rctctl: " << f.message << '\n';
        status = f.status;
    } catch (const std::exception& e) {
        std::cerr << "rctctl: " << e.what() << '\n';
        status = exit_failure;
    }
    curl_global_cleanup();
    return status;
}
