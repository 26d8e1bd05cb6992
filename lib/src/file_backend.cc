// The raw-file backend. Each operation is a short state machine driven by its
// CQEs (io_request::stage): reads and writes resubmit their remainder after a
// short transfer; zeroing tries the cheapest fallocate mode first and falls
// back to writing zeroes; FUA on an fallocate-based op adds an fdatasync step.
#include <rct/file_backend.hh>

#include "persist/env.hh"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

namespace rct {
namespace {

// Zeroes for the write-zeroes fallback; never written to.
alignas(4096) const std::array<std::byte, 1 << 20> zero_block{};

enum stage : std::uint8_t {
    st_transfer,    // read/write in progress
    st_fallocate,   // punch or zero-range in progress
    st_zero_write,  // writing zeroes by hand
    st_sync,        // trailing fdatasync for FUA
    st_single,      // one-shot op (flush, cache)
};

class file_backend final : public backend {
public:
    explicit file_backend(unique_fd fd) : fd_(std::move(fd)) {}

    void submit(io_ring& ring, io_request& r) noexcept override
    {
        r.ring = &ring;
        r.owner = this;
        r.progress = 0;
        r.on_cqe = &file_backend::on_cqe;
        switch (r.op) {
        case io_op::read:
        case io_op::write:
            r.stage = st_transfer;
            issue_transfer(r);
            break;
        case io_op::flush:
            r.stage = st_single;
            io_uring_prep_fsync(ring.sqe(&r), fd_.get(), IORING_FSYNC_DATASYNC);
            break;
        case io_op::cache:
            r.stage = st_single;
            io_uring_prep_fadvise(ring.sqe(&r), fd_.get(), r.offset, static_cast<off_t>(r.length),
                                  POSIX_FADV_WILLNEED);
            break;
        case io_op::trim:
            r.stage = st_fallocate;
            issue_fallocate(r, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
            break;
        case io_op::write_zeroes:
            r.stage = st_fallocate;
            issue_fallocate(r, (r.flags & io_may_trim) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                                       : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE);
            break;
        }
    }

    int allocation(std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                   std::vector<extent>& out) noexcept override
    {
        const std::uint64_t end = offset + length;
        std::uint64_t pos = offset;
        std::size_t added = 0;
        while (pos < end && added < max_extents) {
            off_t data = ::lseek(fd_.get(), static_cast<off_t>(pos), SEEK_DATA);
            std::uint64_t data_start;
            if (data < 0) {
                if (errno != ENXIO) {
                    return -errno;
                }
                data_start = end;  // hole to the end of file
            } else {
                data_start = std::min<std::uint64_t>(static_cast<std::uint64_t>(data), end);
            }
            if (data_start > pos) {
                append(out, data_start - pos, extent_hole | extent_zero, added);
                pos = data_start;
                continue;
            }
            off_t hole = ::lseek(fd_.get(), static_cast<off_t>(pos), SEEK_HOLE);
            if (hole < 0) {
                return -errno;
            }
            const std::uint64_t data_end = std::min<std::uint64_t>(static_cast<std::uint64_t>(hole), end);
            append(out, data_end - pos, 0, added);
            pos = data_end;
        }
        return 0;
    }

    bool is_hole(std::uint64_t offset, std::uint64_t length) noexcept override
    {
        off_t data = ::lseek(fd_.get(), static_cast<off_t>(offset), SEEK_DATA);
        if (data < 0) {
            return errno == ENXIO;
        }
        return static_cast<std::uint64_t>(data) >= offset + length;
    }

private:
    static void append(std::vector<extent>& out, std::uint64_t len, std::uint32_t flags, std::size_t& added)
    {
        if (!out.empty() && out.back().flags == flags && added > 0) {
            out.back().length += len;
            return;
        }
        out.push_back({len, flags});
        ++added;
    }

    void issue_transfer(io_request& r) noexcept
    {
        const auto left = static_cast<unsigned>(r.length - r.progress);
        const auto off = r.offset + r.progress;
        io_uring_sqe* s = r.ring->sqe(&r);
        if (r.op == io_op::read) {
            io_uring_prep_read(s, fd_.get(), r.buf + r.progress, left, off);
        } else {
            io_uring_prep_write(s, fd_.get(), r.buf + r.progress, left, off);
            if (r.flags & io_fua) {
                s->rw_flags = RWF_DSYNC;
            }
        }
    }

    void issue_fallocate(io_request& r, int mode) noexcept
    {
        io_uring_prep_fallocate(r.ring->sqe(&r), fd_.get(), mode, r.offset, r.length);
    }

    void issue_zero_write(io_request& r) noexcept
    {
        const auto left = std::min<std::uint64_t>(r.length - r.progress, zero_block.size());
        // The kernel only reads from this buffer.
        auto* zeroes = const_cast<std::byte*>(zero_block.data());
        io_uring_prep_write(r.ring->sqe(&r), fd_.get(), zeroes, static_cast<unsigned>(left),
                            r.offset + r.progress);
    }

    void issue_sync_or_finish(io_request& r) noexcept
    {
        if (r.flags & io_fua) {
            r.stage = st_sync;
            io_uring_prep_fsync(r.ring->sqe(&r), fd_.get(), IORING_FSYNC_DATASYNC);
        } else {
            r.finish(0);
        }
    }

    static void on_cqe(io_request& r, int res) noexcept
    {
        static_cast<file_backend*>(r.owner)->advance(r, res);
    }

    void advance(io_request& r, int res) noexcept
    {
        switch (r.stage) {
        case st_transfer:
            if (res < 0) {
                r.finish(res);
            } else if (res == 0) {
                // The file shrank under us (or a device went away).
                r.finish(-EIO);
            } else if ((r.progress += static_cast<unsigned>(res)) < r.length) {
                issue_transfer(r);
            } else {
                if (r.op == io_op::write && (r.flags & io_fua)) {
                    persist::env::get().synced(fd_.get(), r.offset, r.length);
                }
                r.finish(0);
            }
            return;
        case st_fallocate:
            if (res == -EOPNOTSUPP || res == -EINVAL) {
                if (r.op == io_op::trim) {
                    r.finish(0);  // TRIM is advisory
                } else if (r.flags & io_fast_zero) {
                    r.finish(-ENOTSUP);
                } else {
                    r.stage = st_zero_write;
                    issue_zero_write(r);
                }
            } else if (res < 0) {
                r.finish(res);
            } else {
                issue_sync_or_finish(r);
            }
            return;
        case st_zero_write:
            if (res < 0) {
                r.finish(res);
            } else if (res == 0) {
                r.finish(-EIO);
            } else if ((r.progress += static_cast<unsigned>(res)) < r.length) {
                issue_zero_write(r);
            } else {
                issue_sync_or_finish(r);
            }
            return;
        case st_sync:
        case st_single:
            if (res >= 0 && (r.stage == st_sync || r.op == io_op::flush)) {
                persist::env::get().synced(fd_.get(), 0, 0);  // an fdatasync: the whole file
            }
            r.finish(res < 0 ? res : 0);
            return;
        }
    }

    unique_fd fd_;
};

}  // namespace

std::unique_ptr<backend> make_file_backend(unique_fd fd)
{
    return std::make_unique<file_backend>(std::move(fd));
}

}  // namespace rct
