#include "options.hh"

#include "wire.hh"

namespace rct::nbd {
namespace {

// Takes "u32 len | len bytes" at pos; false if it overruns.
bool take_string(std::span<const std::byte> b, std::size_t& pos, std::string& out)
{
    if (b.size() - pos < 4) {
        return false;
    }
    const auto n = load_be<std::uint32_t>(b.data() + pos);
    pos += 4;
    if (b.size() - pos < n) {
        return false;
    }
    out.assign(reinterpret_cast<const char*>(b.data() + pos), n);
    pos += n;
    return true;
}

}  // namespace

bool valid_client_flags(std::uint32_t flags) noexcept
{
    return (flags & ~(client_flag_fixed_newstyle | client_flag_no_zeroes)) == 0;
}

std::optional<option_header> decode_option_header(const std::byte* p) noexcept
{
    if (load_be<std::uint64_t>(p) != ihaveopt) {
        return std::nullopt;
    }
    return option_header{load_be<std::uint32_t>(p + 8), load_be<std::uint32_t>(p + 12)};
}

// "u32 namelen | name | u16 n | n × u16 info type"
std::optional<info_request> parse_info_request(std::span<const std::byte> data)
{
    info_request r;
    std::size_t pos = 0;
    if (!take_string(data, pos, r.name) || data.size() - pos < 2) {
        return std::nullopt;
    }
    const auto n = load_be<std::uint16_t>(data.data() + pos);
    pos += 2;
    if (data.size() - pos != std::size_t{2} * n) {
        return std::nullopt;
    }
    for (; pos < data.size(); pos += 2) {
        const auto t = load_be<std::uint16_t>(data.data() + pos);
        r.want_name |= t == info_name;
        r.want_description |= t == info_description;
    }
    return r;
}

// "u32 namelen | name | u32 n | n × (u32 len | query)", nothing after.
std::optional<meta_context_request> parse_meta_context_request(std::span<const std::byte> data)
{
    meta_context_request r;
    std::size_t pos = 0;
    if (!take_string(data, pos, r.name) || data.size() - pos < 4) {
        return std::nullopt;
    }
    const auto n = load_be<std::uint32_t>(data.data() + pos);
    pos += 4;
    // Each query takes at least 4 bytes, so a huge count fails on the data
    // long before it could cost memory.
    for (std::uint32_t i = 0; i < n; ++i) {
        std::string q;
        if (!take_string(data, pos, q)) {
            return std::nullopt;
        }
        r.queries.push_back(std::move(q));
    }
    if (pos != data.size()) {
        return std::nullopt;
    }
    return r;
}

}  // namespace rct::nbd
