// ublk::queue: one hardware queue of a ublk device, served by one worker.
//
// Each of the queue's tags is a slot that cycles through the worker's ring:
// a FETCH_REQ (later COMMIT_AND_FETCH_REQ) waits there until the kernel
// hands the tag a request, whose descriptor we read from the shared
// descriptor array; the request goes to the disk's backend on the same ring,
// reading into or writing from the tag's own buffer (the driver copies the
// bio pages to and from it); its result rides on the next commit, which also
// re-arms the tag. So a request costs one backend operation plus one
// uring_cmd, batched into the worker's io_uring_enter with everything else:
// no lock, no allocation, no copy besides the driver's.
//
// Threading: constructed anywhere; everything else runs on the owning
// worker's thread. Ownership: the device owns its queues; the worker only
// points at the ones it serves.
#pragma once

#include "uapi.hh"

#include <rct/backend.hh>
#include <rct/disk.hh>
#include <rct/mapping.hh>

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace rct::daemon::ublk {

struct queue_shape {
    unsigned id = 0;
    unsigned depth = 0;
    std::uint32_t max_io = 0;  // bytes per request
    bool ioctl_encoding = false;
};

class queue {
public:
    // on_finished runs (on the worker) once every tag has been aborted by
    // the driver: the device was stopped.
    queue(std::shared_ptr<disk> d, int cdev_fd, const queue_shape& shape, std::function<void()> on_finished);
    ~queue();
    queue(const queue&) = delete;
    queue& operator=(const queue&) = delete;

    // Maps the descriptors and arms every tag. Throws rct::error.
    void start(io_ring& ring);
    // The daemon is exiting: requests that arrive from now on are left
    // with the driver, which re-issues them to the next rctd (recovery).
    void stop() noexcept { stopping_ = true; }
    // Any thread, before STOP_DEV: the aborts that follow are ours.
    void expect_abort() noexcept { abort_expected_.store(true, std::memory_order_relaxed); }
    // Requests in the backend right now.
    unsigned busy() const noexcept { return busy_; }

private:
    struct slot;
    void arm(slot& s, unsigned nr, int result) noexcept;
    void on_command(slot& s, int res) noexcept;
    void on_done(slot& s, int res) noexcept;
    void execute(slot& s) noexcept;

    const std::shared_ptr<disk> disk_;
    const int cdev_fd_;
    const queue_shape shape_;
    const std::function<void()> on_finished_;
    io_ring* ring_ = nullptr;
    mapping descriptors_;  // the driver's ublksrv_io_desc array, read-only
    mapping buffers_;      // depth * max_io bytes, one stretch per tag
    std::vector<std::unique_ptr<slot>> slots_;
    unsigned busy_ = 0;
    unsigned aborted_ = 0;
    bool stopping_ = false;
    std::atomic<bool> abort_expected_{false};
};

}  // namespace rct::daemon::ublk
