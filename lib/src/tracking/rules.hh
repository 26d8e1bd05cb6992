// Rules about tracking values that more than one place must agree on: the
// granularities a disk may have, the names a checkpoint may carry, and the
// shape of a run list (docs/format/tracking.md). Decoders apply them after a
// checksum passes, because a checksum says a file is what was written, not
// that what was written makes sense. Pure functions; thread-safe.
#pragma once

#include "bitmap.hh"
#include "token.hh"

#include <rct/error.hh>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rct::tracking {

inline constexpr std::uint64_t min_granularity = 4096;
inline constexpr std::uint64_t max_granularity = 1u << 20;

inline bool valid_granularity(std::uint64_t g) noexcept
{
    return g >= min_granularity && g <= max_granularity && (g & (g - 1)) == 0;
}

inline bool valid_checkpoint_name(std::string_view n) noexcept
{
    if (n.empty() || n.size() > 128 || n.substr(0, token_prefix.size()) == token_prefix) {
        return false;
    }
    return std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '-' || c == ':';
    });
}

// Throws errc::corrupt unless runs are non-empty, ascending, disjoint and
// inside [0, chunks).
inline void check_runs(const std::vector<run>& runs, std::uint64_t chunks, const std::string& what)
{
    std::uint64_t end = 0;
    for (const run& r : runs) {
        if (r.count == 0 || r.start < end || r.start > chunks || r.count > chunks - r.start) {
            throw error(errc::corrupt, what + ": a run of chunks is empty, out of order or past the disk's end");
        }
        end = r.start + r.count;
    }
}

// Sorts and merges overlapping or touching runs.
inline void normalize(std::vector<run>& runs)
{
    std::sort(runs.begin(), runs.end(), [](const run& a, const run& b) { return a.start < b.start; });
    std::vector<run> out;
    for (const run& r : runs) {
        if (!out.empty() && r.start <= out.back().start + out.back().count) {
            const std::uint64_t e = std::max(out.back().start + out.back().count, r.start + r.count);
            out.back().count = e - out.back().start;
        } else {
            out.push_back(r);
        }
    }
    runs.swap(out);
}

}  // namespace rct::tracking
