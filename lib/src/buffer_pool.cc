#include <rct/buffer_pool.hh>

#include <sys/mman.h>

#include <bit>
#include <cstdlib>

namespace rct {

buffer_pool::~buffer_pool()
{
    gets_at_trim_ = gets_;
    trim_if_idle();
}

void buffer_pool::trim_if_idle() noexcept
{
    if (gets_ != gets_at_trim_) {
        gets_at_trim_ = gets_;
        return;
    }
    for (std::size_t c = 0; c < classes; ++c) {
        for (std::byte* p : free_[c]) {
            release(p, min_size << c);
        }
        free_[c].clear();
    }
    cached_ = 0;
}

std::size_t buffer_pool::class_of(std::size_t size) noexcept
{
    const std::size_t rounded = std::bit_ceil(size < min_size ? min_size : size);
    return static_cast<std::size_t>(std::countr_zero(rounded)) - 12;
}

std::size_t buffer_pool::rounded(std::size_t size) noexcept
{
    return size > max_size ? 0 : min_size << class_of(size);
}

std::byte* buffer_pool::allocate(std::size_t bytes) noexcept
{
    if (bytes < map_min) {
        return static_cast<std::byte*>(std::aligned_alloc(4096, bytes));
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
}

void buffer_pool::release(std::byte* p, std::size_t bytes) noexcept
{
    if (bytes < map_min) {
        std::free(p);
    } else {
        ::munmap(p, bytes);
    }
}

std::byte* buffer_pool::get(std::size_t size) noexcept
{
    if (size > max_size) {
        return nullptr;
    }
    ++gets_;
    const std::size_t c = class_of(size);
    auto& list = free_[c];
    if (!list.empty()) {
        std::byte* p = list.back();
        list.pop_back();
        cached_ -= min_size << c;
        return p;
    }
    return allocate(min_size << c);
}

void buffer_pool::put(std::byte* p, std::size_t size) noexcept
{
    if (p == nullptr) {
        return;
    }
    const std::size_t c = class_of(size);
    const std::size_t bytes = min_size << c;
    if (cached_ + bytes > max_cached_) {
        release(p, bytes);
        return;
    }
    try {
        free_[c].push_back(p);
    } catch (...) {
        release(p, bytes);
        return;
    }
    cached_ += bytes;
}

}  // namespace rct
