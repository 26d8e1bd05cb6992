// The copy-on-write layer: writes, zeroes and trims pass through the
// snapshot store's admission, which holds back those touching chunks not
// yet preserved for the newest snapshot (see store.cc).
#include "store.hh"

namespace rct {
namespace {

class cow_backend final : public backend, private io_layer {
public:
    cow_backend(std::unique_ptr<backend> inner, snapshot_store& s) : inner_(std::move(inner)), store_(s) {}

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
        if (store_.begin_write(r, [this](io_request& q, int err) { resume(q, err); })) {
            inner_->submit(*r.ring, r);
        }
    }

    // A cut may have come between the copy and now: admit again.
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
        store_.end_write(r);
        r.finish(res);
    }

    std::unique_ptr<backend> inner_;
    snapshot_store& store_;
};

}  // namespace

std::unique_ptr<backend> make_cow_backend(std::unique_ptr<backend> inner, snapshot_store& s)
{
    return std::make_unique<cow_backend>(std::move(inner), s);
}

}  // namespace rct
