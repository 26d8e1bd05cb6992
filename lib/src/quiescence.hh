// quiescence: when may memory that lock-free readers reach through an
// atomic pointer be freed? A reader enters (a guard) before it loads the
// pointer and leaves once it no longer dereferences what it loaded. The
// owner swaps the pointer, then frees the old object only after it has seen
// every stripe at zero: a reader that could still hold the old pointer
// entered before the swap and has not left, so it keeps its stripe above
// zero. A reader stalled inside (SIGSTOP, a frozen cgroup) delays the free;
// it never makes it unsafe — unlike a timer.
//
// Readers stripe by thread (8 cache lines), so workers do not share a line.
// enter/leave are wait-free; quiet() is for the owner's background thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace rct {

inline unsigned thread_stripe() noexcept
{
    static std::atomic<unsigned> next{0};
    static thread_local const unsigned k = next.fetch_add(1, std::memory_order_relaxed) % 8;
    return k;
}

class quiescence {
public:
    class guard {
    public:
        explicit guard(quiescence& q) noexcept : n_(q.stripes_[thread_stripe()].n) { n_.fetch_add(1); }
        ~guard() { n_.fetch_sub(1); }
        guard(const guard&) = delete;
        guard& operator=(const guard&) = delete;

    private:
        std::atomic<std::int64_t>& n_;
    };

    // True when no reader that entered before this call is still inside.
    // Call after the swap (seq_cst orders the two).
    bool quiet() const noexcept
    {
        for (const auto& s : stripes_) {
            if (s.n.load() != 0) {
                return false;
            }
        }
        return true;
    }

private:
    struct alignas(64) stripe {
        std::atomic<std::int64_t> n{0};
    };
    std::array<stripe, 8> stripes_;
};

}  // namespace rct
