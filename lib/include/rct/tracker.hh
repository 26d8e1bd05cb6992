// tracker: resilient change tracking for one disk.
//
// Every write, write-zeroes and trim marks the chunks it touches (chunk =
// the granularity, 4 KiB..1 MiB, default 64 KiB) in the current epoch's
// bitmap before it is issued. A checkpoint seals the current epoch in O(1)
// (a pointer swap to a pre-zeroed bitmap) and returns a change token; the
// sealed bitmap is turned into a compact run list and appended to a
// checksummed log in the background. "Changes since checkpoint k" is the
// union of the epochs after k, plus the live bitmap when asked up to now.
//
// Crash resilience follows md's write-intent bitmap: the disk is also cut
// into coarse regions (default 64 MiB); before the first write into a region
// whose intent bit is not durable, the bit is committed (writers that need
// it at the same moment share one fdatasync) and only then is the write
// issued. Intent bits are cleared lazily, after the fine map covering them
// has been persisted. After a crash the current epoch is the last persisted
// fine map plus every chunk of every region with its intent bit set: a
// superset of the truth, never a miss, the excess bounded by the regions
// written during the last persist interval. See docs/format/tracking.md.
//
// Threading: mark()/remark() are lock-free and called by worker threads on
// the data path. Management calls (checkpoint, queries, resize) may come from
// any thread; they take an internal mutex and never block I/O. One
// background thread per tracker commits intent bits, seals epochs and
// persists the fine map periodically.
#pragma once

#include <rct/write_gate.hh>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rct {

struct tracker_options {
    std::uint32_t granularity = 64 * 1024;               // bytes per chunk, power of two
    std::uint64_t region_size = std::uint64_t{64} << 20;  // bytes per intent region
    std::chrono::milliseconds persist_interval{5000};
};

struct checkpoint_info {
    std::string name;
    std::uint64_t epoch = 0;     // checkpoint number, increasing, never reused within a generation
    std::int64_t created_at = 0;  // unix seconds
    std::uint64_t size = 0;       // disk size at the cut
    std::string token;
    std::uint64_t cut_ns = 0;       // duration of the cut (epoch switch); set by checkpoint() only
    std::uint32_t generation = 0;   // tracking generation the checkpoint belongs to
};

struct tracking_status {
    bool active = true;
    std::string reason;  // why tracking was reset or invalidated, if it was
    std::uint32_t generation = 0;
    std::uint32_t granularity = 0;
    std::uint64_t region_size = 0;
    std::uint64_t current_epoch = 0;
    std::size_t checkpoints = 0;
    bool recovered_after_crash = false;
    std::uint64_t recovery_excess_bytes = 0;  // chunks added from intent regions at the last open
    bool data_modified_offline = false;       // the data file changed while rctd was not running
};

struct byte_extent {
    std::uint64_t offset;
    std::uint64_t length;
};

// A page of a change query. next_cursor is empty when the query is complete.
struct changes_page {
    std::vector<byte_extent> extents;
    std::optional<std::uint64_t> next_cursor;
    std::uint64_t since_epoch = 0;
    std::optional<std::uint64_t> until_epoch;  // empty = live
    std::uint32_t generation = 0;              // the generation since/until were resolved in
};

// Identity of the data file, to notice changes made behind our back.
struct file_identity {
    std::uint64_t dev = 0, ino = 0, size = 0;
    std::int64_t mtime_ns = 0, ctime_ns = 0;
};

// What a live upgrade carries from one rctd to the next in memory instead
// of a clean seal (docs/upgrade.md): the live epoch's map, exactly, as runs
// of chunks. The files stay as a running tracker keeps them (the persisted
// map plus the intent bits cover every write), so the next rctd goes on
// without writing any, and a crash on either side is ordinary recovery.
struct tracker_handoff {
    struct chunk_run {
        std::uint64_t start = 0;
        std::uint64_t count = 0;
    };
    std::uint32_t generation = 0;
    std::uint64_t epoch = 0;   // the live epoch
    std::uint64_t chunks = 0;  // the live map's size in chunks
    std::vector<chunk_run> runs;
};

class tracker : public write_gate {
public:
    // Opens (or creates) the tracking state in dir. disk_id and size come
    // from the disk's metadata; data is the data file's current identity.
    // Throws rct::error when the state cannot be created; corrupt state is
    // reported and tracking is reset (with a reason), never trusted.
    // min_live_epoch: the live epoch gets at least this number (durably), so
    // that epoch numbers another layer has already used are never reused.
    // warm: the previous rctd's hand-off (live upgrade); taken when it is
    // this history's live epoch, else the files are recovered as after a
    // crash (a superset), with a warning.
    static std::unique_ptr<tracker> open(const std::filesystem::path& dir, const std::string& disk_id,
                                         std::uint64_t size, const file_identity& data,
                                         const tracker_options& opts, std::uint64_t min_live_epoch = 0,
                                         const tracker_handoff* warm = nullptr);
    virtual ~tracker() = default;

    // Data path (write_gate): a write is held until its region's intent is
    // durable; end_write re-marks a write that straddled a cut.

    // Management. Errors throw rct::error: invalid_argument for a bad name,
    // not_found for an unknown checkpoint name, and full_backup_required for
    // a token that cannot be honoured (malformed, another disk, reset
    // generation, deleted checkpoint), each with its own message.
    // after_cut runs right after the epoch switch, with the sealed epoch's
    // number, before the seal is made durable (the snapshot layer swaps its
    // own map there, so both cuts happen at one instant).
    virtual checkpoint_info checkpoint(std::optional<std::string> name,
                                       const std::function<void(std::uint64_t)>& after_cut = {}) = 0;
    virtual std::vector<checkpoint_info> checkpoints() const = 0;
    virtual void delete_checkpoint(const std::string& name) = 0;
    // since/until: a checkpoint name or a token; until empty = live.
    virtual changes_page changes(const std::string& since, const std::optional<std::string>& until,
                                 std::uint64_t cursor, std::size_t limit) const = 0;
    // Changed extents since checkpoint `since_epoch` (sealed epochs after it
    // plus live, or up to until_epoch) within [offset, offset+length), for NBD block status: each
    // extent is (length, dirty?). Coalesced, covering the range exactly.
    // until_epoch: up to that checkpoint instead of up to now.
    // The caller names the generation it learnt the epochs in: if tracking
    // was reset since, or either checkpoint was deleted, the answer would
    // come from another history, so it returns -ESTALE and adds nothing.
    virtual int dirty_map(std::uint32_t generation, std::uint64_t since_epoch,
                          std::optional<std::uint64_t> until_epoch, std::uint64_t offset, std::uint64_t length,
                          std::size_t max_extents, std::vector<extent>& out) const = 0;
    virtual std::optional<std::uint64_t> checkpoint_epoch(const std::string& name) const = 0;

    // Throws what resize(new_size) would throw, changing nothing, so that a
    // caller can refuse a resize before it touches any file.
    virtual void check_resize(std::uint64_t new_size) const = 0;
    // Grown space counts as changed in the live epoch, so in every
    // checkpoint's view; shrinking resets the generation.
    virtual void resize(std::uint64_t new_size) = 0;
    virtual tracking_status status() const = 0;
    // Persists everything and writes the clean-shutdown seal.
    virtual void close_clean(const file_identity& data) = 0;
    // Stops the background thread (pending intent commits and seals done)
    // and returns the live map, writing nothing: for a live upgrade, with
    // every writer drained. The tracker takes no writes afterwards.
    virtual tracker_handoff hand_off() = 0;
    // The tracking directory was deleted: from now on nothing is written by
    // path (a disk created again under the same name owns that path now).
    // Returns once a replacement in progress has finished. Writes keep
    // being tracked, in memory and in the files still open.
    virtual void retire() = 0;
};

}  // namespace rct
