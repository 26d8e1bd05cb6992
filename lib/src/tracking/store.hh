// Persistence of tracking state: the epoch log, the live map, the intent
// bitmap and the clean-shutdown seal (docs/format/tracking.md). Every
// reader validates magic, version and checksum and reports what it found
// wrong; nothing here trusts a file.
#pragma once

#include "bitmap.hh"
#include "format.hh"
#include "../persist/record_log.hh"

#include <rct/tracker.hh>
#include <rct/unique_fd.hh>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace rct::tracking {

struct sealed_epoch {
    std::uint64_t epoch = 0;
    std::int64_t created_at = 0;
    std::uint64_t size = 0;
    std::string name;
    std::vector<run> runs;
};

// What replaying epochs.log yields.
struct log_state {
    bool initialized = false;
    std::uint32_t generation = 0;
    std::uint32_t granularity = 0;
    std::uint64_t region_size = 0;
    std::string disk_id;
    std::uint64_t next_epoch = 1;  // the live epoch's number
    // When the live epoch was renumbered by ADVANCE records since the last
    // seal: its number before them (current.map may still carry it), else 0.
    std::uint64_t advanced_from = 0;
    std::vector<sealed_epoch> sealed;  // ascending epoch
    std::string reset_reason;
    // Every checkpoint numbered below this was dropped by a RESET (or by
    // damage replay passed over) that kept the generation.
    std::uint64_t dropped_below = 0;
    // Non-empty: damage replay passed over (the last such); the checkpoints
    // before it were dropped and the log must be rewritten without it.
    std::string damage;
    std::uint64_t valid_bytes = 0;  // prefix of the file that parsed
    bool torn_tail = false;
};

class epoch_log {
public:
    explicit epoch_log(const std::filesystem::path& path);
    // Replays the log; a torn tail is cut off (and reported in the
    // result). Damage to a record whose header is intact and whose loss
    // cannot change the generation (SEAL, DELETE, ADVANCE) is passed over:
    // the state says so in `damage`, holding only what was sealed after it.
    // Any other damage (a header that fails its check, INIT, RESET, an
    // unknown type or flags) throws errc::corrupt.
    log_state replay();
    // Replaces the log with the state replay recovered from a damaged one
    // (set the damaged one aside first): same generation, a RESET with the
    // reason, the surviving seals.
    void rewrite_after_damage(const log_state& st, const std::string& reason);
    void append_init(std::uint32_t generation, std::uint32_t granularity, std::uint64_t region_size,
                     const std::string& disk_id);
    void append_seal(const sealed_epoch& s);
    void append_delete(std::uint64_t epoch);
    void append_reset(std::uint32_t generation, std::uint64_t next_epoch, const std::string& reason);
    // Moves the live epoch's number up to next_epoch, so that numbers used
    // elsewhere (snapshot copies labelled before a crash) are never reused.
    void append_advance(std::uint64_t next_epoch);
    // Renames a damaged log to path+suffix (kept for inspection; an
    // earlier one is never overwritten) and starts an empty one.
    std::filesystem::path set_aside(const std::string& suffix);
    // Granularity of the INIT record seen by the last replay (0 if none),
    // even when a later record was damaged.
    std::uint32_t init_granularity() const noexcept { return init_granularity_; }

private:
    void apply(log_state& st, std::uint16_t type, persist::payload_reader& r, bool gap_allowed);
    persist::record_log log_;
    std::uint32_t init_granularity_ = 0;
};

// current.map
void write_current(const std::filesystem::path& dir, std::uint32_t generation, std::uint64_t epoch,
                   std::uint64_t chunks, const std::vector<run>& runs);
struct current_state {
    std::uint32_t generation;
    std::uint64_t epoch;
    std::uint64_t chunks;
    std::vector<run> runs;
};
// nullopt if absent; throws errc::corrupt if present but invalid.
std::optional<current_state> read_current(const std::filesystem::path& dir);

// intent.map
class intent_file {
public:
    intent_file(const std::filesystem::path& path, std::uint64_t region_size, std::uint64_t regions);
    // Valid slot with the highest sequence, or nullopt if none is valid.
    std::optional<std::vector<std::uint64_t>> load();
    // Durable when it returns (pwrite + fdatasync of the other slot).
    void store(const std::vector<std::uint64_t>& words);

private:
    struct slot {
        format::intent_header h;
        std::vector<std::uint8_t> bits;
    };
    std::optional<slot> read_slot(std::uint64_t offset) const;

    unique_fd fd_;
    std::uint64_t region_size_;
    std::uint64_t regions_;
    std::uint64_t slot_size_;
    std::uint64_t sequence_ = 0;
};

// clean seal
void write_clean(const std::filesystem::path& dir, std::uint32_t generation, std::uint64_t epoch,
                 const file_identity& id);
struct clean_state {
    std::uint32_t generation;
    std::uint64_t epoch;
    file_identity id;
};
std::optional<clean_state> read_clean(const std::filesystem::path& dir, std::string& problem);
void remove_clean(const std::filesystem::path& dir);

}  // namespace rct::tracking
