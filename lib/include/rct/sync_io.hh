// sync_io: blocking block I/O through a backend, for management work (clone,
// restore) and tests, on a private ring owned by the calling thread.
//
// Layers that finish waiting on another thread (an intent commit, a snapshot
// copy) post the continuation to the request's ring's executor; this object
// is that executor and runs such tasks while it waits, so a backend sees the
// same threading as on a worker. Create and use it on one thread.
#pragma once

#include <rct/backend.hh>
#include <rct/io_ring.hh>
#include <rct/unique_fd.hh>

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace rct {

class sync_io final : public executor {
public:
    sync_io();  // throws rct::error when io_uring is unusable
    sync_io(const sync_io&) = delete;
    sync_io& operator=(const sync_io&) = delete;

    // One request, start to finish. Returns 0 or -errno.
    int run(backend& b, io_op op, std::uint64_t offset, std::uint64_t length, std::byte* buf,
            std::uint16_t flags = 0);

    // Any thread.
    void post(std::function<void()> task) override;

private:
    class waker final : public completion {
    public:
        explicit waker(sync_io& s) : s_(s) {}
        void arm() noexcept;
        void complete(int res, std::uint32_t) noexcept override;

    private:
        sync_io& s_;
        std::uint64_t counter_ = 0;
    };
    void run_tasks();

    io_ring ring_;
    unique_fd event_fd_;
    waker waker_{*this};
    std::mutex mu_;
    std::vector<std::function<void()>> tasks_;  // mu_
};

}  // namespace rct
