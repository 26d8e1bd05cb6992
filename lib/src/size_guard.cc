#include "size_guard.hh"

#include "quiescence.hh"

#include <cerrno>
#include <chrono>
#include <thread>

namespace rct {

size_guard::size_guard(std::unique_ptr<backend> inner, std::uint64_t size) : inner_(std::move(inner)), size_(size) {}

void size_guard::set_size(std::uint64_t s)
{
    const std::uint64_t old = size_.exchange(s);
    if (s < old) {
        drain(phase_.fetch_xor(1));
    }
}

void size_guard::drain(unsigned phase) const
{
    for (;;) {
        bool quiet = true;
        for (const counter& c : admitted_[phase]) {
            quiet = quiet && c.n.load() == 0;
        }
        if (quiet) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

void size_guard::submit(io_ring& ring, io_request& r) noexcept
{
    if (r.op != io_op::write && r.op != io_op::write_zeroes && r.op != io_op::trim) {
        inner_->submit(ring, r);
        return;
    }
    r.ring = &ring;
    admit(r);
}

void size_guard::admit(io_request& r) noexcept
{
    const unsigned stripe = thread_stripe();
    unsigned phase = phase_.load();
    for (;;) {
        admitted_[phase][stripe].n.fetch_add(1);
        const unsigned now = phase_.load();
        if (now == phase) {
            break;
        }
        admitted_[phase][stripe].n.fetch_sub(1);
        phase = now;
    }
    r.guard_tag = static_cast<std::uint8_t>(phase * stripes + stripe);
    r.push_layer(this);
    if (r.offset + r.length > size_.load()) {
        r.finish(-ENOSPC);
        return;
    }
    inner_->submit(*r.ring, r);
}

void size_guard::finished(io_request& r, int res) noexcept
{
    admitted_[r.guard_tag / stripes][r.guard_tag % stripes].n.fetch_sub(1);
    r.finish(res);
}

}  // namespace rct
