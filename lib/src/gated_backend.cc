#include <rct/write_gate.hh>

#include <cstdio>
#include <cstdlib>

namespace rct {
namespace {

class gated_backend final : public backend, private io_layer {
public:
    gated_backend(std::unique_ptr<backend> inner, write_gate& g) : inner_(std::move(inner)), gate_(g) {}

    void submit(io_ring& ring, io_request& r) noexcept override
    {
        if (r.op != io_op::write && r.op != io_op::write_zeroes && r.op != io_op::trim) {
            inner_->submit(ring, r);
            return;
        }
        r.ring = &ring;
        r.push_layer(this);
        admit(r);
    }

    int allocation(std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                   std::vector<extent>& out) noexcept override
    {
        return inner_->allocation(offset, length, max_extents, out);
    }

    bool is_hole(std::uint64_t offset, std::uint64_t length) noexcept override
    {
        return inner_->is_hole(offset, length);
    }

private:
    void admit(io_request& r) noexcept
    {
        if (gate_.begin_write(r, [this](io_request& q, int err) { resume(q, err); })) {
            inner_->submit(*r.ring, r);
        }
    }

    void resume(io_request& r, int err) noexcept
    {
        if (err < 0) {
            r.finish(err);
            return;
        }
        admit(r);
    }

    void finished(io_request& r, int res) noexcept override
    {
        gate_.end_write(r);
        r.finish(res);
    }

    std::unique_ptr<backend> inner_;
    write_gate& gate_;
};

}  // namespace

std::unique_ptr<backend> make_gated_backend(std::unique_ptr<backend> inner, write_gate& gate)
{
    return std::make_unique<gated_backend>(std::move(inner), gate);
}

void resume_on_owner(io_request& r, std::function<void(io_request&, int)> resume, int err) noexcept
{
    if (r.ring == nullptr) {
        resume(r, err);  // no ring to submit to: any thread will do
        return;
    }
    executor* ex = r.ring->owner();
    if (ex == nullptr) {
        std::fprintf(stderr, "rctd: a held write's ring has no owner to resume it on\n");
        std::abort();
    }
    try {
        ex->post([&r, resume = std::move(resume), err]() mutable { resume(r, err); });
    } catch (...) {
        // Resuming here would submit to another thread's single-issuer
        // ring; dropping the request would hang its client for ever.
        std::fprintf(stderr, "rctd: cannot hand a held write back to its worker (out of memory)\n");
        std::abort();
    }
}

}  // namespace rct
