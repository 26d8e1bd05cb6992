// write_gate: a layer that may hold a write back before it reaches the
// backend below. Change tracking holds a write until its region's
// write-intent bit is durable; snapshots hold it until the old content of
// the chunks it overwrites is durable in the snapshot store. Writes,
// write-zeroes and trims pass through the gate; everything else goes
// straight down. Every frontend reaches a disk through these layers, so NBD
// and ublk writes are tracked and snapshotted identically.
//
// Threading: begin_write and end_write run on the request's worker thread.
// A gate that holds a write finishes waiting on a thread of its own and
// hands the request back with resume_on_owner().
#pragma once

#include <rct/backend.hh>

#include <functional>
#include <memory>

namespace rct {

class write_gate {
public:
    // True when r may be issued now. Otherwise the gate keeps r and calls
    // resume(r, 0) on r's worker once it may go (the layer then asks again:
    // a cut may have come meanwhile), or resume(r, -errno) to fail it.
    virtual bool begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept = 0;
    // r, admitted by begin_write, completed.
    virtual void end_write(io_request& r) noexcept = 0;

protected:
    ~write_gate() = default;
};

// The layer: inner behind gate.
std::unique_ptr<backend> make_gated_backend(std::unique_ptr<backend> inner, write_gate& gate);

// Runs resume(r, err) on the thread that owns r's ring (through the ring's
// executor), or right here when r has no ring. Never on a thread that does
// not own the ring: if the executor cannot take the task, the process ends
// (a request dropped silently would hang its client for ever).
void resume_on_owner(io_request& r, std::function<void(io_request&, int)> resume, int err) noexcept;

}  // namespace rct
