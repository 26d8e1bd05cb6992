// disk.json, a disk's metadata file (docs/format/disk.md): its parser, apart
// from the registry's file handling so that it can be fuzzed and tested alone.
#pragma once

#include <rct/disk.hh>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rct::disk_record {

inline constexpr const char* format_name = "rct-disk";
inline constexpr int format_version = 1;
inline constexpr std::uint64_t sector = 512;

// disk.json as stored: the metadata plus a resize in progress, if any.
struct stored_meta {
    disk_meta meta;
    std::optional<std::uint64_t> resize_to;
};

// Parses the text of disk.json; `path` names it in messages. Throws
// rct::error(corrupt) saying what is wrong, and nothing else.
stored_meta parse(std::string_view text, const std::string& path);

}  // namespace rct::disk_record
