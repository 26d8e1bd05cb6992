// buffer_pool: recycled, page-aligned I/O buffers for one worker thread.
//
// Requests borrow a buffer for their payload and return it when their reply
// has been sent, so a steady stream of requests allocates nothing. Sizes are
// rounded up to powers of two from 4 KiB to 32 MiB; at most max_cached bytes
// sit idle in the pool. Buffers of map_min and above are mapped and unmapped
// directly (mmap/munmap), so those the pool does not keep go back to the OS
// at once: glibc's heap would keep them (its mmap threshold grows with every
// large free), and an idle rctd would sit on the peak of its last burst.
// Smaller ones come from the heap. The cache itself goes back too once the
// pool has been idle for a while (trim_if_idle(), which the owner calls
// periodically), so RSS returns near its base after a burst. Not
// thread-safe: each worker owns its pool.
#pragma once

#include <array>
#include <cstddef>
#include <vector>

namespace rct {

class buffer_pool {
public:
    static constexpr std::size_t min_size = 4096;
    static constexpr std::size_t max_size = std::size_t{32} << 20;
    static constexpr std::size_t map_min = std::size_t{128} << 10;

    explicit buffer_pool(std::size_t max_cached) : max_cached_(max_cached) {}
    ~buffer_pool();
    buffer_pool(const buffer_pool&) = delete;
    buffer_pool& operator=(const buffer_pool&) = delete;

    // The bytes a buffer of size really takes (its size class); 0 when
    // size > max_size.
    static std::size_t rounded(std::size_t size) noexcept;

    // nullptr when size > max_size or memory is exhausted.
    std::byte* get(std::size_t size) noexcept;
    // size must be the one passed to get().
    void put(std::byte* p, std::size_t size) noexcept;

    std::size_t cached() const noexcept { return cached_; }
    // Frees every cached buffer if no get() happened since the last call.
    void trim_if_idle() noexcept;

private:
    static constexpr std::size_t classes = 14;  // 4 KiB .. 32 MiB
    static std::size_t class_of(std::size_t size) noexcept;
    static std::byte* allocate(std::size_t bytes) noexcept;
    static void release(std::byte* p, std::size_t bytes) noexcept;

    const std::size_t max_cached_;
    std::size_t cached_ = 0;
    std::size_t gets_ = 0;
    std::size_t gets_at_trim_ = 0;
    std::array<std::vector<std::byte*>, classes> free_;
};

}  // namespace rct
