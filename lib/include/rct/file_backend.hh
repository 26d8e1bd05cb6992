// file_backend: a backend over a raw image file (or block device), all data
// I/O through the caller's io_uring.
//
// Reads and writes go through the page cache, like nbdkit's file plugin and
// qemu-nbd with cache=writeback; FUA becomes RWF_DSYNC on the write itself,
// FLUSH an fdatasync. Holes: TRIM punches, WRITE_ZEROES punches when allowed
// and otherwise uses FALLOC_FL_ZERO_RANGE, falling back to writing zeroes
// (or -ENOTSUP under fast-zero). Thread-safe: holds only the fd.
#pragma once

#include <rct/backend.hh>
#include <rct/unique_fd.hh>

#include <memory>

namespace rct {

std::unique_ptr<backend> make_file_backend(unique_fd fd);

}  // namespace rct
