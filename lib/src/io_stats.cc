#include <rct/io_stats.hh>

#include <algorithm>

namespace rct {

std::string_view stat_op_name(stat_op op) noexcept
{
    static constexpr std::array<std::string_view, stat_ops> names{"read",         "write", "flush",       "trim",
                                                                   "write_zeroes", "cache", "block_status"};
    return names[static_cast<std::size_t>(op)];
}

io_stats::shard& io_stats::mine() noexcept
{
    // Threads are numbered once; workers (the only recorders) are few, so
    // each gets a shard of its own.
    static std::atomic<unsigned> next{0};
    thread_local const unsigned index = next.fetch_add(1, std::memory_order_relaxed);
    return shards_[index % shards];
}

void io_stats::begin() noexcept { mine().begun.fetch_add(1, std::memory_order_relaxed); }

void io_stats::record(stat_op op, std::uint64_t bytes, bool error, std::uint64_t latency_ns) noexcept
{
    shard& s = mine();
    auto& c = s.ops[static_cast<std::size_t>(op)];
    c.requests.fetch_add(1, std::memory_order_relaxed);
    c.bytes.fetch_add(bytes, std::memory_order_relaxed);
    if (error) {
        c.errors.fetch_add(1, std::memory_order_relaxed);
    }
    c.latency_sum_ns.fetch_add(latency_ns, std::memory_order_relaxed);
    const auto b = std::lower_bound(latency_bounds_ns.begin(), latency_bounds_ns.end(), latency_ns);
    c.latency[static_cast<std::size_t>(b - latency_bounds_ns.begin())].fetch_add(1, std::memory_order_relaxed);
    s.ended.fetch_add(1, std::memory_order_release);
}

io_stats::totals io_stats::sum() const noexcept
{
    totals t;
    std::uint64_t begun = 0, ended = 0;
    for (const shard& s : shards_) {
        // Ended first: a request counted as ended was begun before, so the
        // difference never goes below zero.
        ended += s.ended.load(std::memory_order_acquire);
    }
    for (const shard& s : shards_) {
        begun += s.begun.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < stat_ops; ++i) {
            const auto& c = s.ops[i];
            op_totals& o = t.ops[i];
            o.requests += c.requests.load(std::memory_order_relaxed);
            o.bytes += c.bytes.load(std::memory_order_relaxed);
            o.errors += c.errors.load(std::memory_order_relaxed);
            o.latency_sum_ns += c.latency_sum_ns.load(std::memory_order_relaxed);
            for (std::size_t b = 0; b < buckets; ++b) {
                o.latency[b] += c.latency[b].load(std::memory_order_relaxed);
            }
        }
    }
    t.in_flight = begun > ended ? begun - ended : 0;
    return t;
}

}  // namespace rct
