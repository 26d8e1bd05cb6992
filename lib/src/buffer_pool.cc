#include <rct/buffer_pool.hh>

#include <bit>
#include <cstdlib>

namespace rct {

buffer_pool::~buffer_pool()
{
    for (auto& list : free_) {
        for (std::byte* p : list) {
            std::free(p);
        }
    }
}

std::size_t buffer_pool::class_of(std::size_t size) noexcept
{
    const std::size_t rounded = std::bit_ceil(size < min_size ? min_size : size);
    return static_cast<std::size_t>(std::countr_zero(rounded)) - 12;
}

std::byte* buffer_pool::get(std::size_t size) noexcept
{
    if (size > max_size) {
        return nullptr;
    }
    const std::size_t c = class_of(size);
    auto& list = free_[c];
    if (!list.empty()) {
        std::byte* p = list.back();
        list.pop_back();
        cached_ -= min_size << c;
        return p;
    }
    return static_cast<std::byte*>(std::aligned_alloc(4096, min_size << c));
}

void buffer_pool::put(std::byte* p, std::size_t size) noexcept
{
    if (p == nullptr) {
        return;
    }
    const std::size_t c = class_of(size);
    const std::size_t bytes = min_size << c;
    if (cached_ + bytes > max_cached_) {
        std::free(p);
        return;
    }
    try {
        free_[c].push_back(p);
    } catch (...) {
        std::free(p);
        return;
    }
    cached_ += bytes;
}

}  // namespace rct
