// rct-powercut: the helper of the guest's power-cut scenario
// (tests/guest/scenarios/powercut.sh, docs/testing.md "Power cut").
//
// The scenario runs rctd with its state dir on an ext4 over a dm-log-writes
// target, drives a workload through /dev/ublkbN, then replays the write log
// (drivers/md/dm-log-writes.c) to many flush points onto a fresh device and
// checks each state. This program is the part that needs more than a shell:
//
//   write DEV MODEL MODE GEN BLOCK...
//       write each 4 KiB BLOCK of DEV with the pattern (BLOCK, GEN); MODE:
//       direct  (O_DIRECT, then fdatasync), buffered (then fsync), dsync
//       (O_DIRECT|O_DSYNC: FUA writes), nosync (buffered, no flush: the
//       caller syncs). Appends "W BLOCK GEN" to MODEL before each write and
//       "D" once the flush returned (all of the model's writes are durable).
//   log LOGDEV
//       list the log: "INDEX FLAGS SECTOR SECTORS [MARK]" per entry.
//   points LOGDEV FIRST_MARK MAX
//       the replay points: the FLUSH/FUA entries after mark FIRST_MARK, at
//       most MAX of them (evenly spread), and the last entry; one
//       "INDEX MARK" line each, MARK the newest mark before the entry (the
//       target's own "dm-log-writes-end" aside).
//   replay LOGDEV DEV FROM TO
//       apply entries FROM..TO (inclusive) of the log onto DEV.
//   unused DEV
//       exit 0 if nothing holds DEV (an O_EXCL open succeeds: no filesystem
//       on it, no device-mapper table over it), 1 otherwise.
//   check MODEL MARK STATE DISK
//       check the state an rctd on STATE serves (rctd must be running) against
//       the model as it stood at mark MARK: data.raw, change lists of every
//       checkpoint, the snapshot list; prints "snapshot NAME" for each valid
//       snapshot the caller must read back (check-snap) and a "counts ..."
//       line. Exit 1 with "powercut: ..." lines on stderr on any failure.
//   check-snap MODEL NAME DEV
//       DEV (the export DISK@NAME) holds exactly what the model says the disk
//       held when snapshot NAME was cut.
//
// The model (a text file on the guest's tmpfs, never on the logged device):
//   W BLOCK GEN      a write is about to be issued
//   D                every write above is durable (a flush was acknowledged)
//   c NAME / C NAME TOKEN   checkpoint requested / acknowledged
//   s NAME / S NAME TOKEN   snapshot requested / acknowledged
//   M MARK           the caller issues log mark MARK after this line
// Writes are sequential and flushed before every checkpoint and snapshot, so
// the content at each cut is exact.
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr std::uint64_t block_size = 4096;
constexpr std::uint64_t pattern_magic = 0x3154554357504352ULL;  // "RCPWCUT1"

[[noreturn]] void die(const std::string& what)
{
    std::fprintf(stderr, "powercut: %s\n", what.c_str());
    std::exit(1);
}

[[noreturn]] void die_errno(const std::string& what)
{
    die(what + ": " + std::strerror(errno));
}

std::uint64_t to_u64(const std::string& s)
{
    std::size_t pos = 0;
    std::uint64_t v = 0;
    try {
        v = std::stoull(s, &pos, 0);
    } catch (const std::exception&) {
        pos = 0;
    }
    if (pos == 0 || pos != s.size()) {
        die("not a number: '" + s + "'");
    }
    return v;
}

// ---- the pattern: (block, gen) in the first 24 bytes, the rest derived ----

std::uint64_t splitmix(std::uint64_t& x)
{
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void fill_block(unsigned char* p, std::uint64_t block, std::uint64_t gen)
{
    std::uint64_t words[block_size / 8];
    words[0] = pattern_magic;
    words[1] = block;
    words[2] = gen;
    std::uint64_t seed = (block << 24) ^ gen;
    for (std::size_t i = 3; i < block_size / 8; i++) {
        words[i] = splitmix(seed);
    }
    std::memcpy(p, words, block_size);
}

// What a block holds: 0 = zeroes, a generation, or nullopt (not a block of
// this pattern for this block number: torn, stale from elsewhere, garbage).
std::optional<std::uint64_t> decode_block(const unsigned char* p, std::uint64_t block)
{
    if (std::all_of(p, p + block_size, [](unsigned char c) { return c == 0; })) {
        return 0;
    }
    std::uint64_t hdr[3];
    std::memcpy(hdr, p, sizeof hdr);
    if (hdr[0] != pattern_magic || hdr[1] != block || hdr[2] == 0) {
        return std::nullopt;
    }
    alignas(4096) static unsigned char want[block_size];
    fill_block(want, block, hdr[2]);
    if (std::memcmp(want, p, block_size) != 0) {
        return std::nullopt;
    }
    return hdr[2];
}

std::string describe(const unsigned char* p)
{
    std::uint64_t hdr[3];
    std::memcpy(hdr, p, sizeof hdr);
    char buf[96];
    std::snprintf(buf, sizeof buf, "header %016" PRIx64 " %" PRIu64 " %" PRIu64, hdr[0], hdr[1], hdr[2]);
    return buf;
}

struct fd_guard {
    int fd = -1;
    explicit fd_guard(int f) : fd(f) {}
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard()
    {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

void pread_all(int fd, void* buf, std::size_t len, std::uint64_t off, const std::string& what)
{
    auto* p = static_cast<unsigned char*>(buf);
    while (len > 0) {
        const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die_errno("read " + what);
        }
        if (n == 0) {  // past the end (a short file): zeroes
            std::memset(p, 0, len);
            return;
        }
        p += n;
        len -= static_cast<std::size_t>(n);
        off += static_cast<std::uint64_t>(n);
    }
}

void pwrite_all(int fd, const void* buf, std::size_t len, std::uint64_t off, const std::string& what)
{
    const auto* p = static_cast<const unsigned char*>(buf);
    while (len > 0) {
        const ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die_errno("write " + what);
        }
        p += n;
        len -= static_cast<std::size_t>(n);
        off += static_cast<std::uint64_t>(n);
    }
}

// ---- write ----

int cmd_write(const std::vector<std::string>& a)
{
    if (a.size() < 5) {
        die("usage: write DEV MODEL MODE GEN BLOCK...");
    }
    const std::string& dev = a[0];
    const std::string& mode = a[2];
    const std::uint64_t gen = to_u64(a[3]);
    int flags = O_WRONLY;
    if (mode == "direct") {
        flags |= O_DIRECT;
    } else if (mode == "dsync") {
        flags |= O_DIRECT | O_DSYNC;
    } else if (mode != "buffered" && mode != "nosync") {
        die("unknown write mode " + mode);
    }
    std::FILE* model = std::fopen(a[1].c_str(), "a");
    if (!model) {
        die_errno("open " + a[1]);
    }
    fd_guard fd(::open(dev.c_str(), flags));
    if (fd.fd < 0) {
        die_errno("open " + dev);
    }
    alignas(4096) static unsigned char buf[block_size];
    for (std::size_t i = 4; i < a.size(); i++) {
        const std::uint64_t b = to_u64(a[i]);
        std::fprintf(model, "W %" PRIu64 " %" PRIu64 "\n", b, gen);
        std::fflush(model);
        fill_block(buf, b, gen);
        pwrite_all(fd.fd, buf, block_size, b * block_size, dev);
    }
    if (mode == "direct" || mode == "dsync") {
        if (::fdatasync(fd.fd) != 0) {
            die_errno("fdatasync " + dev);
        }
    } else if (mode == "buffered") {
        if (::fsync(fd.fd) != 0) {
            die_errno("fsync " + dev);
        }
    }
    if (mode != "nosync") {
        std::fprintf(model, "D\n");
    }
    if (std::fclose(model) != 0) {
        die_errno("close " + a[1]);
    }
    return 0;
}

// ---- the dm-log-writes log (drivers/md/dm-log-writes.c) ----
//
// Sector 0: the super (magic, version, nr_entries, sectorsize). Then per
// entry one sectorsize block holding the entry header (and, for a mark, its
// name right after the header), followed by nr_sectors blocks of the data
// written (none for a discard). sector and nr_sectors count sectorsize units.

constexpr std::uint64_t log_magic = 0x6a736677736872ULL;
constexpr std::uint64_t flag_flush = 1 << 0;
constexpr std::uint64_t flag_fua = 1 << 1;
constexpr std::uint64_t flag_discard = 1 << 2;
constexpr std::uint64_t flag_mark = 1 << 3;

struct log_entry {
    std::uint64_t index;
    std::uint64_t sector;
    std::uint64_t nr_sectors;
    std::uint64_t flags;
    std::uint64_t pos;  // byte offset of the data in the log
    std::string mark;
};

struct write_log {
    fd_guard fd;
    std::string path;
    std::uint64_t sectorsize = 0;
    std::uint64_t nr_entries = 0;

    explicit write_log(const std::string& p) : fd(::open(p.c_str(), O_RDONLY)), path(p)
    {
        if (fd.fd < 0) {
            die_errno("open " + p);
        }
        unsigned char super[28];
        pread_all(fd.fd, super, sizeof super, 0, p);
        std::uint64_t magic, version;
        std::uint32_t ss;
        std::memcpy(&magic, super, 8);
        std::memcpy(&version, super + 8, 8);
        std::memcpy(&nr_entries, super + 16, 8);
        std::memcpy(&ss, super + 24, 4);
        if (magic != log_magic) {
            die(p + " is not a dm-log-writes log (bad magic)");
        }
        if (version != 1) {
            die(p + ": log version " + std::to_string(version) + ", not 1");
        }
        if (ss < 512 || (ss & (ss - 1)) != 0) {
            die(p + ": bad sector size " + std::to_string(ss));
        }
        sectorsize = ss;
    }

    // Every entry, in log order (headers only).
    std::vector<log_entry> entries() const
    {
        std::vector<log_entry> out;
        out.reserve(nr_entries);
        std::vector<unsigned char> hdr(sectorsize);
        std::uint64_t pos = sectorsize;
        for (std::uint64_t i = 0; i < nr_entries; i++) {
            pread_all(fd.fd, hdr.data(), sectorsize, pos, path);
            log_entry e{};
            std::uint64_t data_len;
            std::memcpy(&e.sector, hdr.data(), 8);
            std::memcpy(&e.nr_sectors, hdr.data() + 8, 8);
            std::memcpy(&e.flags, hdr.data() + 16, 8);
            std::memcpy(&data_len, hdr.data() + 24, 8);
            e.index = i;
            pos += sectorsize;
            e.pos = pos;
            if (e.flags & flag_mark) {
                if (data_len > sectorsize - 32) {
                    die(path + ": entry " + std::to_string(i) + ": mark longer than a sector");
                }
                e.mark.assign(reinterpret_cast<const char*>(hdr.data() + 32), data_len);
            } else if (!(e.flags & flag_discard)) {
                pos += e.nr_sectors * sectorsize;
            }
            out.push_back(std::move(e));
        }
        return out;
    }
};

std::string flag_names(std::uint64_t f)
{
    std::string s;
    if (f & flag_flush) s += "FLUSH|";
    if (f & flag_fua) s += "FUA|";
    if (f & flag_discard) s += "DISCARD|";
    if (f & flag_mark) s += "MARK|";
    if (s.empty()) return "WRITE";
    s.pop_back();
    return s;
}

int cmd_log(const std::vector<std::string>& a)
{
    if (a.size() != 1) {
        die("usage: log LOGDEV");
    }
    const write_log log(a[0]);
    std::printf("# %" PRIu64 " entries, sector size %" PRIu64 "\n", log.nr_entries, log.sectorsize);
    for (const auto& e : log.entries()) {
        std::printf("%" PRIu64 " %s %" PRIu64 " %" PRIu64 "%s%s\n", e.index, flag_names(e.flags).c_str(), e.sector,
                    e.nr_sectors, e.mark.empty() ? "" : " ", e.mark.c_str());
    }
    return 0;
}

int cmd_points(const std::vector<std::string>& a)
{
    if (a.size() != 3) {
        die("usage: points LOGDEV FIRST_MARK MAX");
    }
    const write_log log(a[0]);
    const std::string& first = a[1];
    const std::uint64_t max = to_u64(a[2]);
    const auto entries = log.entries();
    std::vector<std::pair<std::uint64_t, std::string>> cands;
    std::string mark;
    bool started = false;
    for (const auto& e : entries) {
        if (e.flags & flag_mark) {
            // The target's own mark at its removal is none of the caller's.
            if (e.mark != "dm-log-writes-end") {
                mark = e.mark;
            }
            started = started || e.mark == first;
            continue;
        }
        if (started && (e.flags & (flag_flush | flag_fua))) {
            cands.emplace_back(e.index, mark);
        }
    }
    if (!started) {
        die(a[0] + ": no mark '" + first + "' in the log");
    }
    std::fprintf(stderr, "powercut: %zu FLUSH/FUA entries after mark %s of %zu entries\n", cands.size(),
                 first.c_str(), entries.size());
    std::vector<std::pair<std::uint64_t, std::string>> pick;
    if (max == 0 || cands.size() <= max) {
        pick = cands;
    } else {
        for (std::uint64_t i = 0; i < max; i++) {
            pick.push_back(cands[(i * cands.size()) / max + (cands.size() / max) / 2]);
        }
    }
    // The whole log: what a power cut after the last write leaves.
    if (!entries.empty() && (pick.empty() || pick.back().first != entries.back().index)) {
        pick.emplace_back(entries.back().index, mark);
    }
    for (const auto& [i, m] : pick) {
        std::printf("%" PRIu64 " %s\n", i, m.c_str());
    }
    return 0;
}

int cmd_unused(const std::vector<std::string>& a)
{
    if (a.size() != 1) {
        die("usage: unused DEV");
    }
    const int fd = ::open(a[0].c_str(), O_RDONLY | O_EXCL);
    if (fd < 0) {
        return 1;
    }
    ::close(fd);
    return 0;
}

int cmd_replay(const std::vector<std::string>& a)
{
    if (a.size() != 4) {
        die("usage: replay LOGDEV DEV FROM TO");
    }
    const write_log log(a[0]);
    const std::uint64_t from = to_u64(a[2]), to = to_u64(a[3]);
    if (to >= log.nr_entries) {
        die("replay: entry " + std::to_string(to) + " past the log's " + std::to_string(log.nr_entries));
    }
    fd_guard dev(::open(a[1].c_str(), O_WRONLY));
    if (dev.fd < 0) {
        die_errno("open " + a[1]);
    }
    std::vector<unsigned char> buf;
    std::uint64_t applied = 0, bytes = 0;
    for (const auto& e : log.entries()) {
        if (e.index < from || e.index > to || (e.flags & flag_mark) || e.nr_sectors == 0) {
            continue;
        }
        const std::uint64_t len = e.nr_sectors * log.sectorsize;
        buf.resize(len);
        if (e.flags & flag_discard) {
            std::fill(buf.begin(), buf.end(), 0);  // brd and ext4 read discarded sectors as zeroes
        } else {
            pread_all(log.fd.fd, buf.data(), len, e.pos, a[0]);
        }
        pwrite_all(dev.fd, buf.data(), len, e.sector * log.sectorsize, a[1]);
        applied++;
        bytes += len;
    }
    if (::fsync(dev.fd) != 0) {
        die_errno("fsync " + a[1]);
    }
    std::fprintf(stderr, "powercut: replayed entries %" PRIu64 "..%" PRIu64 ": %" PRIu64 " writes, %" PRIu64
                 " bytes\n", from, to, applied, bytes);
    return 0;
}

// ---- the model ----

struct cut {
    std::string name;
    bool snapshot = false;
    bool acked = false;       // the command returned before the mark
    std::string token;
    std::map<std::uint64_t, std::uint64_t> content;  // block -> gen at the cut
};

struct model {
    std::map<std::uint64_t, std::set<std::uint64_t>> written;  // every gen ever written, per block
    std::map<std::uint64_t, std::uint64_t> durable;           // at the mark
    std::vector<cut> cuts;                                      // every cut requested

    model(const std::string& path, const std::string& mark)
    {
        std::ifstream in(path);
        if (!in) {
            die("cannot read the model " + path);
        }
        std::map<std::uint64_t, std::uint64_t> issued;  // last gen issued per block
        std::map<std::uint64_t, std::uint64_t> durable_now;
        bool seen_mark = mark.empty();
        bool flushed = true;  // no write since the last D
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream ls(line);
            std::string op;
            ls >> op;
            if (op == "W") {
                std::uint64_t b = 0, g = 0;
                ls >> b >> g;
                written[b].insert(g);
                issued[b] = g;
                flushed = false;
            } else if (op == "D") {
                durable_now = issued;
                flushed = true;
            } else if (op == "M") {
                std::string m;
                ls >> m;
                if (!seen_mark && m == mark) {
                    seen_mark = true;
                    durable = durable_now;
                }
            } else if (op == "c" || op == "s") {
                if (!flushed) {
                    die("model: " + line + " follows unflushed writes");
                }
                // Cuts requested after the mark may exist too: checked if so.
                cut c;
                ls >> c.name;
                c.snapshot = op == "s";
                c.content = issued;
                cuts.push_back(std::move(c));
            } else if (op == "C" || op == "S") {
                std::string name, token;
                ls >> name >> token;
                if (!seen_mark) {
                    for (auto& c : cuts) {
                        if (c.name == name) {
                            c.acked = true;
                            c.token = token;
                        }
                    }
                }
            } else if (!op.empty()) {
                die("model: bad line '" + line + "'");
            }
        }
        if (!seen_mark) {
            die("model: no mark " + mark);
        }
    }
};

// ---- check ----

struct run_result {
    int status;
    std::string out;
};

run_result run(const std::vector<std::string>& argv)
{
    std::string cmd;
    for (const auto& s : argv) {
        cmd += "'" + s + "' ";
    }
    cmd += "2>/tmp/powercut-cmd.err";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) {
        die_errno("popen " + cmd);
    }
    run_result r{0, {}};
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        r.out.append(buf, n);
    }
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    return r;
}

std::string cmd_err()
{
    std::ifstream in("/tmp/powercut-cmd.err");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

nlohmann::json rctctl_json(const std::string& state, std::vector<std::string> args)
{
    std::vector<std::string> argv{"rctctl", "--state-dir", state, "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = run(argv);
    if (r.status != 0) {
        die("rctctl --json " + args[0] + " exited " + std::to_string(r.status) + ": " + cmd_err());
    }
    try {
        return nlohmann::json::parse(r.out);
    } catch (const std::exception& e) {
        die("rctctl --json " + args[0] + ": not JSON: " + e.what());
    }
}

// The array of objects in a list reply ({"KEY": [...]}, or a bare array).
nlohmann::json list_of(const nlohmann::json& j, const std::string& key)
{
    if (j.is_array()) return j;
    if (j.is_object() && j.contains(key) && j[key].is_array()) return j[key];
    die("unexpected reply shape for " + key + ": " + j.dump());
}

int cmd_check(const std::vector<std::string>& a)
{
    if (a.size() != 4) {
        die("usage: check MODEL MARK STATE DISK");
    }
    const model m(a[0], a[1]);
    const std::string& state = a[2];
    const std::string& disk = a[3];
    int failures = 0;
    auto bad = [&](const std::string& what) {
        if (failures++ < 20) {
            std::fprintf(stderr, "powercut: %s\n", what.c_str());
        }
    };

    // rctd serves the disk: listed, not quarantined.
    const auto list = rctctl_json(state, {"list"});
    bool found = false;
    for (const auto& d : list_of(list, "disks")) {
        found = found || d.value("name", "") == disk;
    }
    if (!found) bad("disk " + disk + " is not listed by rctctl list: " + list.dump());
    if (list.is_object() && list.contains("quarantined") && !list["quarantined"].empty()) {
        bad("quarantined disks: " + list["quarantined"].dump());
    }

    // data.raw: every block at least as new as its last durable write, and
    // only ever a generation that was written to it.
    const std::string raw = state + "/disks/" + disk + "/data.raw";
    fd_guard fd(::open(raw.c_str(), O_RDONLY));
    if (fd.fd < 0) {
        die_errno("open " + raw);
    }
    std::map<std::uint64_t, std::uint64_t> now;
    alignas(4096) static unsigned char buf[block_size];
    std::uint64_t blocks = 0, durable_blocks = 0, newer = 0;
    for (const auto& [b, gens] : m.written) {
        pread_all(fd.fd, buf, block_size, b * block_size, raw);
        const auto g = decode_block(buf, b);
        blocks++;
        const auto d = m.durable.find(b);
        const std::uint64_t want = d == m.durable.end() ? 0 : d->second;
        if (want) durable_blocks++;
        if (!g) {
            bad("block " + std::to_string(b) + " holds neither zeroes nor a written pattern (" + describe(buf) + ")");
            continue;
        }
        if (*g != 0 && !gens.count(*g)) {
            bad("block " + std::to_string(b) + " holds generation " + std::to_string(*g) + ", never written to it");
        }
        if (*g < want) {
            bad("block " + std::to_string(b) + " holds generation " + std::to_string(*g) + ", older than its durable " +
                std::to_string(want));
        }
        if (*g > want) newer++;
        now[b] = *g;
    }

    // Checkpoints: each one acknowledged must exist; every one that exists
    // lists (at least) every block whose content differs from the cut.
    std::map<std::string, nlohmann::json> cps;
    for (const auto& c : list_of(rctctl_json(state, {"checkpoints", disk}), "checkpoints")) {
        cps[c.value("name", "")] = c;
    }
    std::uint64_t checked_cps = 0, covered_blocks = 0, extents = 0;
    std::vector<std::string> snaps_to_read;
    std::map<std::string, nlohmann::json> snaps;
    for (const auto& s : list_of(rctctl_json(state, {"snapshots", disk}), "snapshots")) {
        snaps[s.value("name", "")] = s;
    }
    for (const auto& c : m.cuts) {
        const bool exists = cps.count(c.name) > 0;
        if (!exists) {
            if (c.acked) bad("acknowledged checkpoint " + c.name + " is missing");
            continue;
        }
        // The token is what backup agents keep; the name for a checkpoint
        // whose token the model never saw.
        const std::string since = c.acked ? c.token : c.name;
        const auto r = run({"rctctl", "--state-dir", state, "changes", disk, "--since", since});
        if (r.status != 0) {
            bad("rctctl changes " + disk + " --since " + c.name + " exited " + std::to_string(r.status) +
                (r.status == 6 ? " (full backup required)" : "") + ": " + cmd_err());
            continue;
        }
        checked_cps++;
        std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
        std::istringstream in(r.out);
        std::uint64_t off, len;
        while (in >> off >> len) {
            ranges.emplace_back(off, off + len);
        }
        extents += ranges.size();
        std::sort(ranges.begin(), ranges.end());
        auto covered = [&](std::uint64_t b) {
            const std::uint64_t lo = b * block_size, hi = lo + block_size;
            // Ranges are sorted and (rctctl) disjoint, but tolerate touching ones.
            std::uint64_t at = lo;
            for (const auto& [s, e] : ranges) {
                if (s <= at && e > at) at = e;
                if (at >= hi) return true;
            }
            return false;
        };
        for (const auto& [b, gens] : m.written) {
            const auto it = c.content.find(b);
            const std::uint64_t at_cut = it == c.content.end() ? 0 : it->second;
            const auto d = m.durable.find(b);
            const bool durable_after = d != m.durable.end() && d->second > at_cut;
            if ((now[b] != at_cut || durable_after) && !covered(b)) {
                bad("changes --since " + c.name + " misses block " + std::to_string(b) + " (generation " +
                    std::to_string(at_cut) + " at the cut, " + std::to_string(now[b]) + " now)");
            }
            if (now[b] != at_cut) covered_blocks++;
        }
        if (c.snapshot) {
            const auto s = snaps.find(c.name);
            if (s == snaps.end()) {
                if (c.acked) bad("acknowledged snapshot " + c.name + " is not listed");
            } else if (!s->second.value("valid", false)) {
                bad("snapshot " + c.name + " is listed invalid: " + s->second.dump());
            } else {
                snaps_to_read.push_back(c.name);
            }
        }
    }
    for (const auto& n : snaps_to_read) {
        std::printf("snapshot %s\n", n.c_str());
    }
    std::printf("counts blocks=%" PRIu64 " durable=%" PRIu64 " newer=%" PRIu64 " checkpoints=%" PRIu64
                " changed_blocks=%" PRIu64 " extents=%" PRIu64 " snapshots=%zu\n",
                blocks, durable_blocks, newer, checked_cps, covered_blocks, extents, snaps_to_read.size());
    if (failures) {
        std::fprintf(stderr, "powercut: %d failures\n", failures);
        return 1;
    }
    return 0;
}

int cmd_check_snap(const std::vector<std::string>& a)
{
    if (a.size() != 3) {
        die("usage: check-snap MODEL NAME DEV");
    }
    const model m(a[0], "");
    const cut* c = nullptr;
    for (const auto& x : m.cuts) {
        if (x.name == a[1] && x.snapshot) c = &x;
    }
    if (!c) die("model: no snapshot " + a[1]);
    fd_guard fd(::open(a[2].c_str(), O_RDONLY | O_DIRECT));
    if (fd.fd < 0) die_errno("open " + a[2]);
    // Read runs of consecutive written blocks in one request each.
    std::vector<std::uint64_t> blocks;
    for (const auto& [b, g] : m.written) blocks.push_back(b);
    constexpr std::size_t max_run = 64;
    void* mem = nullptr;
    if (::posix_memalign(&mem, 4096, max_run * block_size) != 0) die("out of memory");
    std::unique_ptr<unsigned char, decltype(&std::free)> buf(static_cast<unsigned char*>(mem), &std::free);
    int failures = 0;
    for (std::size_t i = 0; i < blocks.size();) {
        std::size_t n = 1;
        while (i + n < blocks.size() && n < max_run && blocks[i + n] == blocks[i] + n) n++;
        pread_all(fd.fd, buf.get(), n * block_size, blocks[i] * block_size, a[2]);
        for (std::size_t k = 0; k < n; k++) {
            const std::uint64_t b = blocks[i + k];
            const auto it = c->content.find(b);
            const std::uint64_t want = it == c->content.end() ? 0 : it->second;
            const auto g = decode_block(buf.get() + k * block_size, b);
            if (!g || *g != want) {
                if (failures++ < 20) {
                    std::fprintf(stderr, "powercut: snapshot %s block %" PRIu64 ": want generation %" PRIu64
                                 ", found %s\n", a[1].c_str(), b, want,
                                 g ? std::to_string(*g).c_str() : describe(buf.get() + k * block_size).c_str());
                }
            }
        }
        i += n;
    }
    std::printf("snapshot %s blocks=%zu\n", a[1].c_str(), blocks.size());
    return failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv)
{
    if (argc < 2) {
        die("usage: rct-powercut write|log|points|replay|unused|check|check-snap ARGS... (see the source)");
    }
    const std::string cmd = argv[1];
    const std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "write") return cmd_write(args);
    if (cmd == "log") return cmd_log(args);
    if (cmd == "points") return cmd_points(args);
    if (cmd == "replay") return cmd_replay(args);
    if (cmd == "unused") return cmd_unused(args);
    if (cmd == "check") return cmd_check(args);
    if (cmd == "check-snap") return cmd_check_snap(args);
    die("unknown command " + cmd);
}
