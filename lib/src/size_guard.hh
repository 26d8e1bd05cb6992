// size_guard: the outermost layer of every disk's data path. Frontends
// check a request against the disk's size when it arrives, but a shrink can
// come between that check and the write: a write past the new end that
// reaches the file after its ftruncate extends it again, and the disk no
// longer matches disk.json. The guard re-checks each write, write-zeroes and
// trim against the current size as it admits it (past the end: -ENOSPC, as
// NBD asks for writes beyond the export) and counts what it admitted, so a
// shrink can wait for every write admitted under the old size to complete
// before it truncates.
//
// Admitted writes are counted in two phases, each striped by thread. A
// shrink stores the new size, flips the phase and waits for the old phase's
// count to drain; writes admitted meanwhile count in the new phase and have
// seen the new size, so the wait ends under any load. Ordering (seq_cst): a
// writer increments its phase's stripe, re-reads the phase (retrying if it
// moved) and only then loads the size.
#pragma once

#include <rct/backend.hh>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

namespace rct {

class size_guard final : public backend, private io_layer {
public:
    size_guard(std::unique_ptr<backend> inner, std::uint64_t size);

    std::uint64_t size() const noexcept { return size_.load(); }
    // A larger size takes effect at once. A smaller one refuses writes past
    // it from now on and returns once no write admitted under an older size
    // is in flight (held writes included), so the file can be truncated.
    // One caller at a time (the disk's management lock).
    void set_size(std::uint64_t s);

    void submit(io_ring& ring, io_request& r) noexcept override;
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
    static constexpr unsigned stripes = 8;
    struct alignas(64) counter {
        std::atomic<std::int64_t> n{0};
    };

    void finished(io_request& r, int res) noexcept override;
    void admit(io_request& r) noexcept;
    void drain(unsigned phase) const;

    std::unique_ptr<backend> inner_;
    std::atomic<std::uint64_t> size_;
    std::atomic<unsigned> phase_{0};
    std::array<std::array<counter, stripes>, 2> admitted_;
};

}  // namespace rct
