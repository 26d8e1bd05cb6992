// Change tokens: what `rctctl checkpoint` prints and `changes --since`
// takes back. Opaque to users ("rct1." + 64 base64url characters), they bind
// the disk's unique id, the tracking generation, the checkpoint's epoch, the
// disk size at the cut and the granularity, under a checksum so that a typo
// is "malformed", not some other checkpoint. Byte layout in
// docs/format/tracking.md.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rct::tracking {

struct token_fields {
    std::array<std::uint8_t, 16> disk_id{};
    std::uint32_t generation = 0;
    std::uint64_t epoch = 0;
    std::uint64_t size = 0;
    std::uint32_t granularity = 0;
};

inline constexpr std::string_view token_prefix = "rct1.";

std::string encode_token(const token_fields& t);
// nullopt when the text is not a well-formed token.
std::optional<token_fields> decode_token(std::string_view text);
// Parses a UUID's 32 hex digits (dashes ignored); nullopt if malformed.
std::optional<std::array<std::uint8_t, 16>> parse_uuid(std::string_view id);

}  // namespace rct::tracking
