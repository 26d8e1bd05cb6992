// buffer_pool: recycled, page-aligned I/O buffers for one worker thread.
//
// Requests borrow a buffer for their payload and return it when their reply
// has been sent, so a steady stream of requests allocates nothing. Sizes are
// rounded up to powers of two from 4 KiB to 32 MiB; at most max_cached bytes
// sit idle in the pool, the rest go back to the allocator. Not thread-safe:
// each worker owns its pool.
#pragma once

#include <array>
#include <cstddef>
#include <vector>

namespace rct {

class buffer_pool {
public:
    static constexpr std::size_t min_size = 4096;
    static constexpr std::size_t max_size = std::size_t{32} << 20;

    explicit buffer_pool(std::size_t max_cached) : max_cached_(max_cached) {}
    ~buffer_pool();
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;

    // nullptr when size > max_size or memory is exhausted.
    std::byte* get(std::size_t size) noexcept;
    // size must be the one passed to get().
    void put(std::byte* p, std::size_t size) noexcept;

private:
    static constexpr std::size_t classes = 14;  // 4 KiB .. 32 MiB
    static std::size_t class_of(std::size_t size) noexcept;

    const std::size_t max_cached_;
    std::size_t cached_ = 0;
    std::array<std::vector<std::byte*>, classes> free_;
};

}  // namespace rct
