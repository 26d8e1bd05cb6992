// snapshots: point-in-time, copy-on-write snapshots of one disk.
//
// A snapshot is a checkpoint whose content is kept. Cutting one is the
// tracker's O(1) epoch switch plus an O(1) swap of the "preserved since the
// newest snapshot" bitmap: no pause, no drain, no sync of the data file.
// Afterwards the first write to each chunk (the tracker's granularity) waits
// until the chunk's old content is durable in the disk's snapshot store
// (DISK/snapshots/, docs/format/snapshots.md); writers that need copies at
// the same moment share one sync. The live disk stays a plain raw file.
// Reading snapshot S at chunk c finds the oldest copy of c labelled with a
// snapshot epoch >= S's; without one, c is unchanged since S and the live
// file holds it. One copy serves every snapshot cut between two writes.
//
// Ownership: a disk owns its store; views (NAME@SNAP exports) hold a
// shared_ptr to the store and pin their snapshot against deletion.
// Threading: begin_write/end_write run on worker threads, lock-free unless
// a copy is needed; one copier thread per store makes copies and deletes;
// management calls may come from any thread and are serialised internally.
#pragma once

#include <rct/backend.hh>
#include <rct/tracker.hh>
#include <rct/write_gate.hh>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rct {

struct snapshot_options {
    // Bytes of chunk copies the store may hold; 0 = as much as the
    // filesystem has. Beyond it (or on ENOSPC) the live disk keeps working
    // and the snapshots that needed the copy become invalid.
    std::uint64_t store_limit = 0;
};

struct snapshot_info {
    checkpoint_info checkpoint;         // name, epoch, cut time, size, token, cut_ns
    std::uint64_t exclusive_bytes = 0;  // store space that only this snapshot uses
    bool valid = true;
    std::string invalid_reason;
};

struct snapshot_store_status {
    std::uint64_t copies = 0;       // chunk copies held (zero chunks cost no space)
    std::uint64_t store_bytes = 0;  // space those copies use
    std::uint64_t store_limit = 0;
    std::uint64_t first_writes = 0;  // writes that waited for a copy since start
    bool index_damaged = false;      // the index was damaged at open and set aside
    std::string index_damage;        // what was wrong with it
};

// A read-only backend over one snapshot (writes fail with -EPERM).
class snapshot_view : public backend {
public:
    virtual const std::string& name() const noexcept = 0;
    virtual std::uint64_t epoch() const noexcept = 0;
    virtual std::uint64_t size() const noexcept = 0;
};

class snapshot_store : public write_gate {
public:
    // Opens (or creates) the store in dir. The data fd is duplicated (reads
    // of unchanged chunks and copies come from it). Throws rct::error; a
    // damaged index is set aside and every snapshot it held is reported
    // invalid, never trusted.
    static std::shared_ptr<snapshot_store> open(const std::filesystem::path& dir, const std::string& disk_id,
                                                int data_fd, const snapshot_options& opts);
    virtual ~snapshot_store() = default;

    // The tracker must be opened with at least this live epoch (epoch
    // numbers the store used before a crash are never reused).
    virtual std::uint64_t min_live_epoch() const noexcept = 0;
    // Second phase of opening: binds the tracker, drops snapshots whose
    // checkpoint never became durable, reclaims unreferenced copies, and
    // starts the copier thread. data_changed: the tracker found the data file
    // modified while rctd was not running (every snapshot becomes invalid).
    virtual void attach(tracker& t, std::uint64_t size, bool data_changed) = 0;

    // Data path (write_gate): a write is held until the old content of the
    // chunks it touches is durable in the store, where a snapshot needs it.

    // Management. Errors throw rct::error (invalid_argument, exists,
    // not_found, busy).
    // on_cut runs right after the cut's instant, before it is made durable
    // (a consistency group opens its write barriers there: group_cut.hh).
    virtual snapshot_info snapshot(std::optional<std::string> name, const std::function<void()>& on_cut = {}) = 0;
    virtual std::vector<snapshot_info> snapshots() const = 0;
    // The snapshot's data is freed; its checkpoint stays. busy while a view
    // of it is open, unless force.
    virtual void delete_snapshot(const std::string& name, bool force) = 0;
    virtual bool is_snapshot(std::uint64_t epoch) const = 0;
    // errc::not_found for an unknown name; errc::invalid_argument (with the
    // reason) for an invalid snapshot.
    virtual std::shared_ptr<snapshot_view> view(const std::string& name) = 0;
    virtual snapshot_store_status status() const = 0;
    // Disks with snapshots must not shrink: the cut-off content would be lost.
    virtual bool empty() const = 0;
    // The disk grew (shrinking is refused while snapshots exist).
    virtual void resize(std::uint64_t new_size) = 0;
    // Stops the copier thread; no writes may be in flight.
    virtual void close() = 0;
};

}  // namespace rct
