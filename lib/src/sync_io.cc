#include <rct/sync_io.hh>

#include <rct/error.hh>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace rct {
namespace {

struct blocking_request final : io_request {
    void done(int res) noexcept override
    {
        result = res;
        finished = true;
    }
    int result = 0;
    bool finished = false;
};

}  // namespace

sync_io::sync_io() : ring_(64), event_fd_(::eventfd(0, EFD_CLOEXEC))
{
    if (!event_fd_) {
        throw_errno("eventfd", errno);
    }
    ring_.enable();
    ring_.set_executor(this);
    waker_.arm();
}

void sync_io::waker::arm() noexcept
{
    io_uring_prep_read(s_.ring_.sqe(this), s_.event_fd_.get(), &counter_, sizeof counter_, 0);
}

void sync_io::waker::complete(int, std::uint32_t) noexcept
{
    arm();
}

void sync_io::post(std::function<void()> task)
{
    {
        std::lock_guard lk(mu_);
        tasks_.push_back(std::move(task));
    }
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t w = ::write(event_fd_.get(), &one, sizeof one);
}

void sync_io::run_tasks()
{
    std::vector<std::function<void()>> tasks;
    {
        std::lock_guard lk(mu_);
        tasks.swap(tasks_);
    }
    for (auto& t : tasks) {
        t();
    }
}

int sync_io::run(backend& b, io_op op, std::uint64_t offset, std::uint64_t length, std::byte* buf,
                 std::uint16_t flags)
{
    blocking_request r;
    r.op = op;
    r.offset = offset;
    r.length = length;
    r.buf = buf;
    r.flags = flags;
    b.submit(ring_, r);
    while (!r.finished) {
        if (const int rc = ring_.run(true); rc < 0) {
            throw error(errc::io_error, "io_uring_enter failed: " + std::to_string(rc));
        }
        run_tasks();
    }
    return r.result;
}

}  // namespace rct
