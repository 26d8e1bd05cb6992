// record_log: an append-only file of checksummed records, the journal under
// the tracking epoch log and the snapshot index (docs/format/tracking.md,
// docs/format/snapshots.md describe the framing and each log's records).
//
// Every append is one record, written and fdatasync'ed before the next one
// is written, so a crash can only leave a torn *last* record: one that runs
// past the end of the file with an intact header (its header carries its own
// check), or a zero-filled tail. replay() cuts such a tail off and reports
// it. Anything else that fails a check — a bad header check, a complete
// record whose checksum fails, a record some valid record follows — is
// damage to acknowledged state: replay() stops there and reports it, and
// the owner decides what the loss means. Not thread-safe: its owner
// serialises calls.
#pragma once

#include <rct/codec.hh>

#include <rct/unique_fd.hh>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace rct::persist {

struct record_header {
    std::uint32_t magic;     // per log
    std::uint16_t type;
    std::uint16_t flags;     // must be 0 (no feature bits defined yet)
    std::uint32_t length;    // payload bytes following the header
    std::uint32_t hcheck;    // header check over magic..length (0 in logs of rct <= 0.1)
    std::uint64_t checksum;  // XXH64 over header (checksum = 0) and payload
};
static_assert(sizeof(record_header) == 24);

class record_log {
public:
    // Opens (creating if needed) the log at path.
    record_log(std::filesystem::path path, std::uint32_t magic);

    using record_fn = std::function<void(std::uint16_t, payload_reader&)>;
    struct replay_result {
        std::uint64_t valid_bytes = 0;  // prefix that parsed
        bool torn_tail = false;         // an incomplete last record was cut off
        std::uint64_t records = 0;
        std::string damage;  // non-empty: what is wrong at byte valid_bytes
        // When the damaged record's header passed its check (or its whole
        // checksum did, and fn refused it): its type, and where the record
        // after it starts. Otherwise its type is unknown and nothing after
        // it can be placed in order.
        bool damaged_type_known = false;
        std::uint16_t damaged_type = 0;
        std::uint64_t resume_at = 0;
    };
    // Calls fn(type, payload) for each record in order, up to the first
    // damaged one. fn throws errc::corrupt for a record it cannot accept,
    // which counts as damage at that record. A torn tail is cut off the
    // file; a damaged log is left as it is (the owner sets it aside).
    replay_result replay(const record_fn& fn);
    // The same over bytes in memory, without touching the file, starting
    // at byte `from` (where a record starts: resume_at after damage).
    static replay_result parse(const std::uint8_t* p, std::size_t n, std::uint32_t magic, const record_fn& fn,
                               std::size_t from = 0);
    // After damage: calls fn for every record past `from` that passes its
    // checks, resynchronising on the magic (what can be salvaged).
    static void salvage(const std::uint8_t* p, std::size_t n, std::size_t from, std::uint32_t magic,
                        const record_fn& fn);
    std::vector<std::uint8_t> read_all() const;
    // Durable when it returns.
    void append(std::uint16_t type, const std::vector<std::uint8_t>& payload);
    // The same in two steps, for a caller that syncs this log in parallel
    // with something else: write() leaves the record unsynced (a crash may
    // lose or tear it, like an append cut short); sync() makes it durable.
    // A failed write or sync cuts the unsynced records off again, so that
    // what a caller was told failed never turns up at replay; if even that
    // fails, every later write throws until the log is reopened.
    void write(std::uint16_t type, const std::vector<std::uint8_t>& payload);
    void sync();
    // Renames a damaged log to path+suffix (kept for inspection) and starts
    // an empty one. Returns the path it was kept under.
    std::filesystem::path set_aside(const std::string& suffix);
    // Atomically replaces the whole log with the given records (compaction):
    // written to a temp file, synced, renamed over the log.
    void rewrite(const std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>>& records);
    std::uint64_t size() const noexcept { return end_; }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::vector<std::uint8_t> frame(std::uint16_t type, const std::vector<std::uint8_t>& payload) const;
    void cut_back(std::uint64_t to) noexcept;
    unique_fd fd_;
    std::filesystem::path path_;
    std::uint32_t magic_;
    std::uint64_t end_ = 0;
    std::uint64_t synced_end_ = 0;  // end of what the last sync covered
    bool broken_ = false;
};

}  // namespace rct::persist
