// Snapshot views: the read-only backend behind a NAME@SNAP export.
//
// A read resolves each chunk to its source (a copy in chunks.dat, a zero
// copy, or the live data file) and issues one read per run of contiguous
// source bytes on the caller's ring. A chunk read from the live file may be
// overwritten right after; every overwrite of a chunk a snapshot still reads
// from the live file is preceded by publishing a copy (and bumping the
// store's publish count), so a read that used the live file re-resolves when
// the count moved, and starts over if one of its chunks has a copy now.
#include "store.hh"

#include <rct/file_backend.hh>

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rct::snapshots {
namespace {

// io_request::progress packing while a view read is in flight.
constexpr std::uint64_t outstanding_mask = (1u << 24) - 1;
constexpr unsigned live_shift = 24;
constexpr unsigned error_shift = 48;

class view_impl final : public snapshot_view {
public:
    view_impl(std::shared_ptr<store_impl> s, std::string name, std::uint64_t epoch, std::uint64_t size)
        : store_(std::move(s)), name_(std::move(name)), epoch_(epoch), size_(size),
          live_(make_file_backend(unique_fd(::dup(store_->data_fd()))))
    {
    }
    ~view_impl() override { store_->unpin(epoch_); }

    const std::string& name() const noexcept override { return name_; }
    std::uint64_t epoch() const noexcept override { return epoch_; }
    std::uint64_t size() const noexcept override { return size_; }

    void submit(io_ring& ring, io_request& r) noexcept override
    {
        r.ring = &ring;
        r.owner = this;
        r.on_cqe = &view_impl::on_cqe;
        switch (r.op) {
        case io_op::read:
            start_read(r);
            return;
        case io_op::flush:
        case io_op::cache:
            complete_async(r, 0);
            return;
        default:
            complete_async(r, -EPERM);
            return;
        }
    }

    // A chunk resolved to the live file may get its copy published, and then
    // be trimmed, while the live map is read: the map would call the
    // snapshot's data a hole. So, as a read does, the answer stands only if
    // no copy was published meanwhile or none of the range's chunks got one;
    // after a few tries in a storm of first writes there, what came from the
    // live file is called data, which a reader then reads exactly.
    int allocation(std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                   std::vector<extent>& out) noexcept override
    {
        const std::size_t before = out.size();
        for (int attempt = 0; attempt < 8; ++attempt) {
            const std::uint64_t published = store_->publish_count();
            const std::uint64_t live = live_chunks(offset, length);
            if (int rc = allocation_once(offset, length, max_extents, out, false); rc < 0) {
                return rc;
            }
            if (store_->publish_count() == published || live_chunks(offset, length) == live) {
                return 0;
            }
            out.resize(before);
        }
        return allocation_once(offset, length, max_extents, out, true);
    }

    int allocation_once(std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                        std::vector<extent>& out, bool live_as_data) noexcept
    {
        const std::uint32_t g = store_->granularity();
        const std::uint64_t end = offset + length;
        std::vector<source> src;
        if (!store_->resolve(epoch_, offset / g, (end - 1) / g, src)) {
            return -EIO;
        }
        std::size_t added = 0;
        std::uint64_t pos = offset;
        std::size_t i = 0;
        while (pos < end && added < max_extents) {
            // A run of chunks with the same kind of source.
            const auto kind = src[i].kind;
            std::size_t j = i;
            while (j < src.size() && src[j].kind == kind) {
                ++j;
            }
            const std::uint64_t run_end = std::min(end, (offset / g + j) * g);
            std::vector<extent> part;
            if (kind == source::live && live_as_data) {
                part.push_back({run_end - pos, 0u});
            } else if (kind == source::live) {
                if (int rc = live_->allocation(pos, run_end - pos, max_extents - added, part); rc < 0) {
                    return rc;
                }
            } else {
                part.push_back({run_end - pos, kind == source::zero ? extent_hole | extent_zero : 0u});
            }
            for (const extent& e : part) {
                if (!out.empty() && added > 0 && out.back().flags == e.flags) {
                    out.back().length += e.length;
                } else {
                    out.push_back(e);
                    ++added;
                }
                pos += e.length;
            }
            if (pos < run_end) {
                break;  // the live map stopped early at max_extents
            }
            i = j;
        }
        return 0;
    }

    // Reads always go through resolve(): a chunk that is a hole in the live
    // file now may be filled (after its copy) before a hole reply is sent.
    bool is_hole(std::uint64_t, std::uint64_t) noexcept override { return false; }

private:
    void complete_async(io_request& r, int res) noexcept
    {
        r.progress = 1;
        if (res < 0) {
            r.progress |= static_cast<std::uint64_t>(-res) << error_shift;
        }
        io_uring_prep_nop(r.ring->sqe(&r));
    }

    void start_read(io_request& r) noexcept
    {
        const std::uint32_t g = store_->granularity();
        if (r.length == 0 || r.offset + r.length > size_) {
            complete_async(r, r.length == 0 ? 0 : -EINVAL);
            return;
        }
        r.aux = store_->publish_count();
        auto& src = scratch();
        src.clear();
        const std::uint64_t c0 = r.offset / g;
        if (!store_->resolve(epoch_, c0, (r.offset + r.length - 1) / g, src)) {
            complete_async(r, -EIO);
            return;
        }
        std::uint64_t outstanding = 0, live = 0;
        // The pending run: fd, file offset, buffer offset, length.
        int run_fd = -1;
        std::uint64_t run_off = 0, run_buf = 0, run_len = 0;
        auto flush = [&] {
            if (run_len != 0) {
                io_uring_prep_read(r.ring->sqe(&r), run_fd, r.buf + run_buf, static_cast<unsigned>(run_len), run_off);
                ++outstanding;
            }
            run_len = 0;
        };
        const std::uint64_t end = r.offset + r.length;
        for (std::uint64_t pos = r.offset; pos < end;) {
            const std::uint64_t c = pos / g;
            const std::uint64_t seg_end = std::min(end, (c + 1) * g);
            const source& s = src[c - c0];
            const std::uint64_t len = seg_end - pos;
            const std::uint64_t buf_off = pos - r.offset;
            if (s.kind == source::zero) {
                flush();
                std::memset(r.buf + buf_off, 0, len);
            } else {
                const int fd = s.kind == source::live ? store_->data_fd() : store_->chunks_fd();
                const std::uint64_t off = s.kind == source::live ? pos : s.slot_no * g + (pos - c * g);
                live += s.kind == source::live ? 1 : 0;
                if (run_len != 0 && (fd != run_fd || off != run_off + run_len)) {
                    flush();
                }
                if (run_len == 0) {
                    run_fd = fd;
                    run_off = off;
                    run_buf = buf_off;
                }
                run_len += len;
            }
            pos = seg_end;
        }
        flush();
        if (outstanding == 0) {
            complete_async(r, 0);
            return;
        }
        r.progress = outstanding | (live << live_shift);
    }

    static void on_cqe(io_request& r, int res) noexcept
    {
        auto* self = static_cast<view_impl*>(r.owner);
        if (res < 0 && (r.progress >> error_shift) == 0) {
            r.progress |= static_cast<std::uint64_t>(-res) << error_shift;
        }
        r.progress -= 1;
        if ((r.progress & outstanding_mask) != 0) {
            return;
        }
        if (const int err = static_cast<int>(r.progress >> error_shift); err != 0) {
            r.finish(-err);
            return;
        }
        const std::uint64_t live = (r.progress >> live_shift) & outstanding_mask;
        if (live != 0 && self->store_->publish_count() != r.aux && self->live_chunks(r.offset, r.length) != live) {
            self->start_read(r);  // a chunk read from the live file got a copy meanwhile
            return;
        }
        r.finish(0);
    }

    std::uint64_t live_chunks(std::uint64_t offset, std::uint64_t length) const noexcept
    {
        const std::uint32_t g = store_->granularity();
        auto& src = scratch();
        src.clear();
        if (!store_->resolve(epoch_, offset / g, (offset + length - 1) / g, src)) {
            return ~std::uint64_t{0};
        }
        std::uint64_t n = 0;
        for (const source& s : src) {
            n += s.kind == source::live ? 1 : 0;
        }
        return n;
    }

    static std::vector<source>& scratch() noexcept
    {
        static thread_local std::vector<source> v;
        return v;
    }

    std::shared_ptr<store_impl> store_;
    const std::string name_;
    const std::uint64_t epoch_;
    const std::uint64_t size_;
    std::unique_ptr<backend> live_;  // for the allocation map of unchanged chunks
};

}  // namespace

std::shared_ptr<snapshot_view> store_impl::view(const std::string& name)
{
    rct::exclusive_lock lk(mu_);
    const std::uint64_t e = find_epoch(name);
    const auto& s = idx_.snaps().at(e);
    if (revoked_.count(e) != 0) {
        throw error(errc::busy, "snapshot '" + name + "' is being deleted");
    }
    if (!s.invalid_reason.empty()) {
        throw error(errc::invalid_argument, "snapshot '" + name + "' is invalid: " + s.invalid_reason);
    }
    ++pins_[e];
    const std::uint64_t size = s.size;  // s may go once the lock is dropped
    lk.unlock();
    try {
        return std::make_shared<view_impl>(shared_from_this(), name, e, size);
    } catch (...) {
        unpin(e);
        throw;
    }
}

}  // namespace rct::snapshots
