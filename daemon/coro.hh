// Coroutine glue between io_uring completions and straight-line code.
//
// detached: a coroutine that starts at once and frees itself when it ends;
// its owner learns of the end through whatever the body does last (it is
// never awaited). ring_wait: an awaitable completion; put it in an SQE's
// user_data, co_await it, and the coroutine resumes on the worker thread with
// cqe->res. Used for the NBD handshake and the per-connection request reader,
// where the sequencing is naturally linear; the request fast path itself uses
// plain completion objects.
//
// task<T>: a coroutine that starts when awaited and hands its result to the
// awaiting coroutine, resuming it directly when it ends (symmetric
// transfer), so a handshake can be split into one function per option
// without a heap of callbacks. It runs on its awaiter's thread.
#pragma once

#include <rct/io_ring.hh>

#include <coroutine>
#include <exception>
#include <optional>
#include <utility>

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

template <typename T>
class [[nodiscard]] task {
public:
    struct promise_type {
        std::coroutine_handle<> continuation;
        std::optional<T> value;

        task get_return_object() noexcept { return task(std::coroutine_handle<promise_type>::from_promise(*this)); }
        std::suspend_always initial_suspend() noexcept { return {}; }
        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept
            {
                return h.promise().continuation;
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() noexcept { return {}; }
        void return_value(T v) noexcept { value.emplace(std::move(v)); }
        void unhandled_exception() noexcept { std::terminate(); }
    };

    task(task&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    task& operator=(task&&) = delete;
    ~task()
    {
        if (h_) {
            h_.destroy();
        }
    }

    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept
    {
        h_.promise().continuation = awaiter;
        return h_;
    }
    T await_resume() noexcept { return std::move(*h_.promise().value); }

private:
    explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> h_;
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
