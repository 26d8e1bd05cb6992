// cut_barrier: the write gate a consistency-group cut closes (group_cut.hh).
//
// Open, a write passes with one load. Closed, every new write is kept in
// memory (no thread waits) and handed back to its worker when the barrier
// opens; writes admitted before it closed go on. A group cut closes the
// barriers of all its disks before the first disk's cut and opens them
// after the last one's, so no write issued after another write completed
// past one disk's cut can get in before another disk's cut.
//
// Threading: begin_write on worker threads; close/open from the one
// management thread of the group cut (the disks' management locks are
// held). The flag is seq_cst: a writer's load is ordered against the cut it
// may race.
#pragma once

#include <rct/thread_annotations.hh>
#include <rct/write_gate.hh>

#include <atomic>
#include <functional>
#include <vector>

namespace rct {

class cut_barrier final : public write_gate {
public:
    bool begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept override;
    void end_write(io_request&) noexcept override {}

    // Throws bad_alloc (before anything is held) when there is no room for
    // the writes it will hold.
    void close();
    // Every held write goes back to its worker, which admits it again.
    void open() noexcept;

private:
    struct waiter {
        io_request* r;
        std::function<void(io_request&, int)> resume;
    };
    std::atomic<bool> closed_{false};
    rct::mutex mu_;
    std::vector<waiter> held_ GUARDED_BY(mu_);
};

}  // namespace rct
