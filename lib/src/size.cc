// Size parsing is exact: "1.5G" is computed in integers, never through a
// double, so every accepted string means exactly one byte count and anything
// that would need rounding (like "0.3K" = 307.2 bytes) is refused instead.
#include <rct/size.hh>

#include <array>
#include <cctype>
#include <cstddef>

namespace rct {
namespace {

using u128 = unsigned __int128;

constexpr std::uint64_t max_size = std::uint64_t{1} << 63;

constexpr std::array<char, 5> suffixes = {'K', 'M', 'G', 'T', 'P'};

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

char upper(char c) noexcept { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); }

// Decimal digits as an integer; false when the value exceeds limit.
bool digits_value(std::string_view digits, u128 limit, u128& out) noexcept
{
    u128 v = 0;
    for (char c : digits) {
        v = v * 10 + static_cast<unsigned>(c - '0');
        if (v > limit) {
            return false;
        }
    }
    out = v;
    return true;
}

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view text)
{
    std::size_t i = 0;
    while (i < text.size() && is_digit(text[i])) {
        ++i;
    }
    const std::string_view whole = text.substr(0, i);
    std::string_view fraction;
    if (i < text.size() && text[i] == '.') {
        const std::size_t start = ++i;
        while (i < text.size() && is_digit(text[i])) {
            ++i;
        }
        fraction = text.substr(start, i - start);
        if (fraction.empty()) {
            return std::nullopt;  // "10." is a typo, not a size
        }
    }
    if (whole.empty()) {
        return std::nullopt;  // "", ".5", "-1", "G"
    }

    unsigned shift = 0;
    std::string_view rest = text.substr(i);
    if (!rest.empty()) {
        for (std::size_t k = 0; k < suffixes.size(); ++k) {
            if (upper(rest.front()) == suffixes[k]) {
                shift = 10 * static_cast<unsigned>(k + 1);
                rest.remove_prefix(1);
                break;
            }
        }
        // "B" after a number or a unit, "iB" only after a unit.
        if (shift != 0 && rest.size() == 2 && upper(rest[0]) == 'I' && upper(rest[1]) == 'B') {
            rest = {};
        } else if (rest.size() == 1 && upper(rest[0]) == 'B') {
            rest = {};
        }
        if (!rest.empty()) {
            return std::nullopt;
        }
    }

    u128 integral = 0;
    if (!digits_value(whole, u128{max_size} >> shift, integral)) {
        return std::nullopt;
    }
    u128 total = integral << shift;

    while (!fraction.empty() && fraction.back() == '0') {
        fraction.remove_suffix(1);
    }
    if (!fraction.empty()) {
        // fraction = f / 10^n = f / (2^n * 5^n): a whole number of bytes
        // after multiplying by 2^shift exactly when n <= shift and 5^n
        // divides f. 38 digits keep 10^n within 128 bits; anything longer
        // would need n > 50 >= shift anyway.
        const std::size_t n = fraction.size();
        if (n > shift || n > 38) {
            return std::nullopt;
        }
        u128 f = 0;
        digits_value(fraction, ~u128{0}, f);
        u128 five_n = 1;
        for (std::size_t k = 0; k < n; ++k) {
            five_n *= 5;
        }
        if (f % five_n != 0) {
            return std::nullopt;
        }
        total += (f / five_n) << (shift - n);
    }
    if (total > max_size) {
        return std::nullopt;
    }
    return static_cast<std::uint64_t>(total);
}

std::string format_size(std::uint64_t bytes)
{
    if (bytes == 0) {
        return "0";
    }
    unsigned k = 0;
    while (k < suffixes.size() && bytes % 1024 == 0) {
        bytes /= 1024;
        ++k;
    }
    std::string out = std::to_string(bytes);
    if (k > 0) {
        out += suffixes[k - 1];
    }
    return out;
}

}  // namespace rct
