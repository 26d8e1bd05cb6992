// The snapshot store's index: which snapshots exist and, per chunk, the
// copies of its old content, each labelled with the epoch of the newest
// snapshot at the moment it was copied. Persisted as index.log
// (docs/format/snapshots.md); this class holds the replayed state and the
// rules that read it. Not thread-safe: the store guards it with its mutex.
#pragma once

#include "../persist/record_log.hh"

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rct::snapshots {

inline constexpr std::uint64_t zero_slot = ~std::uint64_t{0};  // a copy of an all-zero chunk: no data

struct copy {
    std::uint64_t label;  // epoch of the newest snapshot when the copy was made
    std::uint64_t slot;   // slot in chunks.dat, or zero_slot
};

struct snapshot_record {
    std::uint64_t epoch = 0;
    std::uint32_t generation = 0;  // tracking generation at the cut
    std::int64_t created_at = 0;
    std::uint64_t size = 0;
    std::string name;
    std::string invalid_reason;  // empty = valid
};

struct new_copy {
    std::uint64_t chunk;
    copy c;
    std::uint64_t sum = 0;  // XXH64 of the slot's data (0 for zero_slot)
};

// Where snapshot content of one chunk comes from.
struct source {
    enum kind_t : std::uint8_t { live, slot, zero } kind;
    std::uint64_t slot_no;
};

class store_index {
public:
    // Opens dir/index.log; replays it. Damage (framing, or a record that
    // fails validation) stops the replay there: damage() says what, and the
    // caller sets the log aside and starts a new one.
    explicit store_index(const std::filesystem::path& dir);
    const std::string& damage() const noexcept { return damage_; }
    // After damage: every snapshot the log names, before the damage and
    // salvaged from valid records after it (none of them can be trusted).
    const std::vector<snapshot_record>& named_in_damaged_log() const noexcept { return salvaged_; }
    std::filesystem::path set_aside(const std::string& suffix) { return log_.set_aside(suffix); }

    // Creates the INIT record when the log is new.
    void init(std::uint32_t granularity, const std::string& disk_id);
    bool initialized() const noexcept { return granularity_ != 0; }
    std::uint32_t granularity() const noexcept { return granularity_; }
    const std::string& disk_id() const noexcept { return disk_id_; }

    // Largest epoch ever used as a snapshot or a copy label (0 if none).
    std::uint64_t max_epoch() const noexcept { return max_epoch_; }

    const std::map<std::uint64_t, snapshot_record>& snaps() const noexcept { return snaps_; }
    std::uint64_t newest() const noexcept { return snaps_.empty() ? 0 : snaps_.rbegin()->first; }

    // Mutations come in two steps: log_*() makes the record durable in
    // index.log (thread-safe, may take an fdatasync; call without the
    // store's lock so that readers are never held up by a sync), then
    // apply_*() updates memory (under the store's lock). Throws on I/O
    // errors from log_*(), leaving memory unchanged.
    void log_snapshot(const snapshot_record& s);
    void apply_snapshot(const snapshot_record& s);
    void log_drop(std::uint64_t epoch);
    void apply_drop(std::uint64_t epoch);
    void log_invalid(const std::vector<std::uint64_t>& epochs, const std::string& reason);
    void apply_invalid(const std::vector<std::uint64_t>& epochs, const std::string& reason);
    // At most max_copies_per_record copies: written unsynced, so that the
    // caller can sync it (sync_log) together with the slots' data; the
    // caller must call sync_log next (appends wait until then). Only the
    // last COPIES record can therefore be incomplete after a crash;
    // last_copies() returns it for checking against the data at open.
    void write_copies(const std::vector<new_copy>& copies);
    void sync_log();
    void apply_copies(const std::vector<new_copy>& copies);
    const std::vector<new_copy>& last_copies() const noexcept { return last_copies_; }
    // Copies no valid snapshot resolves to. log_free, then apply_free, which
    // returns their slots (free them only then: the FREE record is durable).
    std::vector<new_copy> garbage() const;
    void log_free(const std::vector<new_copy>& dead);
    std::vector<std::uint64_t> apply_free(const std::vector<new_copy>& dead);

    source lookup(std::uint64_t chunk, std::uint64_t epoch) const;
    // Whether some copy of chunk has a label >= epoch.
    bool preserved_since(std::uint64_t chunk, std::uint64_t epoch) const;
    // Snapshots that would read chunk from the live file.
    std::vector<std::uint64_t> readers_of_live(std::uint64_t chunk) const;
    // Slots in use, and per snapshot the slot bytes only it uses.
    std::vector<std::uint64_t> used_slots() const;
    std::map<std::uint64_t, std::uint64_t> exclusive_slots() const;
    std::uint64_t copy_count() const noexcept { return ncopies_; }
    // Calls fn(chunk) for each chunk with a copy labelled >= epoch.
    template <typename F>
    void for_each_preserved(std::uint64_t epoch, F fn) const
    {
        for (const auto& [chunk, v] : copies_) {
            if (!v.empty() && v.back().label >= epoch) {
                fn(chunk);
            }
        }
    }

    // Rewrites the log with only live records when it has grown well past
    // them.
    void compact_if_worthwhile();

private:
    void replay_record(std::uint16_t type, persist::payload_reader& r);
    void replay_copies(persist::payload_reader& r);
    void replay_free(persist::payload_reader& r);
    void salvage(const std::vector<std::uint8_t>& bytes, std::size_t from);
    void check_slots_unique() const;
    void apply_copy(const new_copy& nc);
    bool needed(const std::vector<copy>& v, std::size_t i) const;
    std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>> live_records() const;

    std::mutex log_mu_;  // appends
    std::unique_lock<std::mutex> pending_copies_;  // log_mu_ from write_copies to sync_log
    persist::record_log log_;
    std::uint32_t granularity_ = 0;
    std::string disk_id_;
    std::int64_t created_at_ = 0;
    std::uint64_t max_epoch_ = 0;
    std::map<std::uint64_t, snapshot_record> snaps_;
    std::unordered_map<std::uint64_t, std::vector<copy>> copies_;  // sorted by label
    std::uint64_t ncopies_ = 0;
    std::vector<new_copy> last_copies_;  // of the last COPIES record replayed
    std::string damage_;
    std::vector<snapshot_record> salvaged_;
};

inline constexpr std::size_t max_copies_per_record = 1 << 16;

}  // namespace rct::snapshots
