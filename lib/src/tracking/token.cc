#include "token.hh"

#include <rct/codec.hh>

#include <xxhash.h>

#include <cstring>

namespace rct::tracking {
namespace {

constexpr std::size_t raw_size = 48;
constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

using persist::load_le;
using persist::store_le;

int decode_char(char c)
{
    const char* p = std::strchr(alphabet, c);
    return (c != '\0' && p != nullptr) ? static_cast<int>(p - alphabet) : -1;
}

}  // namespace

std::string encode_token(const token_fields& t)
{
    std::uint8_t raw[raw_size] = {};
    raw[0] = 1;  // layout version
    store_le<std::uint32_t>(raw + 4, t.generation);
    std::memcpy(raw + 8, t.disk_id.data(), 16);
    store_le<std::uint64_t>(raw + 24, t.epoch);
    store_le<std::uint64_t>(raw + 32, t.size);
    store_le<std::uint32_t>(raw + 40, t.granularity);
    store_le<std::uint32_t>(raw + 44, static_cast<std::uint32_t>(XXH64(raw, 44, 0)));

    std::string out(token_prefix);
    for (std::size_t i = 0; i < raw_size; i += 3) {
        const std::uint32_t v = (raw[i] << 16) | (raw[i + 1] << 8) | raw[i + 2];
        for (int k = 3; k >= 0; --k) {
            out.push_back(alphabet[(v >> (6 * k)) & 63]);
        }
    }
    return out;
}

std::optional<token_fields> decode_token(std::string_view text)
{
    if (text.substr(0, token_prefix.size()) != token_prefix) {
        return std::nullopt;
    }
    text.remove_prefix(token_prefix.size());
    if (text.size() != raw_size / 3 * 4) {
        return std::nullopt;
    }
    std::uint8_t raw[raw_size];
    for (std::size_t i = 0, o = 0; i < text.size(); i += 4, o += 3) {
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 4; ++k) {
            const int d = decode_char(text[i + k]);
            if (d < 0) {
                return std::nullopt;
            }
            v = (v << 6) | static_cast<std::uint32_t>(d);
        }
        raw[o] = static_cast<std::uint8_t>(v >> 16);
        raw[o + 1] = static_cast<std::uint8_t>(v >> 8);
        raw[o + 2] = static_cast<std::uint8_t>(v);
    }
    if (raw[0] != 1 || load_le<std::uint32_t>(raw + 44) != static_cast<std::uint32_t>(XXH64(raw, 44, 0))) {
        return std::nullopt;
    }
    token_fields t;
    t.generation = load_le<std::uint32_t>(raw + 4);
    std::memcpy(t.disk_id.data(), raw + 8, 16);
    t.epoch = load_le<std::uint64_t>(raw + 24);
    t.size = load_le<std::uint64_t>(raw + 32);
    t.granularity = load_le<std::uint32_t>(raw + 40);
    return t;
}

std::optional<std::array<std::uint8_t, 16>> parse_uuid(std::string_view id)
{
    std::array<std::uint8_t, 16> out{};
    std::size_t n = 0;
    for (char c : id) {
        if (c == '-') {
            continue;
        }
        int v;
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v = c - 'A' + 10;
        } else {
            return std::nullopt;
        }
        if (n >= 32) {
            return std::nullopt;
        }
        out[n / 2] = static_cast<std::uint8_t>(out[n / 2] | (v << (n % 2 == 0 ? 4 : 0)));
        ++n;
    }
    if (n != 32) {
        return std::nullopt;
    }
    return out;
}

}  // namespace rct::tracking
