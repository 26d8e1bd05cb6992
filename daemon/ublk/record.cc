#include "record.hh"

#include <rct/small_file.hh>

#include <nlohmann/json.hpp>

namespace rct::daemon::ublk {

std::optional<record> read_record(const std::filesystem::path& p)
{
    bool exists = false;
    const auto bytes = persist::read_file(p, exists);
    if (!exists) {
        return std::nullopt;
    }
    return parse_record({reinterpret_cast<const char*>(bytes.data()), bytes.size()}, p.filename().string());
}

std::optional<record> parse_record(std::string_view text, std::string_view filename)
{
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return std::nullopt;
    }
    // Types first: json::value() would throw on a "format" that is no string.
    const auto format = j.find("format");
    const auto version = j.find("version");
    if (format == j.end() || *format != "rct-ublk" || version == j.end() || !version->is_number_integer() ||
        *version != 1) {
        return std::nullopt;
    }
    const auto disk = j.find("disk");
    const auto disk_id = j.find("disk_id");
    const auto dev_id = j.find("dev_id");
    if (disk == j.end() || !disk->is_string() || disk_id == j.end() || !disk_id->is_string() ||
        dev_id == j.end() || !dev_id->is_number_unsigned() || dev_id->get<std::uint64_t>() > 0xfffffffe ||
        disk->get<std::string>() + ".json" != filename) {
        return std::nullopt;
    }
    return record{disk->get<std::string>(), disk_id->get<std::string>(), dev_id->get<std::uint32_t>()};
}

void write_record(const std::filesystem::path& dir, const record& r)
{
    const nlohmann::ordered_json j = {
        {"format", "rct-ublk"}, {"version", 1}, {"disk", r.disk}, {"disk_id", r.disk_id}, {"dev_id", r.dev_id},
    };
    const std::string text = j.dump(4) + "\n";
    persist::replace_file(dir, r.disk + ".json", std::vector<std::uint8_t>(text.begin(), text.end()));
}

void remove_record(const std::filesystem::path& dir, const std::string& disk)
{
    persist::remove_file(dir, disk + ".json");
}

}  // namespace rct::daemon::ublk
