// nbd_export: what an NBD client opened. Either a disk (read-write), or a
// snapshot of one, exported as "DISK@SNAP" (read-only, the snapshot's size,
// its dirty-bitmap contexts ending at the snapshot). The connection holds it
// for its lifetime; the view inside pins the snapshot.
#pragma once

#include <rct/disk.hh>
#include <rct/snapshots.hh>

#include <memory>
#include <optional>
#include <string>

namespace rct::daemon {

struct nbd_export {
    std::shared_ptr<disk> d;
    std::shared_ptr<snapshot_view> snap;

    explicit operator bool() const noexcept { return d != nullptr; }
    std::string name() const { return snap ? d->name() + "@" + snap->name() : d->name(); }
    std::uint64_t size() const noexcept { return snap ? snap->size() : d->size(); }
    backend& io() const noexcept { return snap ? static_cast<backend&>(*snap) : d->store(); }
    bool read_only() const noexcept { return snap != nullptr; }
    // Dirty bitmaps of a snapshot end at the snapshot's epoch.
    std::optional<std::uint64_t> until_epoch() const noexcept
    {
        return snap ? std::optional<std::uint64_t>(snap->epoch()) : std::nullopt;
    }
};

}  // namespace rct::daemon
