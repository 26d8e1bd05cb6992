#include "options.hh"

#include "wire.hh"

#include <algorithm>

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

std::vector<meta_context> match_contexts(const std::vector<checkpoint_info>& cps,
                                         const std::vector<std::string>& queries, bool list)
{
    // Context ids are per connection: 1 is base:allocation; a checkpoint's
    // bitmap gets 2 + its position in the checkpoint list.
    constexpr std::string_view bitmap_prefix = "qemu:dirty-bitmap:";
    std::vector<meta_context> out;
    auto add_base = [&] {
        if (std::none_of(out.begin(), out.end(), [](auto& m) { return m.id == 1; })) {
            out.push_back({1, meta_kind::base_allocation, 0, 0, "base:allocation"});
        }
    };
    auto add_bitmap = [&](std::size_t i) {
        const auto id = static_cast<std::uint32_t>(2 + i);
        if (std::none_of(out.begin(), out.end(), [&](auto& m) { return m.id == id; })) {
            out.push_back({id, meta_kind::dirty_bitmap, cps[i].epoch, cps[i].generation,
                           std::string(bitmap_prefix) + cps[i].name});
        }
    };
    if (queries.empty()) {
        if (list) {
            add_base();
            for (std::size_t i = 0; i < cps.size(); ++i) {
                add_bitmap(i);
            }
        }
        return out;
    }
    for (const auto& q : queries) {
        if (q == "base:allocation" || (list && q == "base:")) {
            add_base();
        } else if (list && (q == "qemu:" || q == bitmap_prefix)) {
            for (std::size_t i = 0; i < cps.size(); ++i) {
                add_bitmap(i);
            }
        } else if (q.size() > bitmap_prefix.size() && q.compare(0, bitmap_prefix.size(), bitmap_prefix) == 0) {
            for (std::size_t i = 0; i < cps.size(); ++i) {
                if (q.compare(bitmap_prefix.size(), std::string::npos, cps[i].name) == 0) {
                    add_bitmap(i);
                }
            }
        }
        // Unknown namespaces and names are ignored, per the spec.
    }
    return out;
}

}  // namespace rct::nbd
