// io_ring: one io_uring instance, owned by exactly one thread.
//
// Every SQE carries a pointer to a `completion` as its user_data; when the
// CQE arrives, run() calls completion::complete() with the CQE's result, on
// the owning thread. A null user_data means "nobody cares" (the CQE of a
// linked step whose outcome the last step reports). The ring is created with
// SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them, which is why it
// must never be touched from another thread (it is created disabled and
// enabled by its owner): cross-thread work goes through
// a mailbox (see worker code), not through this ring.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <functional>

namespace rct {

class completion {
public:
    // res is cqe->res: a byte count, 0, or -errno. Must not throw.
    virtual void complete(int res, std::uint32_t cqe_flags) noexcept = 0;

protected:
    ~completion() = default;
};

// Runs tasks on the thread that owns a ring; how engine layers that wait
// off-thread (e.g. for an intent commit) get back to the right worker.
class executor {
public:
    virtual void post(std::function<void()> task) = 0;

protected:
    ~executor() = default;
};

class io_ring {
public:
    // Throws rct::error with a clear message when io_uring is unavailable
    // (disabled by sysctl, seccomp, too old a kernel).
    explicit io_ring(unsigned entries);
    ~io_ring();
    io_ring(const io_ring&) = delete;
    io_ring& operator=(const io_ring&) = delete;

    // Must be called once, by the owning thread, before any other use.
    void enable();

    // Caps the kernel threads that run this ring's blocking work (buffered
    // file writes, syncs, fallocate). Without a cap the kernel starts one
    // per queued write, and they spend their time contending for the file's
    // inode lock: 4k random writes measured 2x faster with 2 than unbounded.
    void limit_workers(unsigned bounded);

    // A zeroed SQE with user_data set; flushes the SQ to the kernel first if
    // it is full, so it never fails.
    io_uring_sqe* sqe(completion* c) noexcept;

    // Submits pending SQEs, waits for at least one CQE (when wait is true),
    // and dispatches every CQE available. Returns the number dispatched or
    // -errno of a failed io_uring_enter (other than EINTR/EAGAIN/EBUSY).
    int run(bool wait);

    void set_executor(executor* e) noexcept { executor_ = e; }
    executor* owner() const noexcept { return executor_; }

    io_uring* raw() noexcept { return &ring_; }
    int fd() const noexcept { return ring_.ring_fd; }
    unsigned setup_flags() const noexcept { return flags_; }

private:
    io_uring ring_{};
    unsigned flags_ = 0;
    executor* executor_ = nullptr;
};

}  // namespace rct
