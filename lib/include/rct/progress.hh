// progress: how far a long management operation (an import, a clone) has
// come, and the way to stop it.
//
// The thread doing the work sets the total, advances the count as bytes
// are done and calls check() between steps; any other thread may read the
// counts and call cancel(). check() then throws rct::error(cancelled), so
// the work unwinds through the cleanup it has for any failure (a staging
// directory removed): a cancelled operation leaves nothing behind.
// Counts are relaxed atomics: a reader sees a recent value, never a torn one.
#pragma once

#include <rct/error.hh>

#include <atomic>
#include <cstdint>

namespace rct {

class progress {
public:
    void set_total(std::uint64_t bytes) noexcept { total_.store(bytes, std::memory_order_relaxed); }
    void advance(std::uint64_t bytes) noexcept { done_.fetch_add(bytes, std::memory_order_relaxed); }
    // The whole total done (what a step skipped, such as holes, counts).
    void finish() noexcept { done_.store(total(), std::memory_order_relaxed); }
    std::uint64_t done() const noexcept { return done_.load(std::memory_order_relaxed); }
    std::uint64_t total() const noexcept { return total_.load(std::memory_order_relaxed); }

    void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }
    void check() const
    {
        if (cancelled()) {
            throw error(errc::cancelled, "cancelled");
        }
    }

private:
    std::atomic<std::uint64_t> done_{0};
    std::atomic<std::uint64_t> total_{0};
    std::atomic<bool> cancelled_{false};
};

// Null-safe forms for the optional progress the registry's calls take.
inline void advance(progress* p, std::uint64_t bytes) noexcept
{
    if (p != nullptr) {
        p->advance(bytes);
    }
}

inline void check(const progress* p)
{
    if (p != nullptr) {
        p->check();
    }
}

}  // namespace rct
