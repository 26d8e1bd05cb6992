// Byte-buffer predicates shared by the engine. Pure; thread-safe.
#pragma once

#include <cstddef>
#include <cstring>

namespace rct {

// Whether n bytes at p are all zero (n == 0: true).
inline bool all_zero(const void* p, std::size_t n) noexcept
{
    const auto* b = static_cast<const unsigned char*>(p);
    return n == 0 || (b[0] == 0 && std::memcmp(b, b + 1, n - 1) == 0);
}

}  // namespace rct
