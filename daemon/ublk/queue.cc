#include "queue.hh"

#include <rct/error.hh>
#include <rct/io_stats.hh>
#include <rct/log.hh>

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace rct::daemon::ublk {

struct queue::slot final : io_request {
    // The tag's uring_cmd: its CQE means "here is a request" or "aborted".
    struct command final : completion {
        slot* s = nullptr;
        void complete(int res, std::uint32_t) noexcept override { s->q->on_command(*s, res); }
    };

    void done(int res) noexcept override { q->on_done(*this, res); }

    queue* q = nullptr;
    std::uint64_t started_ns = 0;  // counted in the disk's io_stats
    std::uint16_t tag = 0;
    std::byte* buffer = nullptr;
    command cmd;
};

queue::queue(std::shared_ptr<disk> d, int cdev_fd, const queue_shape& shape, std::function<void()> on_finished)
    : disk_(std::move(d)), cdev_fd_(cdev_fd), shape_(shape), on_finished_(std::move(on_finished))
{
}

queue::~queue() = default;

void queue::start(io_ring& ring)
{
    ring_ = &ring;
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t desc_len = (shape_.depth * sizeof(ublksrv_io_desc) + page - 1) / page * page;
    void* p = ::mmap(nullptr, desc_len, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd_,
                     static_cast<off_t>(descriptor_offset(shape_.id, page)));
    if (p == MAP_FAILED) {
        throw_errno("cannot map the descriptors of ublk queue " + std::to_string(shape_.id), errno);
    }
    descriptors_ = mapping(p, desc_len);
    // Anonymous memory is backed on first touch, so an idle tag costs no RAM.
    const std::size_t buf_len = std::size_t{shape_.depth} * shape_.max_io;
    p = ::mmap(nullptr, buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        throw_errno("cannot allocate the buffers of ublk queue " + std::to_string(shape_.id), errno);
    }
    buffers_ = mapping(p, buf_len);

    slots_.reserve(shape_.depth);
    for (unsigned t = 0; t < shape_.depth; ++t) {
        auto s = std::make_unique<slot>();
        s->q = this;
        s->tag = static_cast<std::uint16_t>(t);
        s->buffer = static_cast<std::byte*>(buffers_.get()) + std::size_t{t} * shape_.max_io;
        s->cmd.s = s.get();
        slots_.push_back(std::move(s));
    }
    for (auto& s : slots_) {
        arm(*s, io_fetch_req, 0);
    }
}

void queue::arm(slot& s, unsigned nr, int result) noexcept
{
    io_uring_sqe* sqe = ring_->sqe(&s.cmd);
    std::memset(sqe, 0, sizeof *sqe);
    io_uring_sqe_set_data(sqe, &s.cmd);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = cdev_fd_;
    sqe->cmd_op = shape_.ioctl_encoding ? io_ioctl(nr) : nr;
    auto* c = reinterpret_cast<ublksrv_io_cmd*>(sqe->cmd);
    c->q_id = static_cast<std::uint16_t>(shape_.id);
    c->tag = s.tag;
    c->result = result;
    c->addr = reinterpret_cast<std::uintptr_t>(s.buffer);
}

void queue::on_command(slot& s, int res) noexcept
{
    if (res == UBLK_IO_RES_OK) {
        if (!stopping_) {
            execute(s);
        }
        return;
    }
    // UBLK_IO_RES_ABORT: the device is stopping (or our ring is going
    // away); anything else means the driver refused the command, and the
    // tag cannot be used again either.
    if (res != UBLK_IO_RES_ABORT) {
        log::error("ublk {} queue {} tag {}: command failed: {}", disk_->name(), shape_.id, s.tag,
                   res < 0 ? std::strerror(-res) : "unexpected result");
    }
    if (++aborted_ < shape_.depth) {
        return;
    }
    if (!stopping_ && !abort_expected_.load(std::memory_order_relaxed)) {
        // Nobody here stopped the device: the driver quiesced it under a
        // serving rctd. Linux 6.12 can, when a quiesce queued while the
        // previous rctd's rings went away runs only after this rctd's
        // recovery (docs/reliability.md). Its I/O is held from now on.
        log::error("ublk {} queue {}: the kernel aborted every tag while rctd serves the device; its I/O is held",
                   disk_->name(), shape_.id);
    }
    if (on_finished_) {
        on_finished_();
    }
}

void queue::execute(slot& s) noexcept
{
    const ublksrv_io_desc& d = static_cast<const ublksrv_io_desc*>(descriptors_.get())[s.tag];
    const std::uint32_t op_flags = d.op_flags;
    s.offset = d.start_sector << 9;
    s.length = std::uint64_t{d.nr_sectors} << 9;
    s.buf = s.buffer;
    s.flags = (op_flags & UBLK_IO_F_FUA) ? io_fua : 0;
    switch (op_flags & 0xff) {
    case UBLK_IO_OP_READ: s.op = io_op::read; break;
    case UBLK_IO_OP_WRITE: s.op = io_op::write; break;
    case UBLK_IO_OP_FLUSH:
        // A flush has no range; the block layer leaves its sector at -1.
        s.op = io_op::flush;
        s.offset = s.length = 0;
        break;
    case UBLK_IO_OP_DISCARD: s.op = io_op::trim; break;
    case UBLK_IO_OP_WRITE_ZEROES:
        s.op = io_op::write_zeroes;
        if (!(op_flags & UBLK_IO_F_NOUNMAP)) {
            s.flags |= io_may_trim;
        }
        break;
    default: arm(s, io_commit_and_fetch_req, -EOPNOTSUPP); return;
    }
    // The driver keeps requests within the size and max_sectors we set;
    // a disk shrunk or deleted under the device must not be written past.
    const bool data = s.op == io_op::read || s.op == io_op::write;
    s.started_ns = stat_clock_ns();
    disk_->stats().begin();
    if ((data && s.length > shape_.max_io) || s.offset + s.length > disk_->size() || disk_->removed()) {
        disk_->stats().record(stat_of(s.op), 0, true, stat_clock_ns() - s.started_ns);
        arm(s, io_commit_and_fetch_req, -EIO);
        return;
    }
    ++busy_;
    disk_->store().submit(*ring_, s);
}

void queue::on_done(slot& s, int res) noexcept
{
    --busy_;
    if (res < 0) {
        log::debug("ublk {} queue {} tag {}: op {} at {} len {} failed: {}", disk_->name(), shape_.id, s.tag,
                   static_cast<int>(s.op), s.offset, s.length, std::strerror(-res));
    }
    // Reads and writes report the bytes done; the driver completes the
    // rest of a request that reports fewer.
    const bool data = s.op == io_op::read || s.op == io_op::write;
    const bool moves = s.op != io_op::flush;
    disk_->stats().record(stat_of(s.op), res < 0 || !moves ? 0 : s.length, res < 0, stat_clock_ns() - s.started_ns);
    arm(s, io_commit_and_fetch_req, res < 0 ? res : data ? static_cast<int>(s.length) : 0);
}

}  // namespace rct::daemon::ublk
