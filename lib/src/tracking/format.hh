// On-disk formats of change tracking. See docs/format/tracking.md, which
// is the reference; keep the two in step. All integers are little-endian;
// every structure carries an XXH64 checksum computed with its checksum
// field zeroed.
#pragma once

#include <cstdint>

namespace rct::tracking::format {

inline constexpr std::uint32_t version = 1;

// epochs.log: a persist::record_log (24-byte framed, checksummed records).
inline constexpr std::uint32_t record_magic = 0x52435452;  // "RTCR" in memory order

enum record_type : std::uint16_t {
    rec_init = 1,    // generation u32, granularity u32, region_size u64, created_at i64, id (u16 len + bytes)
    rec_seal = 2,    // epoch u64, created_at i64, size u64, name (u16 len + bytes), nruns u64, runs (u64 start, u64 count)*
    rec_delete = 3,  // epoch u64: checkpoint removed, its changes merged into the next epoch
    rec_reset = 4,   // generation u32, next_epoch u64, reason (u16 len + bytes): all checkpoints dropped
    rec_advance = 5,  // next_epoch u64: the live epoch is renumbered upwards (never reuse an epoch)
};

// current.map: the live epoch's bitmap as runs, replaced atomically.
inline constexpr std::uint64_t current_magic = 0x3150414d43544352;  // "RCTCMAP1"
struct current_header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t generation;
    std::uint64_t epoch;
    std::uint64_t chunks;
    std::uint64_t nruns;
    std::uint64_t checksum;  // over header (checksum = 0) and runs
};
static_assert(sizeof(current_header) == 48);

// intent.map: two slots, written alternately in place; the valid slot with
// the higher sequence number wins.
inline constexpr std::uint64_t intent_magic = 0x544e45544e495452;  // "RTINTENT"
struct intent_header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t reserved;
    std::uint64_t sequence;
    std::uint64_t region_size;
    std::uint64_t regions;   // bits in the bitmap that follows
    std::uint64_t checksum;  // over header (checksum = 0) and bitmap bytes
};
static_assert(sizeof(intent_header) == 48);

// clean: the clean-shutdown seal.
inline constexpr std::uint64_t clean_magic = 0x4e41454c43544352;  // "RCTCLEAN"
struct clean_seal {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t generation;
    std::uint64_t epoch;  // epoch of the current.map written at shutdown
    std::uint64_t dev, ino, size;
    std::int64_t mtime_ns, ctime_ns;
    std::uint64_t checksum;
};
static_assert(sizeof(clean_seal) == 72);

}  // namespace rct::tracking::format
