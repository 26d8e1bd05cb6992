// Human-friendly byte sizes: "10G", "512M", "4096", "1.5T".
//
// Suffixes K, M, G, T, P are binary (powers of 1024), case-insensitive, and an
// optional trailing "iB"/"B" is accepted ("10GiB", "10GB" both mean 10 GiB).
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rct {

// nullopt on anything malformed, negative, fractional to below a byte, or
// larger than 2^63.
std::optional<std::uint64_t> parse_size(std::string_view text);

// Shortest exact form when possible ("10G", "1536M"), otherwise bytes.
std::string format_size(std::uint64_t bytes);

}  // namespace rct
