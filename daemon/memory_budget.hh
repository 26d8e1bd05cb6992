// memory_budget: the bytes that one worker's NBD connections may hold at once
// in request payloads and queued replies (--memory-budget, split evenly
// between the workers).
//
// A connection takes a request's bytes before it reads the request's payload
// or issues it, and gives them back when the reply has left or the request is
// dropped. When they do not fit, the connection queues here and its reader
// stops reading its socket, so the client's further requests wait in the
// kernel's socket buffers, not in our memory. Queued takers are admitted
// strictly in arrival order as bytes come back: a large request is never
// passed over for ever by small ones, and since no take exceeds the limit
// (main checks that max_payload fits), each is admitted once the holders
// ahead of it give back. A connection's own share is capped separately (by
// the connection, --connection-memory), so clients that never read their
// replies hold at most that much each.
//
// Worker thread only: no locks.
#pragma once

#include <cstddef>

namespace rct::daemon {

class memory_budget {
public:
    class waiter {
    public:
        // Called once the bytes asked for have been taken on the waiter's
        // behalf; possibly from inside give(), so it must not call back into
        // the budget (connections just schedule their reader's resumption).
        virtual void admitted() noexcept = 0;
        bool queued() const noexcept { return queued_; }

    protected:
        ~waiter() = default;

    private:
        friend class memory_budget;
        std::size_t need_ = 0;
        waiter* next_ = nullptr;
        bool queued_ = false;
    };

    explicit memory_budget(std::size_t limit) noexcept : limit_(limit) {}
    memory_budget(const memory_budget&) = delete;
    memory_budget& operator=(const memory_budget&) = delete;

    // Takes bytes now if they fit and nobody is queued ahead.
    bool try_take(std::size_t bytes) noexcept;
    // Queues w for bytes (w must not be queued already).
    void enqueue(waiter& w, std::size_t bytes) noexcept;
    // Takes w out of the queue; false if it was not queued (it may have
    // been admitted meanwhile: then it holds its bytes).
    bool cancel(waiter& w) noexcept;
    void give(std::size_t bytes) noexcept;

    std::size_t limit() const noexcept { return limit_; }
    std::size_t used() const noexcept { return used_; }
    std::size_t queued() const noexcept { return queued_; }

private:
    void admit() noexcept;

    const std::size_t limit_;
    std::size_t used_ = 0;
    std::size_t queued_ = 0;  // waiters in the queue
    waiter* head_ = nullptr;
    waiter* tail_ = nullptr;
};

}  // namespace rct::daemon
