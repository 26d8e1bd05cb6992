#include <rct/tracked_backend.hh>

namespace rct {
namespace {

class tracked_backend final : public backend, private io_layer {
public:
    tracked_backend(std::unique_ptr<backend> inner, tracker& t) : inner_(std::move(inner)), tracker_(t) {}

    void submit(io_ring& ring, io_request& r) noexcept override
    {
        if (r.op != io_op::write && r.op != io_op::write_zeroes && r.op != io_op::trim) {
            inner_->submit(ring, r);
            return;
        }
        r.ring = &ring;
        r.push_layer(this);
        if (tracker_.begin_write(r, [this](io_request& q, int err) { resume(q, err); })) {
            inner_->submit(ring, r);
        }
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
    void resume(io_request& r, int err) noexcept
    {
        if (err < 0) {
            r.finish(err);
            return;
        }
        inner_->submit(*r.ring, r);
    }

    void finished(io_request& r, int res) noexcept override
    {
        tracker_.end_write(r);
        r.finish(res);
    }

    std::unique_ptr<backend> inner_;
    tracker& tracker_;
};

}  // namespace

std::unique_ptr<backend> make_tracked_backend(std::unique_ptr<backend> inner, tracker& t)
{
    return std::make_unique<tracked_backend>(std::move(inner), t);
}

}  // namespace rct
