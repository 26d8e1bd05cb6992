#include "options.hh"

#include "wire.hh"

#include <string_view>
#include <unordered_map>

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

std::optional<std::vector<meta_context>> match_contexts(const std::vector<checkpoint_info>& cps,
                                                        const std::vector<std::string>& queries, bool list)
{
    if (queries.size() > max_meta_queries) {
        return std::nullopt;
    }
    // Context ids are per connection: 1 is base:allocation; a checkpoint's
    // bitmap gets 2 + its position in the checkpoint list.
    constexpr std::string_view bitmap_prefix = "qemu:dirty-bitmap:";
    std::vector<meta_context> out;
    std::vector<bool> taken(cps.size() + 1);  // by id - 1
    auto add = [&](std::size_t slot) {
        if (taken[slot]) {
            return;
        }
        taken[slot] = true;
        if (slot == 0) {
            out.push_back({1, meta_kind::base_allocation, 0, 0, "base:allocation"});
        } else {
            const checkpoint_info& c = cps[slot - 1];
            out.push_back({static_cast<std::uint32_t>(1 + slot), meta_kind::dirty_bitmap, c.epoch, c.generation,
                           std::string(bitmap_prefix) + c.name});
        }
    };
    bool all_bitmaps = false;
    auto add_bitmaps = [&] {
        for (std::size_t i = 0; !all_bitmaps && i < cps.size(); ++i) {
            add(1 + i);
        }
        all_bitmaps = true;
    };
    if (queries.empty()) {
        if (list) {
            add(0);
            add_bitmaps();
        }
        return out;
    }
    std::unordered_map<std::string_view, std::size_t> by_name;
    by_name.reserve(cps.size());
    for (std::size_t i = 0; i < cps.size(); ++i) {
        by_name.emplace(cps[i].name, i);
    }
    for (const auto& q : queries) {
        if (q == "base:allocation" || (list && q == "base:")) {
            add(0);
        } else if (list && (q == "qemu:" || q == bitmap_prefix)) {
            add_bitmaps();
        } else if (q.size() > bitmap_prefix.size() && q.starts_with(bitmap_prefix)) {
            if (const auto it = by_name.find(std::string_view(q).substr(bitmap_prefix.size())); it != by_name.end()) {
                add(1 + it->second);
            }
        }
        // Unknown namespaces and names are ignored, per the spec.
    }
    return out;
}

}  // namespace rct::nbd
