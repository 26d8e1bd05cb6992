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
#include "rctctl_jobs.hh"
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

void disk_line(const json& d, const char* verb)
{
    std::cout << verb << " disk " << str(d, "name") << " (" << rct::format_size(bytes(d)) << "): "
              << str(d, "export_uri") << '\n';
}

void report_disk(const options& opt, const response& r, const char* verb)
{
    if (print_json(opt, r)) {
        return;
    }
    disk_line(parse_reply(r), verb);
}

// What the command line gave, for whichever command it names.
struct arguments {
    std::string name, size_text, from, granularity_text, checkpoint, since, until, snap, group, source, new_name;
    std::vector<std::string> more_disks;
    std::optional<std::string> stats_disk;
    std::string binary, ready_timeout = "10s";
    std::uint64_t limit = default_changes_limit;
    unsigned watch = 0;
    bool force = false, move = false, ublk = false, detach = false;
};

// One command: its options (declare) and what it does once parsed (run;
// `sub` says which options were given).
struct command {
    const char* name;
    const char* help;
    void (*declare)(CLI::App& sub, arguments& a);
    void (*run)(client& c, const options& opt, arguments& a, const CLI::App& sub);
};

void disk_name(CLI::App& sub, arguments& a) { sub.add_option("NAME", a.name, "disk name")->required(); }

void detach_option(CLI::App& sub, arguments& a)
{
    sub.add_flag("--detach", a.detach, "start the job, print its id and return (follow it with `rctctl job ID`)");
}

// An import or clone, run by rctd as a job (rctctl_jobs.hh) and followed
// to its end unless --detach; the new disk is reported as `verb`.
void run_job(client& c, const options& opt, const arguments& a, const std::string& path, const json& body,
             const char* verb)
{
    const json job = c.call_json("POST", path, body);
    if (a.detach) {
        if (opt.json_output) {
            std::cout << job.dump(2) << '\n';
        } else {
            std::cout << "started job " << str(job, "id") << ": " << str(job, "kind") << " of " << str(job, "disk")
                      << '\n';
        }
        return;
    }
    const json d = follow_job(c, job, opt.json_output);
    if (opt.json_output) {
        std::cout << d.dump() << '\n';
        return;
    }
    disk_line(d, verb);
}

void limit_option(CLI::App& sub, arguments& a)
{
    sub.add_option("--limit", a.limit, "extents per request")
        ->check(CLI::Range(std::uint64_t{1}, max_changes_limit))
        ->capture_default_str();
}

// checkpoint and snapshot: one disk, or several cut at one instant as a group.
void cut_options(CLI::App& sub, arguments& a, std::string& name, const char* what)
{
    disk_name(sub, a);
    sub.add_option("DISK", a.more_disks, "more disks, cut at the same instant (with --group)");
    auto* named = sub.add_option("--name", name, fmt::format("{} name (default: chosen by rctd)", what));
    sub.add_option("--group", a.group,
                   fmt::format("a consistency group: every disk named gets a {} of this name, all at one instant",
                               what))
        ->excludes(named);
}

void run_cut(client& c, const options& opt, arguments& a, const CLI::App& sub, const char* kind)
{
    if (!a.more_disks.empty() && a.group.empty()) {
        throw failure{exit_usage, "several disks are cut at one instant only as a group: add --group NAME", {}, {}};
    }
    if (!a.group.empty()) {
        a.more_disks.insert(a.more_disks.begin(), a.name);
        cmd_group(c, opt, kind, a.group, a.more_disks);
        return;
    }
    const bool named = sub.count("--name") != 0;
    if (std::string_view(kind) == "checkpoint") {
        cmd_checkpoint(c, opt, a.name, named ? std::optional(a.checkpoint) : std::nullopt);
    } else {
        cmd_snapshot(c, opt, a.name, named ? std::optional(a.snap) : std::nullopt);
    }
}

void done_line(const options& opt, const std::string& text)
{
    if (!opt.json_output) {
        std::cout << text << '\n';
    }
}

// The disks themselves.
std::vector<command> disk_commands()
{
    return {
        {"create", "create an empty (sparse) disk",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("--size", a.size_text, "size, e.g. 10G, 512M, 1073741824")->required();
             sub.add_option("--granularity", a.granularity_text,
                            "change-tracking chunk size, a power of two from 4K to 1M (default 64K)");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App& sub) {
             json body{{"name", a.name}, {"size", size_arg(a.size_text)}};
             if (sub.count("--granularity") != 0) {
                 body["granularity"] = size_arg(a.granularity_text, "granularity", "4K, 64K, 1M");
             }
             report_disk(opt, c.call("POST", "/disks", body), "created");
         }},
        {"list", "list the disks", [](CLI::App&, arguments&) {},
         [](client& c, const options& opt, arguments&, const CLI::App&) { cmd_list(c, opt); }},
        {"stats", "requests, bytes, errors and clients per disk (GET /metrics)",
         [](CLI::App& sub, arguments& a) {
             sub.add_option("NAME", a.stats_disk, "only this disk");
             sub.add_option("--watch", a.watch, "refresh every N seconds, as rates, until interrupted")
                 ->check(CLI::Range(1u, 3600u));
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             cmd_stats(c, a.stats_disk, a.watch, opt.json_output);
         }},
        {"info", "show one disk", disk_name,
         [](client& c, const options& opt, arguments& a, const CLI::App&) { cmd_info(c, opt, a.name); }},
        {"delete", "delete a disk and its data",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_flag("--force", a.force, "disconnect connected clients");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             c.call("DELETE", "/disks/" + segment(a.name) + (a.force ? "?force=true" : ""));
             done_line(opt, "deleted disk " + a.name);
         }},
        {"resize", "grow (or with --force shrink) a disk",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("--size", a.size_text, "new size, e.g. 20G")->required();
             sub.add_flag("--force", a.force, "allow shrinking, which loses the data past the new end");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             const json body{{"size", size_arg(a.size_text)}, {"force", a.force}};
             report_disk(opt, c.call("POST", "/disks/" + segment(a.name) + "/resize", body), "resized");
         }},
        {"import", "make a disk of an existing raw image",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("--from", a.from, "raw image file (copied sparsely)")->required();
             sub.add_flag("--move", a.move, "move the file in instead of copying (same filesystem only)");
             detach_option(sub, a);
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             // The path names the file in messages and, for a move, is what
             // rctd renames (only while it is still the passed file).
             const std::string path = std::filesystem::absolute(a.from).lexically_normal().string();
             const std::string ticket = pass_file(opt.socket, path);
             run_job(c, opt, a, "/disks?job=true",
                     json{{"name", a.name}, {"import_fd", ticket}, {"import_from", path}, {"move", a.move}},
                     "imported");
         }},
    };
}

// Checkpoints and what changed since them.
std::vector<command> tracking_commands()
{
    return {
        {"checkpoint", "mark a point to back up from; prints its change token",
         [](CLI::App& sub, arguments& a) { cut_options(sub, a, a.checkpoint, "checkpoint"); },
         [](client& c, const options& opt, arguments& a, const CLI::App& sub) {
             run_cut(c, opt, a, sub, "checkpoint");
         }},
        {"checkpoints", "list a disk's checkpoints", disk_name,
         [](client& c, const options& opt, arguments& a, const CLI::App&) { cmd_checkpoints(c, opt, a.name); }},
        {"checkpoint-delete", "delete a checkpoint",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("CHECKPOINT", a.checkpoint, "checkpoint name")->required();
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             c.call("DELETE", "/disks/" + segment(a.name) + "/checkpoints/" + segment(a.checkpoint));
             done_line(opt, "deleted checkpoint " + a.checkpoint + " of disk " + a.name);
         }},
        {"changes", "list the byte ranges changed since a checkpoint",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("--since", a.since, "checkpoint name or change token")->required();
             sub.add_option("--until", a.until, "checkpoint name or token (default: now)");
             limit_option(sub, a);
         },
         [](client& c, const options& opt, arguments& a, const CLI::App& sub) {
             std::string query = "/disks/" + segment(a.name) + "/changes?since=" + segment(a.since);
             if (sub.count("--until") != 0) {
                 query += "&until=" + segment(a.until);
             }
             cmd_changes(c, opt, query, a.limit);
         }},
    };
}

// Snapshots, the diffs between them, and a disk restored to one.
std::vector<command> snapshot_commands()
{
    return {
        {"snapshot", "cut a point-in-time snapshot (also a checkpoint); prints its token",
         [](CLI::App& sub, arguments& a) { cut_options(sub, a, a.snap, "snapshot"); },
         [](client& c, const options& opt, arguments& a, const CLI::App& sub) { run_cut(c, opt, a, sub, "snapshot"); }},
        {"snapshots", "list a disk's snapshots, with the space each alone holds", disk_name,
         [](client& c, const options& opt, arguments& a, const CLI::App&) { cmd_snapshots(c, opt, a.name); }},
        {"snapshot-delete", "free a snapshot's data; it stays as a checkpoint",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("SNAPSHOT", a.snap, "snapshot name")->required();
             sub.add_flag("--force", a.force, "delete even while NAME@SNAPSHOT is exported (its clients get errors)");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             c.call("DELETE",
                    "/disks/" + segment(a.name) + "/snapshots/" + segment(a.snap) + (a.force ? "?force=true" : ""));
             done_line(opt, "deleted snapshot " + a.snap + " of disk " + a.name + " (kept as a checkpoint)");
         }},
        {"diff", "list the byte ranges that differ between two snapshots or checkpoints",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("FROM", a.since, "snapshot, checkpoint or change token")->required();
             sub.add_option("TO", a.until, "snapshot, checkpoint, change token, or 'live'")->required();
             limit_option(sub, a);
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             cmd_changes(c, opt, "/disks/" + segment(a.name) + "/diff?from=" + segment(a.since) + "&to=" + segment(a.until),
                         a.limit);
         }},
        {"restore", "rewrite a disk with a snapshot's content",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_option("--from", a.snap, "snapshot name")->required();
             sub.add_flag("--force", a.force, "disconnect the disk's clients first (they would see the data change)");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             const response r =
                 c.call("POST", "/disks/" + segment(a.name) + "/restore", json{{"from", a.snap}, {"force", a.force}});
             report_disk(opt, r, "restored");
         }},
    };
}

// Local block devices, clones, and rctd itself.
std::vector<command> device_commands()
{
    return {
        {"attach", "expose a disk as a local block device; prints its path",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_flag("--ublk", a.ublk, "as /dev/ublkbN, through the kernel's ublk driver")->required();
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             const response r = c.call("POST", "/disks/" + segment(a.name) + "/ublk");
             if (!print_json(opt, r)) {
                 // The path alone on stdout, so that DEV=$(rctctl attach d --ublk) works.
                 const json j = parse_reply(r);
                 std::cout << str(j, "device") << '\n';
                 std::cerr << "attached disk " << a.name << " as " << str(j, "device") << " (" << number(j, "queues")
                           << " queue(s) of " << number(j, "depth") << " tags)\n";
             }
         }},
        {"detach", "remove a disk's local block device",
         [](CLI::App& sub, arguments& a) {
             disk_name(sub, a);
             sub.add_flag("--force", a.force,
                          "detach even while the device is mounted or held (its users then get I/O errors)");
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             c.call("DELETE", "/disks/" + segment(a.name) + "/ublk" + (a.force ? "?force=true" : ""));
             done_line(opt, "detached disk " + a.name);
         }},
        {"clone", "make a new, independent disk from a snapshot",
         [](CLI::App& sub, arguments& a) {
             sub.add_option("SOURCE", a.source, "DISK@SNAPSHOT")->required();
             sub.add_option("NEWNAME", a.new_name, "name of the new disk")->required();
             detach_option(sub, a);
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             const auto at = a.source.find('@');
             if (at == std::string::npos || at == 0 || at + 1 == a.source.size()) {
                 throw failure{exit_usage, "clone: SOURCE must be DISK@SNAPSHOT, not '" + a.source + "'", {}, {}};
             }
             run_job(c, opt, a,
                     "/disks/" + segment(a.source.substr(0, at)) + "/snapshots/" + segment(a.source.substr(at + 1)) +
                         "/clone?job=true",
                     json{{"name", a.new_name}}, "cloned");
         }},
        {"jobs", "list the imports and clones running as jobs, and those ended lately",
         [](CLI::App&, arguments&) {},
         [](client& c, const options& opt, arguments&, const CLI::App&) { cmd_jobs(c, opt.json_output); }},
        {"job", "show a job: how far it has come, or how it ended",
         [](CLI::App& sub, arguments& a) { sub.add_option("ID", a.name, "job id")->required(); },
         [](client& c, const options& opt, arguments& a, const CLI::App&) { cmd_job(c, a.name, opt.json_output); }},
        {"job-cancel", "cancel a running job (rctd undoes it), or forget an ended one",
         [](CLI::App& sub, arguments& a) { sub.add_option("ID", a.name, "job id")->required(); },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             cmd_job_cancel(c, a.name, opt.json_output);
         }},
        {"upgrade", "replace the running rctd by a new binary without dropping a client (docs/upgrade.md)",
         [](CLI::App& sub, arguments& a) {
             sub.add_option("--binary", a.binary, "the new rctd (default: the file rctd was started from)");
             sub.add_option("--ready-timeout", a.ready_timeout,
                            "how long the new rctd has to take over before the old one takes everything back")
                 ->capture_default_str();
         },
         [](client& c, const options& opt, arguments& a, const CLI::App&) {
             cmd_upgrade(c, opt, a.binary, a.ready_timeout);
         }},
    };
}

const std::vector<command>& commands()
{
    static const std::vector<command> table = [] {
        std::vector<command> all;
        for (auto part : {disk_commands, tracking_commands, snapshot_commands, device_commands}) {
            for (const command& c : part()) {
                all.push_back(c);
            }
        }
        return all;
    }();
    return table;
}

// Runs the parsed command; its exit status.
int run_command(const command& cmd, const options& opt, arguments& a, const CLI::App& sub)
{
    try {
        client c(opt.socket);
        cmd.run(c, opt, a, sub);
        return exit_ok;
    } catch (const failure& f) {
        if (opt.json_output && !f.body.empty()) {
            const json j = json::parse(f.body, nullptr, false);
            std::cout << (j.is_discarded() ? f.body : j.dump(2)) << '\n';
        }
        std::cerr << "rctctl: " << f.message << '\n';
        return f.status;
    } catch (const std::exception& e) {
        std::cerr << "rctctl: " << e.what() << '\n';
        return exit_failure;
    }
}

}  // namespace

int main(int argc, char** argv)
{
    options opt;
    arguments args;
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
    std::vector<std::pair<const command*, CLI::App*>> subs;
    for (const command& cmd : commands()) {
        CLI::App* sub = app.add_subcommand(cmd.name, cmd.help);
        cmd.declare(*sub, args);
        subs.emplace_back(&cmd, sub);
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) {
            return app.exit(e);  // --help, --version
        }
        std::cerr << "rctctl: " << e.what() << "\nRun with --help for more information.\n";
        return exit_usage;
    }
    opt.socket = resolve_socket(opt.socket, opt.state_dir, state_dir->count() != 0);
    const auto chosen = std::find_if(subs.begin(), subs.end(), [](const auto& s) { return s.second->parsed(); });
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const int status = run_command(*chosen->first, opt, args, *chosen->second);
    curl_global_cleanup();
    return status;
}
