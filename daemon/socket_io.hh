// Socket I/O awaitables for a connection's coroutines, on the worker's ring.
//
// exact_io sends or receives exactly N bytes, resubmitting after short
// transfers. Resumes with N, 0 if the peer closed first, or -errno. With a
// stop flag, a transfer cut short while the flag is set (a live upgrade
// cancelling it, upgrade/handover.hh) resumes early: done() says how much
// moved, so nothing already taken off the socket is lost.
//
// recv_buffer + fill_io: the receive side of a connection. fill_io receives
// into the buffer until it holds at least N unparsed bytes; with the stop
// flag set it does not start another receive and resumes with -ECANCELED,
// the bytes received so far staying in the buffer. The handshake and the
// request reader both parse out of it, so at any point where they wait the
// whole unparsed input is one span that can move to another process.
#pragma once

#include <rct/io_ring.hh>

#include <sys/socket.h>

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstring>
#include <vector>

namespace rct::daemon {

class exact_io final : public completion {
public:
    enum class dir { send, recv };

    exact_io(io_ring& ring, int fd, dir d, void* buf, std::size_t len, const bool* stop = nullptr) noexcept
        : ring_(ring), fd_(fd), dir_(d), buf_(static_cast<std::byte*>(buf)), len_(len), stop_(stop)
    {
    }
    std::size_t done() const noexcept { return done_; }

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
        if (done_ < len_ && !(stop_ != nullptr && *stop_)) {
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
    const bool* stop_;
    std::size_t done_ = 0;
    int result_ = 0;
    std::coroutine_handle<> waiter_;
};

struct recv_buffer {
    std::vector<std::byte> data;
    std::size_t begin = 0;  // [begin, end) is received and not yet parsed
    std::size_t end = 0;

    std::size_t size() const noexcept { return end - begin; }
    const std::byte* head() const noexcept { return data.data() + begin; }
    void consume(std::size_t n) noexcept { begin += n; }
    // Room for at least n more bytes after end.
    void make_room(std::size_t n)
    {
        if (data.size() - end >= n) {
            return;
        }
        std::memmove(data.data(), data.data() + begin, end - begin);
        end -= begin;
        begin = 0;
        if (data.size() - end < n) {
            data.resize(end + n);
        }
    }
};

class fill_io final : public completion {
public:
    // Receives until b holds `need` bytes; each receive takes what the
    // socket has, up to `chunk` more (the buffer grows to fit).
    fill_io(io_ring& ring, int fd, recv_buffer& b, std::size_t need, std::size_t chunk, const bool& stop,
            completion** pending) noexcept
        : ring_(ring), fd_(fd), b_(b), need_(need), chunk_(chunk), stop_(stop), pending_(pending)
    {
    }

    bool await_ready() const noexcept { return b_.size() >= need_ || stop_; }
    void await_suspend(std::coroutine_handle<> h)
    {
        waiter_ = h;
        issue();
    }
    // The bytes buffered, 0 at end of file, -ECANCELED when stopped, or -errno.
    long await_resume() const noexcept
    {
        if (b_.size() >= need_) {
            return static_cast<long>(b_.size());
        }
        // End of file or an error wins over a stop: a closed connection is
        // closed, not frozen.
        if (ended_ && result_ != -ECANCELED) {
            return result_;
        }
        return stop_ ? -ECANCELED : result_;
    }

    void complete(int res, std::uint32_t) noexcept override
    {
        *pending_ = nullptr;
        if (res > 0) {
            b_.end += static_cast<std::size_t>(res);
            if (b_.size() < need_ && !stop_) {
                issue();
                return;
            }
        }
        result_ = res;
        ended_ = res <= 0;
        waiter_.resume();
    }

private:
    void issue()
    {
        const std::size_t want = need_ - b_.size();
        b_.make_room(want > chunk_ ? want : chunk_);
        *pending_ = this;
        io_uring_prep_recv(ring_.sqe(this), fd_, b_.data.data() + b_.end, b_.data.size() - b_.end, 0);
    }

    io_ring& ring_;
    int fd_;
    recv_buffer& b_;
    std::size_t need_;
    std::size_t chunk_;
    const bool& stop_;
    completion** pending_;
    int result_ = 0;
    bool ended_ = false;  // a receive returned end of file or an error
    std::coroutine_handle<> waiter_;
};

}  // namespace rct::daemon
