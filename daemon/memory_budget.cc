#include "memory_budget.hh"

namespace rct::daemon {

bool memory_budget::try_take(std::size_t bytes) noexcept
{
    if (head_ != nullptr || bytes > limit_ - used_) {
        return false;
    }
    used_ += bytes;
    return true;
}

void memory_budget::enqueue(waiter& w, std::size_t bytes) noexcept
{
    w.need_ = bytes;
    w.next_ = nullptr;
    w.queued_ = true;
    if (tail_ != nullptr) {
        tail_->next_ = &w;
    } else {
        head_ = &w;
    }
    tail_ = &w;
    ++queued_;
    admit();  // it may fit already (the queue ahead of it was empty)
}

bool memory_budget::cancel(waiter& w) noexcept
{
    if (!w.queued_) {
        return false;
    }
    waiter* prev = nullptr;
    for (waiter* p = head_; p != &w; p = p->next_) {
        prev = p;
    }
    (prev != nullptr ? prev->next_ : head_) = w.next_;
    if (tail_ == &w) {
        tail_ = prev;
    }
    w.queued_ = false;
    --queued_;
    // The one ahead may have been what held back those behind it.
    admit();
    return true;
}

void memory_budget::give(std::size_t bytes) noexcept
{
    used_ -= bytes;
    admit();
}

void memory_budget::admit() noexcept
{
    while (head_ != nullptr && head_->need_ <= limit_ - used_) {
        waiter* w = head_;
        head_ = w->next_;
        if (head_ == nullptr) {
            tail_ = nullptr;
        }
        w->queued_ = false;
        --queued_;
        used_ += w->need_;
        w->admitted();
    }
}

}  // namespace rct::daemon
