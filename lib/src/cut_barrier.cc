#include "cut_barrier.hh"

namespace rct {

bool cut_barrier::begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept
{
    if (!closed_.load()) {
        return true;
    }
    rct::lock_guard lock(mu_);
    // Re-checked under the lock, so that open() cannot miss this write.
    if (!closed_.load()) {
        return true;
    }
    // close() reserved room for the common case; beyond it push_back may
    // throw bad_alloc, which terminates: better than a write let through
    // the cut's instant.
    held_.push_back({&r, std::move(resume)});
    return false;
}

void cut_barrier::close()
{
    rct::lock_guard lock(mu_);
    held_.reserve(4096);
    closed_.store(true);
}

void cut_barrier::open() noexcept
{
    std::vector<waiter> go;
    {
        rct::lock_guard lock(mu_);
        closed_.store(false);
        go.swap(held_);
    }
    for (waiter& w : go) {
        resume_on_owner(*w.r, std::move(w.resume), 0);
    }
}

}  // namespace rct
