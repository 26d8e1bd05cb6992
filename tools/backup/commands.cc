#include "commands.hh"
#include "queries.hh"

#include "nbd.hh"
#include "process.hh"
#include "progress.hh"
#include "read_ahead.hh"
#include "table.hh"
#include "repo.hh"

#include <rct/size.hh>
#include <rct/small_file.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <signal.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>

namespace rct::backup {

using tools::client;
using tools::progress;
using tools::exit_failure;
using tools::exit_full_backup;
using tools::exit_not_found;
using tools::exit_usage;
using tools::failure;
using tools::segment;
namespace fs = std::filesystem;

namespace {

std::string now_rfc3339()
{
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

// Deletes a snapshot rct-backup cut and its checkpoint; best effort, for
// cleaning up after a failed or killed run.
void drop_snapshot(client& api, const std::string& disk, const std::string& snap)
{
    const std::string base = "/disks/" + segment(disk);
    try {
        api.call("DELETE", base + "/snapshots/" + segment(snap) + "?force=1");
    } catch (const failure&) {
    }
    try {
        api.call("DELETE", base + "/checkpoints/" + segment(snap));
    } catch (const failure&) {
    }
}

// What a backup run decided to do, and why.
struct plan {
    std::string mode;  // "full", "inc", "diff"
    std::optional<manifest> base;
    std::string reason;  // why a full was taken by auto (empty otherwise)
};

plan choose(const std::vector<manifest>& points, const std::string& requested, const std::string& disk,
            const std::string& disk_id)
{
    if (requested == "full") {
        return {"full", {}, {}};
    }
    std::optional<manifest> base;
    for (auto it = points.rbegin(); it != points.rend(); ++it) {
        if (requested != "diff" || it->mode == "full") {
            base = *it;
            break;
        }
    }
    std::string why;
    if (!base) {
        why = "there is no backup of disk " + disk + " in the repository yet";
    } else if (base->disk_id != disk_id) {
        why = "disk " + disk + " was re-created since backup " + base->id + " (its id is now " + disk_id +
              ", the chain's is " + base->disk_id + ")";
    }
    if (why.empty()) {
        return {requested == "auto" ? "inc" : requested, base, {}};
    }
    if (requested == "auto") {
        return {"full", {}, why};
    }
    throw failure{exit_full_backup, why + ": a full backup is required (rct-backup full, or auto)", {}, {}};
}

// Copies what the plan needs from the snapshot export to the new image and
// records what it wrote.
// Writes in flight on the sink (qemu-nbd over the new image).
constexpr std::size_t write_depth = 16;

class copier {
public:
    // image: the file the sink writes, whose writeback is started as the
    // copy goes, so that the sync before the commit finds little left.
    copier(connection& in, connection& out, manifest& m, const fs::path& image, bool json)
        : in_(in), out_(out), m_(m), image_(::open(image.c_str(), O_RDONLY | O_CLOEXEC)), json_(json)
    {
    }

    // ranges: what to look at; a full skips zeroes (a new image reads as
    // zeroes), other modes write them. Data is read ahead on a second thread
    // while this one writes and hashes.
    void run(const std::vector<byte_range>& ranges, bool write_zeroes)
    {
        std::vector<byte_range> data;
        std::uint64_t total = 0;
        for (const extent& e : in_.extents(ranges)) {
            if (e.zero && write_zeroes) {
                zero(e.offset, e.length);
            } else if (!e.zero) {
                data.emplace_back(e.offset, e.length);
                total += e.length;
            }
        }
        progress p("backup", total, json_);
        read_ahead reader(in_, std::move(data), in_.max_request(), 4);
        while (std::optional<read_ahead::block> b = reader.next()) {
            const std::size_t n = b->data.size();
            copy(b->offset, std::move(b->data), write_zeroes);
            p.advance(n);
            start_writeback(n);
        }
        out_.wait_writes();
        p.done();
        std::sort(m_.ranges.begin(), m_.ranges.end(),
                  [](const written_range& x, const written_range& y) { return x.offset < y.offset; });
    }

private:
    // Every 32 MiB copied: the sink's dirty pages so far go to the disk in
    // the background (best effort: without the file, the final sync does it).
    void start_writeback(std::uint64_t n)
    {
        unsynced_ += n;
        if (unsynced_ >= (32 << 20) && image_) {
            ::sync_file_range(image_.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
            unsynced_ = 0;
        }
    }

    void zero(std::uint64_t offset, std::uint64_t length)
    {
        out_.zero_async(length, offset, write_depth);
        m_.zero_bytes += length;
        if (!m_.ranges.empty() && !m_.ranges.back().xxh64 &&
            m_.ranges.back().offset + m_.ranges.back().length == offset) {
            m_.ranges.back().length += length;
        } else {
            m_.ranges.push_back({offset, length, {}});
        }
    }

    // Data in pieces that end on checksum_chunk boundaries; pieces that turn
    // out to be zeroes are written as zeroes (or skipped in a full). The
    // data goes out with several writes in flight: a block without zeroes
    // as one write, else each data piece on its own.
    void copy(std::uint64_t offset, buffer buf, bool write_zeroes)
    {
        std::vector<byte_range> data;  // (at, length) within buf
        for (std::uint64_t at = 0; at < buf.size();) {
            const std::uint64_t pos = offset + at;
            const std::uint64_t piece = std::min(buf.size() - at, checksum_chunk - pos % checksum_chunk);
            const char* p = buf.data() + at;
            if (all_zero(p, piece)) {
                if (write_zeroes) {
                    zero(pos, piece);
                }
            } else {
                if (!data.empty() && data.back().first + data.back().second == at) {
                    data.back().second += piece;
                } else {
                    data.emplace_back(at, piece);
                }
                m_.ranges.push_back({pos, piece, XXH64(p, piece, 0)});
                m_.data_bytes += piece;
            }
            at += piece;
        }
        if (data.size() == 1 && data[0].second == buf.size()) {
            out_.write_async(std::move(buf), offset, write_depth);
            return;
        }
        const auto shared = std::make_shared<const buffer>(std::move(buf));
        for (const auto& [at, length] : data) {
            out_.write_async(shared, at, length, offset + at, write_depth);
        }
    }

    connection& in_;
    connection& out_;
    manifest& m_;
    rct::unique_fd image_;
    std::uint64_t unsynced_ = 0;
    bool json_;
};

std::string snapshot_uri(const settings& s, const json& snap, const std::string& disk, const std::string& name)
{
    if (!s.nbd_socket.empty()) {
        return "nbd+unix:///" + disk + "%40" + name + "?socket=" + s.nbd_socket;
    }
    const json uri = snap.value("export_uri", json());
    if (!uri.is_string()) {
        throw failure{exit_failure, "rctd did not say where snapshot " + name + " is exported; give --socket", {},
                      {}};
    }
    return uri.get<std::string>();
}

// Deletes the checkpoints of this disk's earlier points that no later
// backup needs: only the newest point's and its chain's full are kept.
void drop_old_checkpoints(client& api, const std::string& disk, const std::vector<manifest>& points,
                          const manifest& now)
{
    const auto full = std::find_if(points.begin(), points.end(), [&](const manifest& m) { return m.id == now.full; });
    for (const manifest& m : points) {
        if (m.checkpoint == now.checkpoint || (full != points.end() && m.checkpoint == full->checkpoint)) {
            continue;
        }
        try {
            api.call("DELETE", "/disks/" + segment(disk) + "/checkpoints/" + segment(m.checkpoint));
        } catch (const failure&) {
            // Already gone (deleted by hand, or the disk was re-created).
        }
    }
}

void print_result(const settings& s, const manifest& m, const plan& p, double seconds)
{
    if (s.json) {
        json j = to_json(m);
        j.erase("ranges");
        j["event"] = "result";
        j["full_reason"] = p.reason.empty() ? json(nullptr) : json(p.reason);
        j["seconds"] = seconds;
        std::cout << j.dump() << std::endl;
        return;
    }
    std::cout << fmt::format("{} backup {} of disk {}: {} of data, {} of zeroes, in {:.2f} s -> {}\n", m.mode, m.id,
                             m.disk, rct::format_size(m.data_bytes), rct::format_size(m.zero_bytes), seconds,
                             (s.repo / m.disk / m.file).string());
}

}  // namespace

namespace {

// One disk's backup from its plan to its committed point.
struct pending_backup {
    std::string disk;
    std::string requested;
    fs::path dir;
    rct::unique_fd lock;
    std::vector<manifest> points;
    plan p;
    manifest m;
    fs::path pending;  // names the snapshot while the backup is unfinished
    json snap;         // the snapshot cut for it
};

// Locks the disk's directory, clears what a killed run left and plans.
pending_backup prepare(const settings& s, client& api, const std::string& disk, const std::string& requested)
{
    pending_backup b;
    b.disk = disk;
    b.requested = requested;
    b.dir = disk_dir(s.repo, disk);
    const json info = api.call_json("GET", "/disks/" + segment(disk));
    b.lock = lock_disk_dir(b.dir);
    finish_interrupted_prune(b.dir);
    for (const std::string& snap : discard_leftovers(b.dir)) {
        note("discarded an unfinished backup of disk " + disk + " (snapshot " + snap + ")");
        drop_snapshot(api, disk, snap);
    }
    b.points = load_points(b.dir);
    b.p = choose(b.points, requested, disk, info.at("id").get<std::string>());
    b.m.disk = disk;
    b.m.disk_id = info.at("id").get<std::string>();
    return b;
}

// Names the point (id, above every point of the disk: chosen under its
// lock) and records its snapshot's name before the cut, so that a killed
// run's snapshot is found.
void stamp(pending_backup& b, const std::string& id)
{
    b.m.id = id;
    b.m.checkpoint = "rct-backup-" + id;
    b.m.created_at = now_rfc3339();
    b.pending = temp_path(b.dir, id, ".pending");
    rct::persist::replace_file(b.dir, b.pending.filename().string(),
                               std::vector<std::uint8_t>(b.m.checkpoint.begin(), b.m.checkpoint.end()));
}

// What to copy: everything for a full, else the changes since the base
// (auto falls back to a full when rctd cannot say them, and says why).
std::vector<byte_range> ranges_for(client& api, pending_backup& b)
{
    manifest& m = b.m;
    std::vector<byte_range> ranges;
    if (b.p.base) {
        try {
            ranges = changed_ranges(api, b.disk, b.p.base->token, m.checkpoint);
        } catch (const failure& f) {
            if (f.status != exit_full_backup || b.requested != "auto") {
                throw failure{f.status,
                              "rctd cannot say what changed since backup " + b.p.base->id + ": " + f.message +
                                  (f.status == exit_full_backup ? " (run rct-backup full, or auto)" : ""),
                              f.body, f.code};
            }
            b.p = {"full", {}, "rctd cannot say what changed since backup " + b.p.base->id + ": " + f.message};
        }
    }
    if (!b.p.reason.empty()) {
        note("taking a full backup of disk " + b.disk + ": " + b.p.reason);
    }
    m.mode = b.p.mode;
    m.parent = b.p.base ? std::optional(b.p.base->id) : std::nullopt;
    m.full = b.p.base ? b.p.base->full : m.id;
    m.file = image_name(m.mode, m.id);
    if (!b.p.base) {
        ranges = {{0, m.size}};
    }
    return ranges;
}

// From the cut snapshot to the committed point; the snapshot's data is
// freed, its checkpoint kept as the next backup's stamp.
void finish(const settings& s, client& api, pending_backup& b, std::chrono::steady_clock::time_point started)
{
    manifest& m = b.m;
    m.token = b.snap.at("token").get<std::string>();
    m.size = b.snap.at("size").get<std::uint64_t>();
    const fs::path temp_image = temp_path(b.dir, m.id, ".qcow2");
    try {
        const std::vector<byte_range> ranges = ranges_for(api, b);
        std::vector<std::string> create{"qemu-img", "create", "-q", "-f", "qcow2"};
        if (b.p.base) {
            // Relative: the repository can be moved or copied as a whole.
            create.insert(create.end(), {"-b", b.p.base->file, "-F", "qcow2"});
        }
        create.insert(create.end(), {temp_image.string(), std::to_string(m.size)});
        run(create);
        {
            served_image sink(temp_image.string(), true);
            {
                connection in(snapshot_uri(s, b.snap, b.disk, m.checkpoint), false);
                connection out(sink.socket(), true);
                copier(in, out, m, temp_image, s.json).run(ranges, b.p.base.has_value());
                out.flush();
            }
            sink.finish();
        }
        commit(b.dir, temp_image, m);
    } catch (...) {
        std::error_code ec;
        fs::remove(temp_image, ec);
        drop_snapshot(api, b.disk, m.checkpoint);
        fs::remove(b.pending, ec);
        throw;
    }
    try {
        api.call("DELETE", "/disks/" + segment(b.disk) + "/snapshots/" + segment(m.checkpoint) + "?force=1");
    } catch (const failure& f) {
        note("backup " + m.id + " is complete, but its snapshot's data could not be freed: " + f.message);
    }
    drop_old_checkpoints(api, b.disk, b.points, m);
    std::error_code ec;
    fs::remove(b.pending, ec);
    print_result(s, m, b.p, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

// Unfinished backups whose snapshots will not be used: gone again.
void abandon(client& api, std::vector<pending_backup>& bs, std::size_t from)
{
    for (std::size_t i = from; i < bs.size(); ++i) {
        if (bs[i].m.checkpoint.empty()) {
            continue;  // not stamped: nothing recorded or cut
        }
        drop_snapshot(api, bs[i].disk, bs[i].m.checkpoint);
        std::error_code ec;
        fs::remove(bs[i].pending, ec);
    }
}

}  // namespace

void cmd_backup(const settings& s, const std::string& disk, const std::string& requested)
{
    const auto started = std::chrono::steady_clock::now();
    client api(s.control_socket);
    pending_backup b = prepare(s, api, disk, requested);
    stamp(b, new_id(b.points));
    try {
        b.snap = api.call_json("POST", "/disks/" + segment(disk) + "/snapshots", json{{"name", b.m.checkpoint}});
    } catch (...) {
        std::vector<pending_backup> one;
        one.push_back(std::move(b));
        abandon(api, one, 0);
        throw;
    }
    finish(s, api, b, started);
}

void cmd_backup_group(const settings& s, const std::vector<std::string>& disks, const std::string& requested)
{
    const auto started = std::chrono::steady_clock::now();
    client api(s.control_socket);
    std::vector<pending_backup> bs;
    try {
        for (const std::string& d : disks) {
            if (std::count(disks.begin(), disks.end(), d) > 1) {
                throw failure{tools::exit_usage, "disk " + d + " is named twice in the group", {}, {}};
            }
            bs.push_back(prepare(s, api, d, requested));
        }
        // One id for every member, above each one's newest point (all
        // locked now): the members' snapshots share the name a group cut
        // needs.
        std::string id;
        for (const pending_backup& b : bs) {
            id = std::max(id, new_id(b.points));
        }
        for (pending_backup& b : bs) {
            stamp(b, id);
            b.m.group = b.m.checkpoint;
        }
        const json g = api.call_json("POST", "/groups/snapshots", json{{"name", "rct-backup-" + id}, {"disks", disks}});
        const json& members = g.at("members");
        for (std::size_t i = 0; i < bs.size(); ++i) {
            bs[i].snap = members.at(i);
        }
        note(fmt::format("cut {} disks at one instant (new writes held {} us at most)", disks.size(),
                         g.at("held_ns").get<std::uint64_t>() / 1000));
    } catch (...) {
        abandon(api, bs, 0);
        throw;
    }
    for (std::size_t i = 0; i < bs.size(); ++i) {
        try {
            finish(s, api, bs[i], started);
        } catch (...) {
            abandon(api, bs, i + 1);
            throw;
        }
    }
}

namespace {

std::vector<std::string> disks_in(const settings& s, const std::optional<std::string>& disk)
{
    if (disk) {
        if (!fs::is_directory(disk_dir(s.repo, *disk))) {
            throw failure{exit_not_found, "no backups of disk " + *disk + " in " + s.repo.string(), {}, {}};
        }
        return {*disk};
    }
    if (!fs::is_directory(s.repo)) {
        throw failure{exit_not_found, "no repository at " + s.repo.string(), {}, {}};
    }
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(s.repo)) {
        if (e.is_directory() && !e.path().filename().string().starts_with(".")) {
            out.push_back(e.path().filename().string());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// The point `at` of a disk (the newest when not given), with its chain.
std::vector<manifest> chain_at(const settings& s, const std::string& disk, const std::optional<std::string>& at)
{
    const std::vector<manifest> points = load_points(disk_dir(s.repo, disk));
    if (points.empty()) {
        throw failure{exit_not_found, "no backups of disk " + disk + " in " + s.repo.string(), {}, {}};
    }
    const std::string id = at.value_or(points.back().id);
    std::vector<manifest> chain = chain_to(points, id);
    if (chain.empty()) {
        throw failure{exit_not_found, "disk " + disk + " has no backup " + id + " (or a point of its chain is missing)",
                      {}, {}};
    }
    return chain;
}

// What is wrong with one point: its file against the manifest, then its
// data read back through qemu-nbd (the whole chain under it).
std::vector<std::string> check_point(const fs::path& dir, const manifest& m, bool json)
{
    std::vector<std::string> problems;
    const fs::path file = dir / m.file;
    if (!fs::exists(file)) {
        return {m.file + ": missing"};
    }
    if (fs::file_size(file) != m.file_size) {
        problems.push_back(fmt::format("{}: {} bytes, the manifest says {}", m.file, fs::file_size(file), m.file_size));
    } else if (file_xxh64(file) != m.file_xxh64) {
        problems.push_back(m.file + ": the file's checksum does not match its manifest (the file changed since it was written)");
    }
    try {
        served_image image(file.string(), false);
        connection c(image.socket(), true);
        if (c.size() != m.size) {
            problems.push_back(fmt::format("{}: virtual size {}, the manifest says {}", m.file, c.size(), m.size));
        }
        std::uint64_t total = 0;
        for (const auto& r : m.ranges) {
            total += r.length;
        }
        progress p("verify " + m.id, total, json);
        std::vector<char> buf(checksum_chunk);
        for (const auto& r : m.ranges) {
            for (std::uint64_t at = r.offset; at < r.offset + r.length;) {
                const std::uint64_t n = std::min<std::uint64_t>(r.offset + r.length - at, buf.size());
                c.read(buf.data(), n, at);
                const bool good = r.xxh64 ? XXH64(buf.data(), n, 0) == *r.xxh64 : all_zero(buf.data(), n);
                if (!good) {
                    problems.push_back(fmt::format("{}: {} bytes at offset {} do not match the manifest ({})", m.file,
                                                   n, at, r.xxh64 ? "checksum differs" : "should read as zeroes"));
                }
                at += n;
                p.advance(n);
            }
        }
        p.done();
    } catch (const failure& f) {
        problems.push_back(m.file + ": cannot be read: " + f.message);
    }
    return problems;
}

// Splits [offset, offset+n) at the filesystem's 4 KiB blocks (absolute
// boundaries) into runs of data and runs of all-zero blocks.
template <typename OnData, typename OnZero>
void split_zero(const char* p, std::uint64_t n, std::uint64_t offset, OnData on_data, OnZero on_zero)
{
    constexpr std::uint64_t block = 4096;
    const auto piece_end = [&](std::uint64_t at) { return std::min(n, (offset + at) / block * block + block - offset); };
    for (std::uint64_t at = 0; at < n;) {
        const bool zero = all_zero(p + at, piece_end(at) - at);
        std::uint64_t end = piece_end(at);
        while (end < n && all_zero(p + end, piece_end(end) - end) == zero) {
            end = piece_end(end);
        }
        zero ? on_zero(end - at, offset + at) : on_data(p + at, end - at, offset + at);
        at = end;
    }
}

// Where restore writes: an image file (created, sized, sparse), a block
// device, or an NBD server. Zeroes are never written as data: holes in the
// new file, punched ranges on a device, WRITE_ZEROES (trim allowed) on NBD,
// so a sparse target stays sparse. Data goes to a file or device with
// O_DIRECT where it is aligned (every block but an unaligned end).
//
// `lanes` writers may use it at once, each with its own lane number: an NBD
// target has a connection per lane; a file or device is one fd (pwrite).
class restore_target {
public:
    restore_target(const std::string& to, std::uint64_t size, unsigned lanes) : to_(to)
    {
        if (to.rfind("nbd://", 0) == 0 || to.rfind("nbd+unix://", 0) == 0 || to.rfind("nbds://", 0) == 0) {
            for (unsigned i = 0; i < lanes; ++i) {
                nbd_.push_back(std::make_unique<connection>(to, false));
            }
            check_size(nbd_[0]->size(), size);
            return;
        }
        struct stat st {};
        if (::stat(to.c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
            fd_ = rct::unique_fd(::open(to.c_str(), O_WRONLY | O_CLOEXEC));
            std::uint64_t device_size = 0;
            if (!fd_ || ::ioctl(fd_.get(), BLKGETSIZE64, &device_size) != 0) {
                fail("cannot open");
            }
            check_size(device_size, size);
            direct_ = rct::unique_fd(::open(to.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
            return;
        }
        fd_ = rct::unique_fd(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!fd_) {
            fail("cannot create");
        }
        if (::fstat(fd_.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
            throw failure{exit_usage, to + " is not a regular file, a block device or an NBD URI", {}, {}};
        }
        if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
            fail("cannot size");
        }
        fresh_ = true;
        direct_ = rct::unique_fd(::open(to.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
    }

    // Writes the data pieces of a block; its all-zero pieces as zero().
    void data(unsigned lane, const char* p, std::uint64_t n, std::uint64_t offset)
    {
        split_zero(
            p, n, offset,
            [&](const char* d, std::uint64_t len, std::uint64_t off) {
                if (!nbd_.empty()) {
                    nbd_[lane]->write(d, len, off);
                } else if (!write_direct(d, len, off) &&
                           ::pwrite(fd_.get(), d, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) {
                    fail("cannot write");
                }
            },
            [&](std::uint64_t len, std::uint64_t off) { zero(lane, len, off); });
    }

    void zero(unsigned lane, std::uint64_t n, std::uint64_t offset)
    {
        constexpr std::uint64_t chunk = 1 << 30;  // within NBD's 32-bit lengths
        for (std::uint64_t at = 0; !nbd_.empty() && at < n; at += chunk) {
            nbd_[lane]->zero(std::min(chunk, n - at), offset + at);
        }
        if (fresh_ || !nbd_.empty()) {
            return;
        }
        const auto off = static_cast<off_t>(offset), len = static_cast<off_t>(n);
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0 &&
            ::fallocate(fd_.get(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) != 0) {
            write_zeroes(n, offset);
        }
    }

    void finish()
    {
        for (auto& c : nbd_) {
            c->flush();
        }
        if (nbd_.empty() && ::fsync(fd_.get()) != 0) {
            fail("cannot fsync");
        }
    }

private:
    [[noreturn]] void fail(const std::string& what) const
    {
        throw failure{exit_failure, what + " " + to_ + ": " + std::strerror(errno), {}, {}};
    }

    void check_size(std::uint64_t have, std::uint64_t want) const
    {
        if (have < want) {
            throw failure{exit_usage, fmt::format("{} holds {} bytes, the image {}", to_, have, want), {}, {}};
        }
    }

    // Aligned pieces bypass the page cache: a restore's gigabytes would
    // only push out what the host caches, and here each first touch of a
    // page costs more than the copy into it. False: write it buffered (not
    // aligned, no O_DIRECT here, or the device wants larger blocks).
    bool write_direct(const char* d, std::uint64_t len, std::uint64_t off)
    {
        constexpr std::uint64_t align = 4096;
        if (!direct_ || !direct_ok_.load(std::memory_order_relaxed) || len % align != 0 || off % align != 0 ||
            reinterpret_cast<std::uintptr_t>(d) % align != 0) {
            return false;
        }
        const ssize_t n = ::pwrite(direct_.get(), d, len, static_cast<off_t>(off));
        if (n == static_cast<ssize_t>(len)) {
            return true;
        }
        if (n < 0 && errno == EINVAL) {
            direct_ok_ = false;
            return false;
        }
        if (n >= 0) {
            errno = EIO;  // a short write to a file or device: no errno of its own
        }
        fail("cannot write");
    }

    // For a device that can neither punch nor zero ranges.
    void write_zeroes(std::uint64_t n, std::uint64_t offset)
    {
        static const std::vector<char> zeroes(1 << 20);
        for (std::uint64_t at = 0; at < n;) {
            const std::uint64_t len = std::min<std::uint64_t>(zeroes.size(), n - at);
            if (::pwrite(fd_.get(), zeroes.data(), len, static_cast<off_t>(offset + at)) != static_cast<ssize_t>(len)) {
                fail("cannot write");
            }
            at += len;
        }
    }

    std::string to_;
    rct::unique_fd fd_;      // a file or device
    rct::unique_fd direct_;  // the same with O_DIRECT, when it can be opened so
    std::atomic<bool> direct_ok_{true};
    bool fresh_ = false;  // a file truncated here: its zeroes are holes already
    std::vector<std::unique_ptr<connection>> nbd_;  // one per lane
};

// rct:NAME: the NBD URI of that disk of rctd, created with `size` if it does
// not exist. An existing disk must read as zeroes (empty) unless `force`.
std::string rct_target(const settings& s, const std::string& name, std::uint64_t size, bool force)
{
    client api(s.control_socket);
    json info;
    bool created = false;
    try {
        info = api.call_json("GET", "/disks/" + segment(name));
    } catch (const failure& f) {
        if (f.status != exit_not_found) {
            throw;
        }
        info = api.call_json("POST", "/disks", json{{"name", name}, {"size", size}});
        created = true;
    }
    const json reported = info.value("export_uri", json());
    if (s.nbd_socket.empty() && !reported.is_string()) {
        throw failure{exit_failure, "rctd did not say where disk " + name + " is exported; give --socket", {}, {}};
    }
    const std::string uri =
        s.nbd_socket.empty() ? reported.get<std::string>() : "nbd+unix:///" + name + "?socket=" + s.nbd_socket;
    if (!created && !force) {
        connection c(uri, false);
        for (const extent& e : c.extents(0, c.size())) {
            if (!e.zero) {
                throw failure{tools::exit_conflict,
                              "disk " + name + " is not empty (data at offset " + std::to_string(e.offset) +
                                  "); --force overwrites it",
                              {}, {}};
            }
        }
    }
    return uri;
}

// Splits `ranges` (in order) into `n` runs of about equal bytes.
std::vector<std::vector<byte_range>> split_even(const std::vector<byte_range>& ranges, std::uint64_t total, unsigned n)
{
    std::vector<std::vector<byte_range>> parts(n);
    const std::uint64_t share = (total / n + 4095) / 4096 * 4096;  // on 4 KiB blocks
    std::uint64_t filled = 0;
    std::size_t part = 0;
    for (auto [offset, length] : ranges) {
        while (length > 0) {
            const std::uint64_t take = part + 1 == n ? length : std::min(length, share - filled);
            parts[part].emplace_back(offset, take);
            offset += take;
            length -= take;
            filled += take;
            if (filled == share && part + 1 < n) {
                ++part;
                filled = 0;
            }
        }
    }
    return parts;
}

// Copies the image `source` serves into `out` over `lanes` connections, each
// on its own thread with its share of the data, reading ahead; zero ranges
// first, from this thread.
void restore_into(const std::string& source, connection& c, restore_target& out, unsigned lanes, bool json)
{
    std::vector<byte_range> data;
    std::uint64_t total = 0;
    for (const extent& e : c.extents(0, c.size())) {
        if (!e.zero) {
            data.emplace_back(e.offset, e.length);
            total += e.length;
        } else {
            out.zero(0, e.length, e.offset);
        }
    }
    progress p("restore", total, json);
    std::atomic<std::uint64_t> copied{0};
    std::atomic<unsigned> finished{0};
    std::vector<std::exception_ptr> errors(lanes);  // each written by its lane, read after the joins
    std::vector<std::vector<byte_range>> parts = split_even(data, total, lanes);
    std::vector<std::thread> workers;
    for (unsigned lane = 0; lane < lanes; ++lane) {
        workers.emplace_back([&, lane] {
            try {
                connection in(source, true);
                read_ahead reader(in, std::move(parts[lane]), in.max_request(), 4);
                while (std::optional<read_ahead::block> b = reader.next()) {
                    out.data(lane, b->data.data(), b->data.size(), b->offset);
                    copied += b->data.size();
                }
            } catch (...) {
                errors[lane] = std::current_exception();
            }
            ++finished;
        });
    }
    // Progress from this thread, which owns `p`.
    std::uint64_t reported = 0;
    for (;;) {
        const bool all_done = finished.load() == lanes;
        const std::uint64_t now = copied.load();
        p.advance(now - reported);
        reported = now;
        if (all_done) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (auto& w : workers) {
        w.join();
    }
    for (const auto& e : errors) {
        if (e) {
            std::rethrow_exception(e);
        }
    }
    out.finish();
    p.done();
}

}  // namespace

void cmd_list(const settings& s, const std::optional<std::string>& disk)
{
    json all = json::object();
    std::vector<std::vector<std::string>> rows{{"DISK", "ID", "MODE", "PARENT", "CREATED", "SIZE", "DATA", "FILE"}};
    for (const std::string& d : disks_in(s, disk)) {
        json points = json::array();
        for (const manifest& m : load_points(disk_dir(s.repo, d))) {
            json j = to_json(m);
            j.erase("ranges");
            points.push_back(j);
            rows.push_back({d, m.id, m.mode, m.parent.value_or("-"), m.created_at, rct::format_size(m.size),
                            rct::format_size(m.data_bytes), m.file});
        }
        all[d] = points;
    }
    if (s.json) {
        std::cout << json{{"disks", all}}.dump(2) << '\n';
        return;
    }
    tools::print_table(rows);
}

bool cmd_verify(const settings& s, const std::optional<std::string>& disk, const std::optional<std::string>& at)
{
    json report = json::array();
    bool all_good = true;
    bool found = !at.has_value();
    for (const std::string& d : disks_in(s, disk)) {
        const fs::path dir = disk_dir(s.repo, d);
        const rct::unique_fd reading = lock_readers(dir, false);
        std::vector<manifest> points = load_points(dir);
        if (at) {
            if (std::none_of(points.begin(), points.end(), [&](const manifest& m) { return m.id == *at; })) {
                continue;
            }
            points = chain_at(s, d, at);
            found = true;
        }
        for (const manifest& m : points) {
            const std::vector<std::string> problems = check_point(dir, m, s.json);
            all_good = all_good && problems.empty();
            report.push_back({{"disk", d}, {"id", m.id}, {"file", m.file}, {"ok", problems.empty()},
                              {"problems", problems}});
            if (!s.json) {
                std::cout << (problems.empty() ? "ok       " : "CORRUPT  ") << d << ' ' << m.id << ' ' << m.file
                          << '\n';
                for (const auto& text : problems) {
                    std::cout << "         " << text << '\n';
                }
            }
        }
    }
    if (!found) {
        throw failure{exit_not_found, "no backup " + *at + " in " + s.repo.string(), {}, {}};
    }
    if (s.json) {
        std::cout << json{{"event", "result"}, {"ok", all_good}, {"points", report}}.dump() << std::endl;
    }
    return all_good;
}

void cmd_restore(const settings& s, const std::string& disk, const std::optional<std::string>& at,
                 const std::string& to, bool force, unsigned connections)
{
    if (connections < 1 || connections > 64) {
        throw failure{exit_usage, "--connections wants 1 to 64", {}, {}};
    }
    const auto started = std::chrono::steady_clock::now();
    const rct::unique_fd reading = lock_readers(disk_dir(s.repo, disk), false);
    const std::vector<manifest> chain = chain_at(s, disk, at);
    const manifest& point = chain.back();
    served_image image((disk_dir(s.repo, disk) / point.file).string(), false);
    connection c(image.socket(), true);
    restore_target out(to.rfind("rct:", 0) == 0 ? rct_target(s, to.substr(4), c.size(), force) : to, c.size(),
                       connections);
    restore_into(image.socket(), c, out, connections, s.json);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (s.json) {
        std::cout << json{{"event", "result"}, {"disk", disk}, {"id", point.id}, {"to", to}, {"size", c.size()},
                          {"chain", chain.size()}, {"seconds", seconds}}
                         .dump()
                  << std::endl;
        return;
    }
    std::cout << fmt::format("restored disk {} at {} ({} backup{}) to {} ({}) in {:.2f} s\n", disk, point.id,
                             chain.size(), chain.size() == 1 ? "" : "s in the chain", to,
                             rct::format_size(c.size()), seconds);
}

void cmd_serve(const settings& s, const std::string& disk, const std::optional<std::string>& at,
               const std::string& listen)
{
    const rct::unique_fd reading = lock_readers(disk_dir(s.repo, disk), false);
    const std::vector<manifest> chain = chain_at(s, disk, at);
    const manifest& point = chain.back();
    served_image image((disk_dir(s.repo, disk) / point.file).string(), false, listen);
    // Blocked only now: qemu-nbd, started above, must keep SIGTERM.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &stop, nullptr);
    if (s.json) {
        std::cout << json{{"event", "serving"}, {"disk", disk}, {"id", point.id}, {"uri", image.uri()},
                          {"chain", chain.size()}}
                         .dump()
                  << std::endl;
    } else {
        std::cout << fmt::format("serving disk {} at {} read-only on {}\n(SIGINT or SIGTERM stops)\n", disk,
                                 point.id, image.uri())
                  << std::flush;
    }
    const timespec tick{0, 200'000'000};
    while (::sigtimedwait(&stop, nullptr, &tick) < 0) {
        if (!image.running()) {
            throw failure{exit_failure, "qemu-nbd serving " + point.file + " stopped", {}, {}};
        }
    }
}

}  // namespace rct::backup
