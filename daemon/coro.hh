// Coroutine glue between io_uring completions and straight-line code.
//
// detached: a coroutine that starts at once and frees itself when it ends;
// its owner learns of the end through whatever the body does last (it is
// never awaited). ring_wait: an awaitable completion; put it in an SQE's
// user_data, co_await it, and the coroutine resumes on the worker thread with
// cqe->res. Used for the NBD handshake and the per-connection request reader,
// where the sequencing is naturally linear; the request fast path itself uses
// plain completion objects.
#pragma once

#include <rct/io_ring.hh>

#include <coroutine>
#include <exception>

namespace rct::daemon {

struct detached {
    struct promise_type {
        detached get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        // The bodies catch what they can handle; anything else is a bug.
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

class ring_wait final : public completion {
public:
    void complete(int res, std::uint32_t) noexcept override
    {
        res_ = res;
        waiter_.resume();
    }
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { waiter_ = h; }
    int await_resume() const noexcept { return res_; }

private:
    std::coroutine_handle<> waiter_;
    int res_ = 0;
};

// A one-shot wake-up for a suspended coroutine (e.g. the reader waiting for
// a free request slot). Not a completion: woken by code, not by a CQE.
class wakeup {
public:
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { waiter_ = h; }
    void await_resume() const noexcept {}
    bool waiting() const noexcept { return static_cast<bool>(waiter_); }
    void wake() noexcept
    {
        if (auto h = waiter_) {
            waiter_ = nullptr;
            h.resume();
        }
    }

private:
    std::coroutine_handle<> waiter_;
};

}  // namespace rct::daemon
