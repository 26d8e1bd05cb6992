// repo: the backup repository on disk (docs/format/backup.md): per disk a
// directory of qcow2 images, each with a JSON manifest that makes it a point.
//
// A point exists once its manifest is in place: commit() renames the image
// and then the manifest into place, both fsynced first, and fsyncs the
// directory. Anything else in the directory that starts with ".tmp-" is a
// leftover of a run that did not finish (as is an ID.json.tmp), removed by
// discard_leftovers().
// A prune changes existing images; it first writes its journal (.prune,
// docs/format/backup.md), and until the journal is gone the points are not
// loaded: load_points() refuses, and the next prune or backup finishes the
// merge. Readers of images (restore, serve, verify) hold .readers shared;
// a prune holds it exclusive, so no image changes under a reader.
// Not thread-safe; one writing rct-backup process per disk directory at a
// time (held by lock_disk_dir()).
#pragma once

#include "control_client.hh"
#include <rct/unique_fd.hh>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace rct::backup {

using tools::json;

// Checksums cover the data a backup wrote, one per chunk of this size.
inline constexpr std::uint64_t checksum_chunk = 1 << 20;

// One range a backup wrote: data (with its xxh64) or zeroes.
struct written_range {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::optional<std::uint64_t> xxh64;  // empty: zeroes
};

struct manifest {
    std::string id;
    std::string disk;
    std::string disk_id;
    std::string mode;  // "full", "inc", "diff"
    std::optional<std::string> parent;
    std::string full;  // the id of the chain's full backup
    std::string file;  // the image, relative to the disk directory
    std::string created_at;
    std::uint64_t size = 0;
    std::string token;
    std::string checkpoint;
    // The group cut this point came from (its members are consistent with
    // each other: docs/backup.md); empty for a disk backed up alone.
    std::string group;
    std::uint64_t data_bytes = 0;
    std::uint64_t zero_bytes = 0;
    std::uint64_t file_size = 0;
    std::uint64_t file_xxh64 = 0;
    std::vector<written_range> ranges;
};

json to_json(const manifest& m);
manifest manifest_from_json(const json& j, const std::string& where);

std::filesystem::path disk_dir(const std::filesystem::path& repo, const std::string& disk);

// Takes an exclusive flock on DIR/.lock for the life of the returned fd; a
// second rct-backup on the same disk gets a conflict failure.
rct::unique_fd lock_disk_dir(const std::filesystem::path& dir);

// Takes a flock on DIR/.readers: shared for a reader of the images,
// exclusive for a prune; a conflict failure when the other side holds it.
rct::unique_fd lock_readers(const std::filesystem::path& dir, bool exclusive);

// The disk's points, oldest first (ids sort by time); a conflict failure
// while a prune's journal is there (under way, or killed: the next prune or
// backup finishes it).
std::vector<manifest> load_points(const std::filesystem::path& dir);
// The same without looking for a journal: for the prune that finishes it.
std::vector<manifest> read_manifests(const std::filesystem::path& dir);

// The prune journal's file name in a disk directory.
inline constexpr const char* prune_journal = ".prune";

// Removes what unfinished runs left; returns the ids of their snapshots
// (recorded in .tmp-ID.pending before the cut), for the caller to delete.
std::vector<std::string> discard_leftovers(const std::filesystem::path& dir);

// The points from the full to `id`, full first; empty if `id` is unknown.
std::vector<manifest> chain_to(const std::vector<manifest>& points, const std::string& id);

// A new id, later than every existing one: UTC time as YYYYMMDD-HHMMSS-mmm.
std::string new_id(const std::vector<manifest>& points);

std::string image_name(const std::string& mode, const std::string& id);
std::filesystem::path temp_path(const std::filesystem::path& dir, const std::string& id, const std::string& ext);

// Fsyncs a file (or, with O_DIRECTORY, a directory).
void fsync_path(const std::filesystem::path& p, int flags);

// Fsyncs the image and computes its file checksum into m, writes the
// manifest, renames both into place and fsyncs the directory.
void commit(const std::filesystem::path& dir, const std::filesystem::path& temp_image, manifest& m);

// xxh64 of a whole file (seed 0).
std::uint64_t file_xxh64(const std::filesystem::path& path);

std::string hex64(std::uint64_t v);

}  // namespace rct::backup
