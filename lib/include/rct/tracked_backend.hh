// tracked_backend: the change-tracking layer, a backend over a backend.
//
// Writes, write-zeroes and trims are marked in the tracker before they reach
// the backend below (waiting, off-thread, for a write-intent commit when
// their region needs one) and re-marked at completion if a checkpoint was
// cut meanwhile. Reads and everything else pass straight through. Every
// frontend reaches a tracked disk through this layer, so NBD and ublk
// writes are tracked identically. Thread-safe as its parts are.
#pragma once

#include <rct/backend.hh>
#include <rct/tracker.hh>

#include <memory>

namespace rct {

std::unique_ptr<backend> make_tracked_backend(std::unique_ptr<backend> inner, tracker& t);

}  // namespace rct
