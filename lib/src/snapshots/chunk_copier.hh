// chunk_copier: the I/O of the snapshot store's copy step. A batch of first
// writes needs many chunks copied from the data file into store slots; this
// reads a window of them at once and writes them at once, on a private
// io_uring, instead of one pread and one pwrite after another.
//
// Slots are written around the page cache (O_DIRECT) where the filesystem
// allows it: a copy is read once and written once, not written again into
// the page cache and later written back, which under a cut-per-second load
// was most of the copier's time (a 64 KiB buffered pwrite took 0.17 ms).
// Snapshot reads still go through the page cache; the kernel drops cached
// pages of a range an O_DIRECT write replaces.
//
// Owned by the snapshot store; used only by its copier thread, which must
// call enable() first (the ring is created disabled). Errors are values.
#pragma once

#include <rct/io_ring.hh>
#include <rct/unique_fd.hh>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

namespace rct::snapshots {

// pread/pwrite of exactly n bytes (EINTR and short transfers retried);
// read_full fills with zeroes past the end of the file. 0 or -errno.
int read_full(int fd, std::byte* buf, std::size_t n, std::uint64_t off) noexcept;
int write_full(int fd, const std::byte* buf, std::size_t n, std::uint64_t off) noexcept;

class chunk_copier {
public:
    struct slot_write {
        std::size_t buffer;  // index of the window buffer holding the chunk
        std::uint64_t slot;  // its place in chunks.dat
    };

    // Throws rct::error when io_uring is unusable.
    chunk_copier(int data_fd, int chunks_fd, const std::filesystem::path& chunks_path, std::uint32_t granularity);

    void enable();  // on the copier thread, before any other call

    // How many chunks one read()/write() handles: the buffers' capacity.
    std::size_t window() const noexcept { return window_; }
    std::byte* buffer(std::size_t i) noexcept { return bufs_.get() + i * granularity_; }

    // Reads chunk chunks[i] of the data file into buffer(i) (zeroes past its
    // end); res[i] = 0 or -errno. At most window() chunks.
    void read(std::span<const std::uint64_t> chunks, std::span<int> res) noexcept;
    // Writes each buffer to its slot; res[k] = 0 or -errno for ws[k].
    void write(std::span<const slot_write> ws, std::span<int> res) noexcept;

    // fdatasync of chunks.dat, started now and awaited by finish_sync
    // (0 or -errno), so that the index log can be synced meanwhile.
    void start_sync() noexcept;
    int finish_sync() noexcept;

private:
    struct op final : completion {
        int res = 0;
        bool done = true;
        void complete(int r, std::uint32_t) noexcept override
        {
            res = r;
            done = true;
        }
    };
    struct free_deleter {
        void operator()(std::byte* p) const noexcept { std::free(p); }
    };

    bool ensure_buffers() noexcept;
    void wait(std::span<op> ops) noexcept;
    int grow_to(std::uint64_t end) noexcept;

    io_ring ring_;
    const int data_fd_;
    const int chunks_fd_;
    unique_fd direct_;  // chunks.dat with O_DIRECT; empty where refused
    const std::uint32_t granularity_;
    const std::size_t window_;
    std::unique_ptr<std::byte, free_deleter> bufs_;  // allocated at the first copy
    std::vector<op> ops_;                            // one per window buffer
    op sync_;
};

}  // namespace rct::snapshots
