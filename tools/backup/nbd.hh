// nbd: a connected libnbd handle (the C API, libnbd.h) with the few calls
// rct-backup makes, each turning libnbd's error into a `failure`.
//
// One connection owns one handle and is used by one thread; closing it (the
// destructor) disconnects. `extents` walks base:allocation, which every
// connection asks for when it connects.
#pragma once

#include "control_client.hh"

#include <libnbd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace rct::backup {

// A byte range and what base:allocation says of it.
struct extent {
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    bool zero = false;  // reads as zeroes (a hole or a zeroed range)
};

// True when the n bytes at p are all zero.
inline bool all_zero(const char* p, std::size_t n)
{
    return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

class connection {
public:
    // uri: nbd+unix://... ; or a Unix socket path when `is_socket`.
    connection(const std::string& where, bool is_socket);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    std::uint64_t size() const { return size_; }
    // Largest request payload the server takes (capped at 4 MiB).
    std::uint64_t max_request() const { return max_request_; }

    void read(void* buf, std::uint64_t length, std::uint64_t offset);
    void write(const void* buf, std::uint64_t length, std::uint64_t offset);
    // Zeroes a range, letting the server punch a hole (qcow2: zero clusters).
    void zero(std::uint64_t length, std::uint64_t offset);
    void flush();

    // base:allocation over [offset, offset+length), merged, in order.
    std::vector<extent> extents(std::uint64_t offset, std::uint64_t length);

    // Writes with up to `depth` in flight (write_async waits for room): a
    // server that makes each write wait for something (a copy-on-write, an
    // intent commit) batches them. The connection keeps each buffer until
    // its write completes; wait_writes() returns once all have, and throws
    // for the first that failed.
    void write_async(std::vector<char> data, std::uint64_t offset, std::size_t depth);
    void wait_writes();

private:
    [[noreturn]] void fail(const std::string& what) const;

    // Reaps completed writes; with `block`, waits for at least one first.
    void reap(bool block);

    struct pending_write {
        std::int64_t cookie;
        std::vector<char> data;
    };
    nbd_handle* h_;
    std::string where_;
    std::vector<pending_write> writes_;
    std::uint64_t size_ = 0;
    std::uint64_t max_request_ = 4 << 20;
};

}  // namespace rct::backup
