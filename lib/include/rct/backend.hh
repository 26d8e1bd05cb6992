// backend: where a disk's bytes live, behind asynchronous block operations.
//
// Every frontend (NBD connections, ublk queues) reaches a disk's data only
// through this interface, and later layers (change tracking, snapshots) wrap
// a backend in another backend, the way nbdkit filters wrap plugins. A
// backend is shared by all worker threads; submit() runs on the calling
// worker and puts its SQEs on that worker's ring, so a request completes on
// the thread that submitted it. Requests are validated (in range, flags
// known) by the caller before they reach a backend.
#pragma once

#include <rct/io_ring.hh>

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace rct {

enum class io_op : std::uint8_t { read, write, flush, trim, write_zeroes, cache };

// Request flags.
inline constexpr std::uint16_t io_fua = 1;        // durable before completion
inline constexpr std::uint16_t io_may_trim = 2;   // write_zeroes may leave a hole
inline constexpr std::uint16_t io_fast_zero = 4;  // write_zeroes: fail with -ENOTSUP rather than be slow

// A layer that wants to see a request's outcome before the frontend does
// (change tracking re-marks writes that straddled a checkpoint).
class io_request;
class io_layer {
public:
    virtual void finished(io_request& r, int res) noexcept = 0;

protected:
    ~io_layer() = default;
};

// One block operation. The frontend owns it (pooled, never allocated per
// request) and learns the outcome through done(), called exactly once on the
// submitting thread.
class io_request : public completion {
public:
    io_op op = io_op::read;
    std::uint16_t flags = 0;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
    std::byte* buf = nullptr;  // read/write only; length bytes

    // res: 0 on success, -errno on failure. Backends call finish(), which
    // passes through the layer above (if any) on the way to done().
    virtual void done(int res) noexcept = 0;
    void finish(int res) noexcept
    {
        if (depth_ > 0) {
            layers_[--depth_]->finished(*this, res);
        } else {
            done(res);
        }
    }
    // A layer that wants finished() called pushes itself before passing the
    // request down; layers stack (tracking over fault injection over file).
    void push_layer(io_layer* l) noexcept
    {
        assert(depth_ < layers_.size());
        layers_[depth_++] = l;
    }

    std::uint64_t layer_tag = 0;     // reserved for the change-tracking layer
    std::uint64_t snapshot_tag = 0;  // reserved for the copy-on-write layer
    std::uint8_t guard_tag = 0;      // reserved for the disk's size guard

    // Scratch owned by whichever backend layer is driving the request: each
    // CQE for it is routed to on_cqe on the submitting thread.
    void (*on_cqe)(io_request& r, int res) noexcept = nullptr;
    io_ring* ring = nullptr;
    void* owner = nullptr;
    std::uint64_t progress = 0;
    std::uint64_t aux = 0;
    std::uint8_t stage = 0;

protected:
    ~io_request() = default;

private:
    void complete(int res, std::uint32_t) noexcept final { on_cqe(*this, res); }

    std::array<io_layer*, 4> layers_{};
    std::uint8_t depth_ = 0;
};

// base:allocation vocabulary of the NBD spec; backends without holes report 0.
inline constexpr std::uint32_t extent_hole = 1;
inline constexpr std::uint32_t extent_zero = 2;

struct extent {
    std::uint64_t length;
    std::uint32_t flags;
};

class backend {
public:
    virtual ~backend() = default;

    virtual void submit(io_ring& ring, io_request& r) noexcept = 0;

    // Allocation map of [offset, offset+length), appended to out, neighbours
    // with equal flags merged. May stop early after max_extents entries.
    // Returns 0 or -errno. Synchronous: metadata-only, no data I/O.
    virtual int allocation(std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                           std::vector<extent>& out) noexcept = 0;

    // True when [offset, offset+length) is certainly a hole (reads as zeroes
    // without touching the medium). Used to answer reads without reading.
    virtual bool is_hole(std::uint64_t offset, std::uint64_t length) noexcept = 0;
};

}  // namespace rct
