// Small files that are replaced whole, atomically and durably: records of
// a few hundred bytes (ublk attachments, disk metadata) that must be either
// the old or the new version after a crash, never a mix. Every call goes
// through the engine's persistence seam (lib/src/persist/env.hh), so a
// simulated power cut treats them like every other file. All throw
// rct::error naming the file. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rct::persist {

// Whole file; exists=false (and empty) when it does not exist. A file
// longer than limit is refused (errc::corrupt) before it is read in full.
std::vector<std::uint8_t> read_file(const std::filesystem::path& p, bool& exists,
                                    std::size_t limit = static_cast<std::size_t>(-1));
// Atomically replaces dir/name with bytes: temp + fsync + rename + dir fsync.
void replace_file(const std::filesystem::path& dir, const std::string& name, const std::vector<std::uint8_t>& bytes);
// Removes dir/name (absent is fine) and makes the removal durable.
void remove_file(const std::filesystem::path& dir, const std::string& name);
// create_directories for the directories these files live in: each new
// level mode 0700 and made durable in its parent.
void make_dirs(const std::filesystem::path& dir);

}  // namespace rct::persist
