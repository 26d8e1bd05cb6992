// atomic_bitmap: one bit per chunk, set concurrently by worker threads.
//
// Bits are only ever set while a bitmap is live (cleared wholesale when it
// is recycled), so "test, then fetch_or if clear" is safe and keeps the hot
// path to a load when the chunk is already marked.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace rct::tracking {

// A run of chunks [start, start+count).
struct run {
    std::uint64_t start;
    std::uint64_t count;
};

class atomic_bitmap {
public:
    // calloc: a large map comes straight from fresh zero pages, so a new
    // map costs no zeroing pass (the tracker allocates one at every cut).
    explicit atomic_bitmap(std::uint64_t bits)
        : bits_(bits), nwords_((bits + 63) / 64),
          words_(static_cast<std::atomic<std::uint64_t>*>(std::calloc(nwords_ ? nwords_ : 1, sizeof(std::uint64_t))))
    {
        static_assert(sizeof(std::atomic<std::uint64_t>) == sizeof(std::uint64_t));
        static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
        if (!words_) {
            throw std::bad_alloc();
        }
    }

    std::uint64_t bits() const noexcept { return bits_; }
    std::uint64_t words() const noexcept { return nwords_; }

    void clear() noexcept
    {
        for (std::uint64_t i = 0; i < nwords_; ++i) {
            words_.get()[i].store(0, std::memory_order_relaxed);
        }
    }

    bool test(std::uint64_t bit) const noexcept
    {
        return (words_.get()[bit / 64].load(std::memory_order_seq_cst) >> (bit % 64)) & 1;
    }

    // Sets [first, last]; seq_cst so that a later load of another variable
    // (the current-map pointer, a durable bit) is ordered after the set.
    void set_range(std::uint64_t first, std::uint64_t last) noexcept
    {
        for (std::uint64_t w = first / 64; w <= last / 64; ++w) {
            const std::uint64_t lo = w == first / 64 ? first % 64 : 0;
            const std::uint64_t hi = w == last / 64 ? last % 64 : 63;
            const std::uint64_t mask = (hi == 63 ? ~std::uint64_t{0} : ((std::uint64_t{1} << (hi + 1)) - 1)) &
                                       ~((std::uint64_t{1} << lo) - 1);
            if ((words_.get()[w].load(std::memory_order_relaxed) & mask) != mask) {
                words_.get()[w].fetch_or(mask, std::memory_order_seq_cst);
            }
        }
    }

    void clear_bit(std::uint64_t bit) noexcept
    {
        words_.get()[bit / 64].fetch_and(~(std::uint64_t{1} << (bit % 64)), std::memory_order_seq_cst);
    }

    std::uint64_t word(std::uint64_t i) const noexcept { return words_.get()[i].load(std::memory_order_seq_cst); }
    std::uint64_t exchange_word(std::uint64_t i, std::uint64_t v) noexcept
    {
        return words_.get()[i].exchange(v, std::memory_order_seq_cst);
    }
    void or_word(std::uint64_t i, std::uint64_t v) noexcept
    {
        if (v != 0) {
            words_.get()[i].fetch_or(v, std::memory_order_seq_cst);
        }
    }

    // Runs of set bits, in order.
    std::vector<run> runs() const
    {
        std::vector<run> out;
        for (std::uint64_t w = 0; w < nwords_; ++w) {
            std::uint64_t v = words_.get()[w].load(std::memory_order_seq_cst);
            while (v != 0) {
                const unsigned b = static_cast<unsigned>(__builtin_ctzll(v));
                const std::uint64_t bit = w * 64 + b;
                if (bit >= bits_) {
                    break;
                }
                if (!out.empty() && out.back().start + out.back().count == bit) {
                    ++out.back().count;
                } else {
                    out.push_back({bit, 1});
                }
                v &= v - 1;
            }
        }
        return out;
    }

private:
    std::uint64_t bits_;
    std::uint64_t nwords_;
    struct free_deleter {
        void operator()(std::atomic<std::uint64_t>* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<std::atomic<std::uint64_t>, free_deleter> words_;
};

}  // namespace rct::tracking
