// nbd: a connected libnbd handle (the C API, libnbd.h) with the few calls
// rct-backup makes, each turning libnbd's error into a `failure`.
//
// One connection owns one handle and is used by one thread; closing it (the
// destructor) disconnects. `extents` walks base:allocation, which every
// connection asks for when it connects. Reads, writes and zeroes can be
// pipelined (libnbd's aio calls): a copy of many small ranges is bound by
// round trips otherwise.
#pragma once

#include "control_client.hh"

#include <libnbd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace rct::backup {

using byte_range = std::pair<std::uint64_t, std::uint64_t>;  // offset, length

// Page-aligned and left uninitialised: a block read into it can go to an
// O_DIRECT file as it is, and is not zeroed first only to be overwritten.
template <typename T>
struct page_allocator {
    using value_type = T;
    static constexpr std::size_t alignment = 4096;
    page_allocator() = default;
    template <typename U>
    page_allocator(const page_allocator<U>& /*other*/) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{alignment})); }
    void deallocate(T* p, std::size_t /*n*/) { ::operator delete(p, std::align_val_t{alignment}); }
    template <typename U>
    void construct(U* p)
    {
        ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... Args>
    void construct(U* p, Args&&... args)
    {
        ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
    }
    template <typename U>
    bool operator==(const page_allocator<U>& /*other*/) const { return true; }
};

using buffer = std::vector<char, page_allocator<char>>;

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
    // The same over each of `ranges` (merged where they overlap), clipped
    // to them, in order. Ranges less than a window apart share one walk, so
    // many small ranges cost a few round trips, not one each.
    std::vector<extent> extents(const std::vector<byte_range>& ranges);

    // A read started, to be waited for with wait(); buf must live until then.
    std::int64_t start_read(char* buf, std::uint64_t length, std::uint64_t offset);
    // Waits for one started command; throws if it failed.
    void wait(std::int64_t cookie);

    // Writes (and zeroes) with up to `depth` in flight (each waits for
    // room): a server that makes each write wait for something (a
    // copy-on-write, an intent commit) batches them. The connection keeps
    // `data` until the write completes; wait_writes() returns once all
    // have, and throws for the first that failed. The second form writes
    // [at, at+length) of a shared buffer.
    void write_async(buffer data, std::uint64_t offset, std::size_t depth);
    void write_async(std::shared_ptr<const buffer> data, std::size_t at, std::size_t length, std::uint64_t offset,
                     std::size_t depth);
    void zero_async(std::uint64_t length, std::uint64_t offset, std::size_t depth);
    void wait_writes();

private:
    [[noreturn]] void fail(const std::string& what) const;

    // Reaps completed writes; with `block`, waits for at least one first.
    void reap(bool block);
    // Keeps at most `depth` writes in flight: a server taking them all at
    // once would hold their buffers here without end.
    void make_room(std::size_t depth);

    struct pending_write {
        std::int64_t cookie;
        std::shared_ptr<const buffer> data;  // null for a zero
    };
    nbd_handle* h_;
    std::string where_;
    std::vector<pending_write> writes_;
    std::uint64_t size_ = 0;
    std::uint64_t max_request_ = 4 << 20;
};

}  // namespace rct::backup
