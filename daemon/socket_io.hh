// exact_io: an awaitable that sends or receives exactly N bytes on a socket
// through the worker's ring, resubmitting after short transfers. Resumes with
// N, 0 if the peer closed first, or -errno. For the handshake and for large
// WRITE payloads; small requests are parsed out of the connection's receive
// buffer instead.
#pragma once

#include <rct/io_ring.hh>

#include <sys/socket.h>

#include <coroutine>
#include <cstddef>

namespace rct::daemon {

class exact_io final : public completion {
public:
    enum class dir { send, recv };

    exact_io(io_ring& ring, int fd, dir d, void* buf, std::size_t len) noexcept
        : ring_(ring), fd_(fd), dir_(d), buf_(static_cast<std::byte*>(buf)), len_(len)
    {
    }

    bool await_ready() const noexcept { return len_ == 0; }
    void await_suspend(std::coroutine_handle<> h) noexcept
    {
        waiter_ = h;
        issue();
    }
    long await_resume() const noexcept { return result_ < 0 ? result_ : static_cast<long>(done_); }

    void complete(int res, std::uint32_t) noexcept override
    {
        if (res <= 0) {
            result_ = res;
            waiter_.resume();
            return;
        }
        done_ += static_cast<std::size_t>(res);
        if (done_ < len_) {
            issue();
            return;
        }
        waiter_.resume();
    }

private:
    void issue() noexcept
    {
        io_uring_sqe* s = ring_.sqe(this);
        if (dir_ == dir::send) {
            io_uring_prep_send(s, fd_, buf_ + done_, len_ - done_, MSG_NOSIGNAL);
        } else {
            io_uring_prep_recv(s, fd_, buf_ + done_, len_ - done_, MSG_WAITALL);
        }
    }

    io_ring& ring_;
    int fd_;
    dir dir_;
    std::byte* buf_;
    std::size_t len_;
    std::size_t done_ = 0;
    int result_ = 0;
    std::coroutine_handle<> waiter_;
};

}  // namespace rct::daemon
