// replicate: keeps a replica of a disk on another rctd in step
// (docs/backup.md, "Replication"). Each run cuts a snapshot rct-repl-ID of
// the source, brings the replica's live disk to exactly that snapshot's
// content, and cuts a snapshot of the same name on the replica, so both
// sides hold the same chain of snapshots.
//
// What a run copies: everything the first time (or when the two sides share
// no snapshot, or rctd cannot say what changed); otherwise what the source
// changed since the newest snapshot both sides hold, plus whatever the
// replica's live disk changed since that snapshot (a run killed midway, or
// a writer that should not have been there). The replica then equals its
// snapshot there, and the source's new snapshot everywhere else: the union,
// read from the new snapshot, makes it equal to that snapshot everywhere.
//
// One run per disk at a time: each holds a flock on
// replicate-DISK_ID.lock (lock_dir()) for its source and for the replica
// (disk ids are unique across rctd instances), since a second run would
// take the first one's snapshot for a leftover and delete it. Runs by two
// different users are not kept apart.
#include "commands.hh"
#include "nbd.hh"
#include "progress.hh"
#include "queries.hh"
#include "read_ahead.hh"
#include "repo.hh"

#include <rct/size.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <iostream>
#include <optional>
#include <rct/control_api.hh>

namespace rct::backup {

namespace error_code = rct::control_api::error_code;

using tools::client;
using tools::progress;
using tools::exit_conflict;
using tools::exit_failure;
using tools::exit_full_backup;
using tools::exit_not_found;
using tools::failure;
using tools::segment;

namespace {

// Where this user's replication locks live: a directory no other user
// may write (/run/rct-backup for root, the runtime directory otherwise), so
// that nobody else can hold a lock to stop a replication.
std::string lock_dir()
{
    if (::geteuid() == 0) {
        ::mkdir("/run/rct-backup", 0700);
        return "/run/rct-backup";
    }
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    return runtime != nullptr && runtime[0] == '/' ? runtime : "/run/user/" + std::to_string(::geteuid());
}

// Held for the run; a conflict failure when another run holds it.
rct::unique_fd lock_replication(const std::string& disk_id, const std::string& what)
{
    if (disk_id.find('/') != std::string::npos || disk_id.empty() || disk_id[0] == '.') {
        throw failure{exit_failure, "rctd reported an unusable disk id: " + disk_id, {}, {}};
    }
    const std::string path = lock_dir() + "/replicate-" + disk_id + ".lock";
    rct::unique_fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) {
        throw failure{exit_failure, "cannot open " + path + ": " + std::strerror(errno), {}, {}};
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw failure{exit_conflict, "another rct-backup replicate is working on " + what + " (" + path + ")", {},
                          {}};
        }
        throw failure{exit_failure, "cannot lock " + path + ": " + std::strerror(errno), {}, {}};
    }
    return fd;
}

constexpr const char* prefix = "rct-repl-";
// Writes in flight on the replica: each may wait there for a copy-on-write
// (the replica keeps snapshots) or an intent commit, which batch.
constexpr std::size_t write_depth = 32;

struct target {
    std::string socket;
    std::string disk;
};

// CONTROL_SOCKET[:NAME]: a name is what follows the last ':' when it is one.
target parse_target(const std::string& to, const std::string& disk)
{
    const auto colon = to.rfind(':');
    if (colon != std::string::npos && colon + 1 < to.size() && to.find('/', colon) == std::string::npos) {
        return {to.substr(0, colon), to.substr(colon + 1)};
    }
    return {to, disk};
}

std::optional<json> find_disk(client& api, const std::string& disk)
{
    try {
        return api.call_json("GET", "/disks/" + segment(disk));
    } catch (const failure& f) {
        if (f.status == exit_not_found && f.code == error_code::not_found) {
            return std::nullopt;
        }
        throw;
    }
}

// The names of a disk's checkpoints (snapshots included) that replication
// made, oldest first.
std::vector<std::string> replicated(client& api, const std::string& disk)
{
    std::vector<std::string> out;
    const json reply = api.call_json("GET", "/disks/" + segment(disk) + "/checkpoints");
    for (const json& c : reply.at("checkpoints")) {
        const std::string n = c.at("name").get<std::string>();
        if (n.rfind(prefix, 0) == 0) {
            out.push_back(n);
        }
    }
    return out;
}

// The newest snapshot of the replica that the source also has.
std::optional<std::string> common_point(client& src, const std::string& disk, client& dst, const std::string& rdisk)
{
    const std::vector<std::string> mine = replicated(src, disk);
    const json snaps = dst.call_json("GET", "/disks/" + segment(rdisk) + "/snapshots").at("snapshots");
    for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
        const std::string n = it->at("name").get<std::string>();
        if (n.rfind(prefix, 0) == 0 && it->value("valid", false) &&
            std::find(mine.begin(), mine.end(), n) != mine.end()) {
            return n;
        }
    }
    return std::nullopt;
}

// Snapshots of the source that a killed run cut and never replicated (newer
// than the newest both sides hold: ids grow with time): they only cost space.
void drop_leftovers(client& src, const std::string& disk, const std::optional<std::string>& base)
{
    for (const std::string& n : replicated(src, disk)) {
        if (base && n <= *base) {
            continue;
        }
        note("deleting snapshot " + n + " of disk " + disk + ", cut by a replication that did not finish");
        try {
            src.call("DELETE", "/disks/" + segment(disk) + "/snapshots/" + segment(n) + "?force=1");
        } catch (const failure&) {
            // A checkpoint only (its data freed by hand): deleted below.
        }
        src.call("DELETE", "/disks/" + segment(disk) + "/checkpoints/" + segment(n));
    }
}

std::vector<byte_range> merged(std::vector<byte_range> a, const std::vector<byte_range>& b)
{
    a.insert(a.end(), b.begin(), b.end());
    std::sort(a.begin(), a.end());
    std::vector<byte_range> out;
    for (const auto& [o, l] : a) {
        if (!out.empty() && o <= out.back().first + out.back().second) {
            const std::uint64_t end = std::max(out.back().first + out.back().second, o + l);
            out.back().second = end - out.back().first;
        } else {
            out.emplace_back(o, l);
        }
    }
    return out;
}

// Copies `ranges` of the snapshot `in` onto the replica `out`: data as
// read, zeroes as zero requests (holes where the replica can punch them).
// A new replica reads as zeroes already, so its zeroes are skipped.
std::uint64_t copy(connection& in, connection& out, const std::vector<byte_range>& ranges, bool fresh, bool json)
{
    std::vector<byte_range> data;
    std::uint64_t total = 0;
    for (const extent& e : in.extents(ranges)) {
        if (!e.zero) {
            data.emplace_back(e.offset, e.length);
            total += e.length;
        } else if (!fresh) {
            out.zero_async(e.length, e.offset, write_depth);
        }
    }
    progress p("replicate", total, json);
    read_ahead reader(in, std::move(data), in.max_request(), 4);
    while (std::optional<read_ahead::block> b = reader.next()) {
        const std::size_t n = b->data.size();
        out.write_async(std::move(b->data), b->offset, write_depth);
        p.advance(n);
    }
    out.wait_writes();
    p.done();
    out.flush();
    return total;
}

std::string export_uri(const json& obj, const std::string& what)
{
    const json uri = obj.value("export_uri", json());
    if (!uri.is_string()) {
        throw failure{exit_failure, "rctd did not say where " + what + " is exported", {}, {}};
    }
    return uri.get<std::string>();
}

}  // namespace

namespace {

// The replica and what this run builds on.
struct replica_plan {
    json replica;
    bool fresh = false;               // created now, with the source's size: it reads as zeroes
    std::optional<std::string> base;  // the newest snapshot both sides hold
    std::string why;                  // why everything is copied (empty: the changes)
};

replica_plan plan_replica(client& src, const std::string& disk, client& dst, const std::string& rdisk,
                          std::uint64_t size)
{
    replica_plan p;
    if (std::optional<json> r = find_disk(dst, rdisk)) {
        p.replica = std::move(*r);
        p.base = common_point(src, disk, dst, rdisk);
        if (!p.base) {
            p.why = "the replica shares no snapshot with the source";
        }
    } else {
        p.replica = dst.call_json("POST", "/disks", json{{"name", rdisk}, {"size", size}});
        p.fresh = true;
        p.why = "a new replica";
    }
    const auto rsize = p.replica.at("size").get<std::uint64_t>();
    if (rsize < size) {
        p.replica = dst.call_json("POST", "/disks/" + segment(rdisk) + "/resize", json{{"size", size}});
    } else if (rsize > size) {
        throw failure{exit_failure,
                      fmt::format("disk {} is smaller than its replica {} (it shrank): delete the replica to start "
                                  "again",
                                  disk, rdisk),
                      {}, {}};
    }
    return p;
}

// What to copy onto the replica to make it snapshot `snap`: see the top.
std::vector<byte_range> ranges_to_copy(client& src, const std::string& disk, client& dst, const std::string& rdisk,
                                       replica_plan& p, const std::string& snap, std::uint64_t size)
{
    if (p.base) {
        try {
            return merged(changed_ranges(src, disk, *p.base, snap), changed_ranges(dst, rdisk, *p.base, "live"));
        } catch (const failure& f) {
            if (f.status != exit_full_backup) {
                throw;
            }
            p.why = "rctd cannot say what changed since " + *p.base + ": " + f.message;
            p.base.reset();
        }
    }
    note(fmt::format("copying all of disk {} to {}: {}", disk, rdisk, p.why));
    return {{0, size}};
}

void print_replicated(const settings& s, const std::string& disk, const std::string& rdisk, const std::string& snap,
                      const replica_plan& p, std::uint64_t bytes, double seconds)
{
    if (s.json) {
        std::cout << json{{"event", "result"},   {"disk", disk},
                          {"replica", rdisk},    {"snapshot", snap},
                          {"base", p.base ? json(*p.base) : json(nullptr)},
                          {"data_bytes", bytes}, {"full_reason", p.why.empty() ? json(nullptr) : json(p.why)},
                          {"seconds", seconds}}
                         .dump()
                  << std::endl;
        return;
    }
    std::cout << fmt::format("replicated disk {} to {} as snapshot {} ({} of data{}) in {:.2f} s\n", disk, rdisk, snap,
                             rct::format_size(bytes), p.base ? ", changes since " + *p.base : "", seconds);
}

}  // namespace

void cmd_replicate(const settings& s, const std::string& disk, const std::string& to)
{
    const auto started = std::chrono::steady_clock::now();
    const target t = parse_target(to, disk);
    client src(s.control_socket);
    client dst(t.socket);
    const json info = src.call_json("GET", "/disks/" + segment(disk));
    const std::uint64_t size = info.at("size").get<std::uint64_t>();
    const rct::unique_fd source_lock = lock_replication(info.at("id").get<std::string>(), "disk " + disk);
    replica_plan p = plan_replica(src, disk, dst, t.disk, size);
    const rct::unique_fd replica_lock =
        lock_replication(p.replica.at("id").get<std::string>(), "replica " + t.disk + " on " + t.socket);
    if (!p.fresh) {
        drop_leftovers(src, disk, p.base);
    }
    const std::string snap = prefix + new_id({});
    const json cut = src.call_json("POST", "/disks/" + segment(disk) + "/snapshots", json{{"name", snap}});
    const std::vector<byte_range> ranges = ranges_to_copy(src, disk, dst, t.disk, p, snap, size);
    std::uint64_t bytes = 0;
    {
        connection in(s.nbd_socket.empty() ? export_uri(cut, "snapshot " + snap)
                                            : "nbd+unix:///" + disk + "%40" + snap + "?socket=" + s.nbd_socket,
                      false);
        connection out(export_uri(p.replica, "disk " + t.disk), false);
        bytes = copy(in, out, ranges, p.fresh, s.json);
    }
    dst.call_json("POST", "/disks/" + segment(t.disk) + "/snapshots", json{{"name", snap}});
    print_replicated(s, disk, t.disk, snap, p, bytes,
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

}  // namespace rct::backup
