#include "chunk_copier.hh"

#include "../persist/env.hh"

#include <rct/log.hh>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace rct::snapshots {
namespace {

// Buffer space per copy window: enough chunks in flight to keep a device
// busy, small enough to keep per disk (allocated only once snapshots exist).
constexpr std::size_t window_bytes = 2 << 20;
constexpr std::size_t max_window = 256;
constexpr std::size_t buffer_alignment = 4096;  // O_DIRECT: at least the logical block size

}  // namespace

int read_full(int fd, std::byte* buf, std::size_t n, std::uint64_t off) noexcept
{
    const ssize_t r = persist::env::get().read_at(fd, buf, n, off);
    if (r < 0) {
        return static_cast<int>(r);
    }
    std::memset(buf + r, 0, n - static_cast<std::size_t>(r));  // past the end of the file: zeroes
    return 0;
}

int write_full(int fd, const std::byte* buf, std::size_t n, std::uint64_t off) noexcept
{
    return persist::env::get().write_at(fd, buf, n, off);
}

chunk_copier::chunk_copier(int data_fd, int chunks_fd, const std::filesystem::path& chunks_path,
                           std::uint32_t granularity)
    : ring_(static_cast<unsigned>(max_window)), data_fd_(data_fd), chunks_fd_(chunks_fd), granularity_(granularity),
      window_(std::clamp<std::size_t>(window_bytes / granularity, 1, max_window)), ops_(window_)
{
    const int fd = persist::env::get().open(chunks_path, O_WRONLY | O_DIRECT | O_NOFOLLOW, 0);
    direct_.reset(fd < 0 ? -1 : fd);
    if (!direct_) {
        const int err = -fd;
        log::info("snapshots: {} takes no O_DIRECT ({}); copies go through the page cache", chunks_path.string(),
                  std::strerror(err));
    }
}

void chunk_copier::enable()
{
    ring_.enable();
    try {
        // Buffered fallback writes run on kernel workers: a few are enough.
        ring_.limit_workers(2);
    } catch (const std::exception& e) {
        log::info("snapshots: {}", e.what());
    }
}

bool chunk_copier::ensure_buffers() noexcept
{
    if (!bufs_) {
        void* p = nullptr;
        if (::posix_memalign(&p, buffer_alignment, window_ * granularity_) != 0) {
            return false;
        }
        bufs_.reset(static_cast<std::byte*>(p));
    }
    return true;
}

void chunk_copier::wait(std::span<op> ops) noexcept
{
    auto pending = [&] { return std::any_of(ops.begin(), ops.end(), [](const op& o) { return !o.done; }); };
    while (pending()) {
        if (const int rc = ring_.run(true); rc < 0) {
            // The ring itself failed (not an I/O): the buffers are still the
            // kernel's until their CQEs arrive, so keep waiting.
            log::error("snapshots: waiting for copies failed: {}; retrying", std::strerror(-rc));
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

void chunk_copier::read(std::span<const std::uint64_t> chunks, std::span<int> res) noexcept
{
    if (!ensure_buffers()) {
        std::fill(res.begin(), res.end(), -ENOMEM);
        return;
    }
    const auto ops = std::span(ops_).first(chunks.size());
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        ops[i].done = false;
        io_uring_prep_read(ring_.sqe(&ops[i]), data_fd_, buffer(i), granularity_, chunks[i] * granularity_);
    }
    wait(ops);
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        const int r = ops[i].res;
        res[i] = r < 0 ? r : 0;
        if (r >= 0 && static_cast<std::uint32_t>(r) < granularity_) {
            // A short read (the end of the file, or rare): finish it by hand.
            const auto got = static_cast<std::uint32_t>(r);
            res[i] = read_full(data_fd_, buffer(i) + got, granularity_ - got, chunks[i] * granularity_ + got);
        }
    }
}

int chunk_copier::grow_to(std::uint64_t end) noexcept
{
    // Writes inside the file's size run in parallel; ext4 serialises
    // O_DIRECT writes that extend it. Growing it sparse allocates nothing.
    struct stat st {};
    if (::fstat(chunks_fd_, &st) != 0) {
        return -errno;
    }
    if (static_cast<std::uint64_t>(st.st_size) < end) {
        return persist::env::get().truncate(chunks_fd_, end);
    }
    return 0;
}

void chunk_copier::write(std::span<const slot_write> ws, std::span<int> res) noexcept
{
    if (ws.empty()) {
        return;  // a window of zero chunks and failed reads
    }
    std::uint64_t end = 0;
    for (const auto& w : ws) {
        end = std::max(end, (w.slot + 1) * granularity_);
    }
    const bool direct = static_cast<bool>(direct_);
    if (const int rc = direct ? grow_to(end) : 0; rc < 0) {
        std::fill(res.begin(), res.end(), rc);
        return;
    }
    const auto ops = std::span(ops_).first(ws.size());
    const int fd = direct ? direct_.get() : chunks_fd_;
    for (std::size_t k = 0; k < ws.size(); ++k) {
        ops[k].done = false;
        io_uring_prep_write(ring_.sqe(&ops[k]), fd, buffer(ws[k].buffer), granularity_, ws[k].slot * granularity_);
    }
    wait(ops);
    for (std::size_t k = 0; k < ws.size(); ++k) {
        int r = ops[k].res;
        if (r == -EINVAL && direct) {
            // The filesystem took the O_DIRECT open but not the write: this
            // slot and all later ones go through the page cache.
            if (direct_) {
                log::info("snapshots: O_DIRECT writes to chunks.dat refused; copies go through the page cache");
                direct_.reset();
            }
            r = 0;
        }
        res[k] = r < 0 ? r : 0;
        if (r >= 0 && static_cast<std::uint32_t>(r) < granularity_) {
            // Short (or refused above): the rest through the page cache.
            const auto done = static_cast<std::uint32_t>(r);
            res[k] = write_full(chunks_fd_, buffer(ws[k].buffer) + done, granularity_ - done,
                                ws[k].slot * granularity_ + done);
        }
    }
}

void chunk_copier::start_sync() noexcept
{
    sync_.done = false;
    io_uring_prep_fsync(ring_.sqe(&sync_), chunks_fd_, IORING_FSYNC_DATASYNC);
    ring_.run(false);  // submitted now, so it overlaps the index log's sync
}

int chunk_copier::finish_sync() noexcept
{
    wait(std::span(&sync_, 1));
    if (sync_.res < 0) {
        return sync_.res;
    }
    persist::env::get().synced(chunks_fd_, 0, 0);
    return 0;
}

}  // namespace rct::snapshots
