// Small durable-file primitives shared by every on-disk structure: exact
// writes, data syncs, whole-file reads, the temp + fsync + rename +
// directory-fsync replacement, and the XXH64 checksums the formats in
// docs/format/ use. All throw rct::error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rct::persist {

void write_all(int fd, const void* data, std::size_t n, std::uint64_t off, const std::filesystem::path& p);
void sync_fd(int fd, const std::filesystem::path& p);
// Whole file; exists=false (and empty) when it does not exist.
std::vector<std::uint8_t> read_file(const std::filesystem::path& p, bool& exists);
// Atomically replaces dir/name with bytes: temp + fsync + rename + dir fsync.
void replace_file(const std::filesystem::path& dir, const std::string& name, const std::vector<std::uint8_t>& bytes);
void fsync_dir(const std::filesystem::path& dir);

// XXH64 over a header struct with its `checksum` member zeroed, then tail.
std::uint64_t checksum(const void* head, std::size_t head_len, const void* tail, std::size_t tail_len);
template <typename H>
std::uint64_t header_checksum(H h, const void* tail, std::size_t tail_len)
{
    h.checksum = 0;
    return checksum(&h, sizeof h, tail, tail_len);
}

}  // namespace rct::persist
