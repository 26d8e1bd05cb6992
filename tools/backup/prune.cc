// prune: fewer points, every remaining one still exact. The oldest point is
// always a full F; its oldest child P is merged into it with `qemu-img
// commit`, so F's image becomes P's content and takes P's id. P's children
// are then exact over it (they hold what changed since P), and so are F's
// other children (differentials, all newer than P: what changed since F
// includes what P changed); both are rebased onto it (`qemu-img rebase -u`).
// The merged full keeps F's change token: differentials taken since it copy
// a superset of what changed since P, which is still exact.
//
// Not atomic: a prune killed between the commit and the manifests leaves
// the disk directory to be checked with `verify` (docs/backup.md).
#include "commands.hh"
#include "nbd.hh"
#include "process.hh"
#include "repo.hh"

#include <rct/small_file.hh>
#include <xxhash.h>

#include <algorithm>
#include <iostream>

namespace rct::backup {

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

// Points built on `old_id` (or on `new_id`) are rebased onto `merged`, and
// those of its chain name it as their full.
void relink(const fs::path& dir, std::vector<manifest>& points, const std::string& old_id, const manifest& merged)
{
    for (manifest& m : points) {
        if (m.id == merged.id || m.id == old_id) {
            continue;
        }
        bool changed = false;
        if (m.parent == old_id || m.parent == merged.id) {
            run({"qemu-img", "rebase", "-u", "-f", "qcow2", "-b", merged.file, "-F", "qcow2", (dir / m.file).string()});
            m.parent = merged.id;
            changed = true;
        }
        if (m.full == old_id) {
            m.full = merged.id;
            changed = true;
        }
        if (changed) {
            save(dir, m);
        }
    }
}

// Merges the full points[0] with its oldest child; returns a line saying so.
std::string merge_oldest(const fs::path& dir, std::vector<manifest>& points)
{
    const manifest full = points[0];
    const auto child = std::find_if(points.begin() + 1, points.end(),
                                    [&](const manifest& m) { return m.parent == full.id; });
    if (child == points.end()) {
        // Nothing is built on it: it simply goes.
        fs::remove(dir / (full.id + ".json"));
        fs::remove(dir / full.file);
        return "removed full backup " + full.id;
    }
    manifest merged = *child;
    run({"qemu-img", "commit", "-q", "-d", "-f", "qcow2", (dir / merged.file).string()});
    const std::string old_file = merged.file;
    merged.mode = "full";
    merged.parent.reset();
    merged.full = merged.id;
    merged.file = image_name("full", merged.id);
    merged.token = full.token;
    merged.checkpoint = full.checkpoint;
    fs::rename(dir / full.file, dir / merged.file);
    rescan(dir, merged);
    save(dir, merged);
    relink(dir, points, full.id, merged);
    fs::remove(dir / (full.id + ".json"));
    fs::remove(dir / old_file);
    return "merged backup " + merged.id + " into full backup " + full.id + ": it is now the full";
}

}  // namespace

void cmd_prune(const settings& s, const std::string& disk, std::size_t keep)
{
    if (keep < 1) {
        throw failure{exit_usage, "prune: --keep must be at least 1", {}, {}};
    }
    const fs::path dir = disk_dir(s.repo, disk);
    const rct::unique_fd lock = lock_disk_dir(dir);
    std::vector<manifest> points = load_points(dir);
    json actions = json::array();
    while (points.size() > keep) {
        const std::string line = merge_oldest(dir, points);
        actions.push_back(line);
        if (!s.json) {
            std::cout << line << '\n';
        }
        points = load_points(dir);
    }
    if (s.json) {
        std::cout << json{{"event", "result"}, {"disk", disk}, {"points", points.size()}, {"actions", actions}}.dump()
                  << std::endl;
    } else {
        std::cout << disk << ": " << points.size() << " point" << (points.size() == 1 ? "" : "s") << " kept\n";
    }
}

}  // namespace rct::backup
