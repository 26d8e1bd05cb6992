// ublk::record: STATE/ublk/NAME.json, the note that disk NAME is attached
// as ublk device dev_id (format: docs/format/ublk.md). Written when a device
// starts, removed when it is detached; read at start (recovery) and by the
// watchdog. Throw rct::error on I/O failure.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace rct::daemon::ublk {

struct record {
    std::string disk;
    std::string disk_id;
    std::uint32_t dev_id = 0;
};

// Empty when p is not a valid record (the caller logs it).
std::optional<record> read_record(const std::filesystem::path& p);
// The same for a record's text, found in a file named `filename`.
std::optional<record> parse_record(std::string_view text, std::string_view filename);
void write_record(const std::filesystem::path& dir, const record& r);
void remove_record(const std::filesystem::path& dir, const std::string& disk);

}  // namespace rct::daemon::ublk
