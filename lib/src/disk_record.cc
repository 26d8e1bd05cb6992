#include "disk_record.hh"

#include <rct/error.hh>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace rct::disk_record {

stored_meta parse(std::string_view text, const std::string& path)
{
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        throw error(errc::corrupt, fmt::format("{} is not a JSON object", path));
    }
    auto bad = [&](const std::string& why) { return error(errc::corrupt, fmt::format("{}: {}", path, why)); };
    auto field = [&](const char* key) -> const nlohmann::json& {
        auto it = j.find(key);
        if (it == j.end()) {
            throw bad(fmt::format("field '{}' is missing", key));
        }
        return *it;
    };

    const auto& format = field("format");
    if (!format.is_string() || format.get<std::string>() != format_name) {
        throw bad(fmt::format("not an rct disk (format is {}, expected \"{}\")", format.dump(), format_name));
    }
    const auto& version = field("version");
    if (!version.is_number_unsigned() || version.get<std::uint64_t>() != format_version) {
        throw bad(fmt::format("unsupported version {} (this rctd reads version {})", version.dump(),
                              format_version));
    }

    stored_meta out;
    const auto& name = field("name");
    const auto& id = field("id");
    const auto& size = field("size");
    const auto& created = field("created_at");
    if (!name.is_string()) {
        throw bad("'name' is not a string");
    }
    if (!id.is_string() || id.get<std::string>().empty()) {
        throw bad("'id' is not a non-empty string");
    }
    if (!size.is_number_unsigned() || size.get<std::uint64_t>() == 0 || size.get<std::uint64_t>() % sector != 0) {
        throw bad(fmt::format("'size' {} is not a positive multiple of {}", size.dump(), sector));
    }
    if (!created.is_number_integer()) {
        throw bad("'created_at' is not an integer");
    }
    out.meta.name = name.get<std::string>();
    out.meta.id = id.get<std::string>();
    out.meta.size = size.get<std::uint64_t>();
    out.meta.created_at = created.get<std::int64_t>();
    if (auto it = j.find("resize_to"); it != j.end()) {
        if (!it->is_number_unsigned()) {
            throw bad("'resize_to' is not an unsigned integer");
        }
        out.resize_to = it->get<std::uint64_t>();
    }
    return out;
}

}  // namespace rct::disk_record
