// io_stats: what clients asked of one disk, whichever frontend they came
// through (NBD connections, ublk queues): requests, bytes, errors, latency
// and requests in flight, for GET /metrics (docs/metrics.md).
//
// Owned by the disk. Workers record on the data path into a shard of their
// own (picked once per thread; relaxed atomics on cache lines no other
// worker writes, for up to 16 workers; more share), so counting costs no
// shared write. sum() adds the shards
// up for a reader on any thread: each counter is monotone, so a sum is
// never below an earlier one, though not one instant's picture.
#pragma once

#include <rct/backend.hh>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace rct {

enum class stat_op : std::uint8_t { read, write, flush, trim, write_zeroes, cache, block_status };
inline constexpr std::size_t stat_ops = 7;
std::string_view stat_op_name(stat_op op) noexcept;

inline stat_op stat_of(io_op op) noexcept
{
    switch (op) {
    case io_op::read: return stat_op::read;
    case io_op::write: return stat_op::write;
    case io_op::flush: return stat_op::flush;
    case io_op::trim: return stat_op::trim;
    case io_op::write_zeroes: return stat_op::write_zeroes;
    case io_op::cache: return stat_op::cache;
    }
    return stat_op::read;
}

// The clock latencies are measured with.
inline std::uint64_t stat_clock_ns() noexcept
{
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

// Upper bounds of the latency histogram's buckets, in nanoseconds; one more
// bucket above the last takes the rest (+Inf).
inline constexpr std::array<std::uint64_t, 16> latency_bounds_ns{
    25'000,     50'000,      100'000,     250'000,     500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000, 25'000'000,  50'000'000,  100'000'000, 250'000'000,   500'000'000,   1'000'000'000, 2'500'000'000};

class io_stats {
public:
    static constexpr std::size_t buckets = latency_bounds_ns.size() + 1;

    struct op_totals {
        std::uint64_t requests = 0;
        std::uint64_t bytes = 0;
        std::uint64_t errors = 0;
        std::uint64_t latency_sum_ns = 0;
        std::array<std::uint64_t, buckets> latency{};  // per bucket, not cumulative
    };
    struct totals {
        std::array<op_totals, stat_ops> ops{};
        std::uint64_t in_flight = 0;
    };

    // A request taken from a client (counted in flight until record()).
    void begin() noexcept;
    // Its answer: `bytes` moved (reads, writes) or covered (trims, zeroes).
    void record(stat_op op, std::uint64_t bytes, bool error, std::uint64_t latency_ns) noexcept;

    totals sum() const noexcept;

private:
    struct alignas(64) shard {
        struct counters {
            std::atomic<std::uint64_t> requests{0};
            std::atomic<std::uint64_t> bytes{0};
            std::atomic<std::uint64_t> errors{0};
            std::atomic<std::uint64_t> latency_sum_ns{0};
            std::array<std::atomic<std::uint64_t>, buckets> latency{};
        };
        std::array<counters, stat_ops> ops;
        std::atomic<std::uint64_t> begun{0};
        std::atomic<std::uint64_t> ended{0};
    };
    // Up to 16 workers count without sharing a cache line.
    static constexpr std::size_t shards = 16;

    shard& mine() noexcept;

    std::array<shard, shards> shards_;
};

}  // namespace rct
