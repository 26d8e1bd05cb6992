#include <rct/error.hh>
#include <rct/io_ring.hh>

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rct {

io_ring::io_ring(unsigned entries)
{
    // DEFER_TASKRUN runs completion work only when we ask for CQEs, in our
    // own thread, instead of interrupting it; SINGLE_ISSUER is its
    // prerequisite. Older kernels reject them, so fall back step by step.
    const unsigned attempts[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int r = -EINVAL;
    for (unsigned f : attempts) {
        io_uring_params p{};
        // Created disabled: with SINGLE_ISSUER the kernel binds the ring to
        // the task that enables it, which is the worker thread, not us.
        p.flags = f | IORING_SETUP_R_DISABLED;
        p.cq_entries = entries * 4;
        p.flags |= IORING_SETUP_CQSIZE;
        r = io_uring_queue_init_params(entries, &ring_, &p);
        if (r == 0) {
            flags_ = f;
            return;
        }
        if (r != -EINVAL) {
            break;
        }
    }
    if (r == -EPERM) {
        throw error(errc::io_error,
                    "io_uring is not permitted here (kernel.io_uring_disabled sysctl or a seccomp "
                    "filter); rctd needs io_uring");
    }
    if (r == -ENOSYS) {
        throw error(errc::io_error, "this kernel has no io_uring; rctd needs Linux 6.1 or newer");
    }
    throw error(errc::io_error, std::string("cannot create an io_uring: ") + std::strerror(-r));
}

io_ring::~io_ring() { io_uring_queue_exit(&ring_); }

void io_ring::enable()
{
    // liburing 2.3 declares io_uring_enable_rings() but does not export it.
    if (::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) < 0) {
        throw error(errc::io_error, std::string("cannot enable an io_uring: ") + std::strerror(errno));
    }
}

void io_ring::limit_workers(unsigned bounded)
{
    unsigned v[2] = {bounded, 0};  // 0: leave the unbounded pool as it is
    if (const int r = io_uring_register_iowq_max_workers(&ring_, v); r < 0) {
        throw error(errc::io_error, std::string("cannot limit io_uring workers: ") + std::strerror(-r));
    }
}

io_uring_sqe* io_ring::sqe(completion* c) noexcept
{
    io_uring_sqe* s = io_uring_get_sqe(&ring_);
    while (s == nullptr) {
        io_uring_submit(&ring_);
        s = io_uring_get_sqe(&ring_);
    }
    io_uring_sqe_set_data(s, c);
    return s;
}

int io_ring::run(bool wait)
{
    // Without waiting we still enter with GETEVENTS: under DEFER_TASKRUN that
    // is what turns finished work into CQEs.
    int r = wait ? io_uring_submit_and_wait(&ring_, 1) : io_uring_submit_and_get_events(&ring_);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME) {
        return r;
    }
    // Completions may queue new SQEs; they go out on the next run(). The
    // tail is re-read on every step, so CQEs posted meanwhile are seen too.
    int n = 0;
    unsigned head;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe)
    {
        auto* c = static_cast<completion*>(io_uring_cqe_get_data(cqe));
        if (c != nullptr) {
            c->complete(cqe->res, cqe->flags);
        }
        ++n;
    }
    io_uring_cq_advance(&ring_, static_cast<unsigned>(n));
    return n;
}

}  // namespace rct
