#include "queries.hh"

#include <cstdlib>
#include <iostream>

namespace rct::backup {

using tools::exit_failure;
using tools::failure;
using tools::json;
using tools::segment;

// A message for people: stderr, and never mixed into --json's stdout.
void note(const std::string& text) { std::cerr << "rct-backup: " << text << '\n'; }

// The ranges rctd says changed between `from` (a token) and snapshot `to`.
std::vector<byte_range> changed_ranges(tools::client& api, const std::string& disk, const std::string& from,
                                       const std::string& to)
{
    std::vector<byte_range> out;
    const std::string path = "/disks/" + segment(disk) + "/diff?from=" + segment(from) + "&to=" + segment(to);
    std::string cursor = "0";
    for (;;) {
        const json page = api.call_json("GET", path + "&cursor=" + segment(cursor));
        for (const auto& e : page.value("extents", json::array())) {
            const std::uint64_t offset = e.at("offset").get<std::uint64_t>();
            const std::uint64_t length = e.at("length").get<std::uint64_t>();
            if (!out.empty() && out.back().first + out.back().second == offset) {
                out.back().second += length;
            } else {
                out.emplace_back(offset, length);
            }
        }
        const json next = page.value("next_cursor", json());
        if (!next.is_string()) {
            return out;
        }
        if (std::strtoull(next.get<std::string>().c_str(), nullptr, 10) <=
            std::strtoull(cursor.c_str(), nullptr, 10)) {
            throw failure{exit_failure, "rctd's diff listing did not advance past cursor " + cursor, {}, {}};
        }
        cursor = next.get<std::string>();
    }
}

}  // namespace rct::backup
