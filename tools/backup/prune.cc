// prune: fewer points, every remaining one still exact. The oldest point is
// always a full F; its oldest child P is merged into it with `qemu-img
// commit`, so F's image becomes P's content and takes P's id. P's children
// are then exact over it (they hold what changed since P), and so are F's
// other children (differentials, all newer than P: what changed since F
// includes what P changed); both are rebased onto it (`qemu-img rebase -u`).
// The merged full keeps F's change token: differentials taken since it copy
// a superset of what changed since P, which is still exact.
//
// Crash-atomic by a journal (docs/format/backup.md): before F's image is
// touched, .prune names F, P and the merged image; every step after it can
// be done again, and whoever holds the disk next (a prune or a backup)
// finishes the merge before anything else. Until then no point is loaded.
#include "commands.hh"
#include "nbd.hh"
#include "queries.hh"
#include "process.hh"
#include "repo.hh"

#include <rct/small_file.hh>

#include <fcntl.h>
#include <xxhash.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <regex>

namespace rct::backup {

using tools::exit_failure;
using tools::exit_usage;
using tools::failure;
namespace fs = std::filesystem;

namespace {

void save(const fs::path& dir, manifest& m)
{
    m.file_size = fs::file_size(dir / m.file);
    m.file_xxh64 = file_xxh64(dir / m.file);
    const std::string text = to_json(m).dump(1) + "\n";
    rct::persist::replace_file(dir, m.id + ".json", std::vector<std::uint8_t>(text.begin(), text.end()));
}

// The ranges of a full, read back from its image: its checksums after a merge.
void rescan(const fs::path& dir, manifest& m)
{
    served_image image((dir / m.file).string(), false);
    connection c(image.socket(), true);
    m.ranges.clear();
    m.data_bytes = 0;
    m.zero_bytes = 0;
    m.size = c.size();
    std::vector<char> buf(checksum_chunk);
    for (const extent& e : c.extents(0, c.size())) {
        for (std::uint64_t at = e.offset; !e.zero && at < e.offset + e.length;) {
            const std::uint64_t n = std::min(e.offset + e.length - at, checksum_chunk - at % checksum_chunk);
            c.read(buf.data(), n, at);
            if (!all_zero(buf.data(), n)) {
                m.ranges.push_back({at, n, XXH64(buf.data(), n, 0)});
                m.data_bytes += n;
            }
            at += n;
        }
    }
}

// One merge of a full and its oldest child, as the journal records it.
struct merge {
    std::string full;         // F's id
    std::string child;        // P's id: the merged full's
    std::string full_file;    // F's image, which becomes...
    std::string merged_file;  // ...this one, holding P's content
    std::string child_file;   // P's image, removed at the end
};

void write_journal(const fs::path& dir, const merge& g)
{
    const json j{{"format", 1},          {"full", g.full},
                 {"child", g.child},     {"full_file", g.full_file},
                 {"merged_file", g.merged_file}, {"child_file", g.child_file}};
    const std::string text = j.dump(1) + "\n";
    rct::persist::replace_file(dir, prune_journal, std::vector<std::uint8_t>(text.begin(), text.end()));
}

// A field of the journal that must be a point id (`image` false) or an
// image name of this directory (MODE-ID.qcow2): never a path.
std::string checked_field(const json& j, const char* key, bool image)
{
    static const std::regex id(R"([0-9]{8}-[0-9]{6}-[0-9]{3})");
    static const std::regex file(R"((full|inc|diff)-[0-9]{8}-[0-9]{6}-[0-9]{3}\.qcow2)");
    const std::string v = j.at(key).get<std::string>();
    if (!std::regex_match(v, image ? file : id)) {
        throw failure{exit_failure,
                      std::string("the prune journal's ") + key + " is not " + (image ? "an image name" : "a point id") +
                          ": " + v,
                      {}, {}};
    }
    return v;
}

std::optional<merge> read_journal(const fs::path& dir)
{
    const fs::path path = dir / prune_journal;
    if (!fs::exists(path)) {
        return std::nullopt;
    }
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
        const json j = json::parse(text);
        if (j.at("format").get<int>() != 1) {
            throw failure{exit_failure, path.string() + ": unknown prune journal format", {}, {}};
        }
        return merge{checked_field(j, "full", false), checked_field(j, "child", false),
                     checked_field(j, "full_file", true), checked_field(j, "merged_file", true),
                     checked_field(j, "child_file", true)};
    } catch (const json::exception& e) {
        throw failure{exit_failure, path.string() + ": not a valid prune journal (" + e.what() + "); the merge it "
                                                    "recorded cannot be finished: check the directory with verify",
                      {}, {}};
    }
}

manifest& point(std::vector<manifest>& points, const std::string& id, const fs::path& dir)
{
    auto it = std::find_if(points.begin(), points.end(), [&](const manifest& m) { return m.id == id; });
    if (it == points.end()) {
        throw failure{exit_failure, dir.string() + ": the prune journal names point " + id + ", whose manifest is gone",
                      {}, {}};
    }
    return *it;
}

// Steps 1-2: F's image takes P's changes and P's id; P's manifest becomes
// the full's. Each is skipped when a killed run got past it.
void merge_images(const fs::path& dir, std::vector<manifest>& points, const merge& g)
{
    if (fs::exists(dir / g.full_file)) {
        // P's clusters into F, again if a killed run got part way: the same result.
        run({"qemu-img", "commit", "-q", "-d", "-f", "qcow2", (dir / g.child_file).string()});
        fsync_path(dir / g.full_file, O_RDONLY);
        fs::rename(dir / g.full_file, dir / g.merged_file);
        fsync_path(dir, O_RDONLY | O_DIRECTORY);
    }
    manifest& merged = point(points, g.child, dir);
    if (merged.file == g.merged_file) {
        return;
    }
    const manifest& full = point(points, g.full, dir);
    merged.mode = "full";
    merged.parent.reset();
    merged.full = merged.id;
    merged.file = g.merged_file;
    merged.token = full.token;
    merged.checkpoint = full.checkpoint;
    rescan(dir, merged);
    save(dir, merged);
}

// Step 3: points built on F or P are rebased onto the merged image (again
// after a kill: `rebase -u` only rewrites a header), and those of its chain
// name it as their full.
void relink(const fs::path& dir, std::vector<manifest>& points, const merge& g)
{
    for (manifest& m : points) {
        if (m.id == g.child || m.id == g.full) {
            continue;
        }
        bool changed = false;
        if (m.parent == g.full || m.parent == g.child) {
            run({"qemu-img", "rebase", "-u", "-f", "qcow2", "-b", g.merged_file, "-F", "qcow2",
                 (dir / m.file).string()});
            m.parent = g.child;
            changed = true;  // the file changed: its manifest's checksum too
        }
        if (m.full == g.full) {
            m.full = g.child;
            changed = true;
        }
        if (changed) {
            save(dir, m);
        }
    }
}

// Carries out (or finishes) one journaled merge, then drops the journal.
void finish_merge(const fs::path& dir, const merge& g)
{
    std::vector<manifest> points = read_manifests(dir);
    merge_images(dir, points, g);
    relink(dir, points, g);
    // Already gone after a kill is fine; any other failure keeps the journal.
    fs::remove(dir / (g.full + ".json"));
    fs::remove(dir / g.child_file);
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
    rct::persist::remove_file(dir, prune_journal);
}

// Merges the full points[0] with its oldest child; returns a line saying so.
std::string merge_oldest(const fs::path& dir, std::vector<manifest>& points)
{
    const manifest full = points[0];
    const auto child = std::find_if(points.begin() + 1, points.end(),
                                    [&](const manifest& m) { return m.parent == full.id; });
    if (child == points.end()) {
        // Nothing is built on it: its manifest goes first (the point is gone), then its image.
        rct::persist::remove_file(dir, full.id + ".json");
        fs::remove(dir / full.file);
        return "removed full backup " + full.id;
    }
    const merge g{full.id, child->id, full.file, image_name("full", child->id), child->file};
    write_journal(dir, g);
    finish_merge(dir, g);
    return "merged backup " + g.child + " into full backup " + g.full + ": it is now the full";
}

}  // namespace

void finish_interrupted_prune(const fs::path& dir)
{
    const std::optional<merge> g = read_journal(dir);
    if (!g) {
        return;
    }
    const rct::unique_fd readers = lock_readers(dir, true);
    note("finishing an interrupted prune of " + dir.string() + " (merging backup " + g->child + " into full backup " +
         g->full + ")");
    finish_merge(dir, *g);
}

void cmd_prune(const settings& s, const std::string& disk, std::size_t keep)
{
    if (keep < 1) {
        throw failure{exit_usage, "prune: --keep must be at least 1", {}, {}};
    }
    const fs::path dir = disk_dir(s.repo, disk);
    const rct::unique_fd lock = lock_disk_dir(dir);
    finish_interrupted_prune(dir);
    std::vector<manifest> points = load_points(dir);
    json actions = json::array();
    if (points.size() > keep) {
        const rct::unique_fd readers = lock_readers(dir, true);
        while (points.size() > keep) {
            const std::string line = merge_oldest(dir, points);
            actions.push_back(line);
            if (!s.json) {
                std::cout << line << '\n';
            }
            points = load_points(dir);
        }
    }
    if (s.json) {
        std::cout << json{{"event", "result"}, {"disk", disk}, {"points", points.size()}, {"actions", actions}}.dump()
                  << std::endl;
    } else {
        std::cout << disk << ": " << points.size() << " point" << (points.size() == 1 ? "" : "s") << " kept\n";
    }
}

}  // namespace rct::backup
