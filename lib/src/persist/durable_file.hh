// Durable-file primitives over the persistence seam (env.hh) for every
// on-disk structure of docs/format/: exact writes, data syncs, directory
// syncs, and the XXH64 checksums the formats use, plus the small-file
// helpers of rct/small_file.hh. All throw rct::error naming the file.
#pragma once

#include "env.hh"

#include <rct/small_file.hh>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rct::persist {

void write_all(int fd, const void* data, std::size_t n, std::uint64_t off, const std::filesystem::path& p);
void sync_fd(int fd, const std::filesystem::path& p);
void fsync_dir(const std::filesystem::path& dir);
void rename_file(const std::filesystem::path& from, const std::filesystem::path& to);
// Opens through the env; throws naming the file.
int open_file(const std::filesystem::path& p, int flags, mode_t mode);
// The same with O_CREAT, and when it created the file, its directory entry
// is made durable before it returns (a log whose name a crash forgets is a
// log lost).
int open_or_create(const std::filesystem::path& p, int flags, mode_t mode);

// XXH64 over a header struct with its `checksum` member zeroed, then tail.
std::uint64_t checksum(const void* head, std::size_t head_len, const void* tail, std::size_t tail_len);
template <typename H>
std::uint64_t header_checksum(H h, const void* tail, std::size_t tail_len)
{
    h.checksum = 0;
    return checksum(&h, sizeof h, tail, tail_len);
}

}  // namespace rct::persist
