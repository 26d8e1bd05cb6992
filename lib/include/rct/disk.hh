// disk: one virtual disk served by rctd, shared by every frontend.
//
// A disk is a directory in the state dir holding its metadata (disk.json,
// see docs/format/disk.md) and its data file. The disk_registry creates,
// loads and retires disks; frontends hold a std::shared_ptr<disk> for as long
// as they serve it, so a disk deleted while in use stays valid (its files
// unlinked) until the last client lets go.
//
// Threading: name, id and creation time are immutable. size() is atomic and
// changes only through the registry (resize). Client bookkeeping is guarded
// by an internal mutex and may be called from any thread. Management calls
// on one disk serialise on its management lock (manage()), which the data
// path and lookups never take.
#pragma once

#include <rct/io_stats.hh>
#include <rct/backend.hh>
#include <rct/snapshots.hh>
#include <rct/tracker.hh>
#include <rct/unique_fd.hh>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <rct/thread_annotations.hh>

#include <mutex>
#include <optional>
#include <set>
#include <string>

namespace rct {

class size_guard;
class cut_barrier;

struct disk_meta {
    std::string name;
    std::string id;               // unique per create: a recreated disk gets a new one
    std::uint64_t size = 0;       // bytes
    std::int64_t created_at = 0;  // unix seconds
};

struct disk_options {
    bool tracking = true;  // change tracking, and with it snapshots
    tracker_options tracker;
    snapshot_options snapshots;
};

class disk {
public:
    // Takes the open data file; opens (or creates) the snapshot store in
    // DIR/snapshots and the tracking state in DIR/tracking unless tracking
    // is off. Throws rct::error. warm: the tracker's hand-off from the
    // previous rctd (live upgrade; see tracker::open).
    disk(disk_meta meta, std::filesystem::path dir, unique_fd data, const disk_options& opts,
         const tracker_handoff* warm = nullptr);
    ~disk();
    disk(const disk&) = delete;
    disk& operator=(const disk&) = delete;

    const std::string& name() const noexcept { return meta_.name; }
    const std::string& id() const noexcept { return meta_.id; }
    std::int64_t created_at() const noexcept { return meta_.created_at; }
    const std::filesystem::path& dir() const noexcept { return dir_; }
    std::uint64_t size() const noexcept;
    bool removed() const noexcept { return removed_.load(std::memory_order_acquire); }

    // The disk's data path: tracking over copy-on-write over the file, or
    // the file alone when tracking is off.
    backend& store() noexcept;
    // nullptr when tracking is off.
    tracker* tracking() noexcept { return tracker_.get(); }
    const tracker* tracking() const noexcept { return tracker_.get(); }
    snapshot_store* snapshots() noexcept { return snapshots_.get(); }
    // What clients asked of this disk, through every frontend (GET /metrics).
    io_stats& stats() noexcept { return stats_; }
    const io_stats& stats() const noexcept { return stats_; }
    const snapshot_store* snapshots() const noexcept { return snapshots_.get(); }

    // While a restore rewrites the disk, new clients are turned away.
    bool restoring() const noexcept { return restoring_.load(std::memory_order_acquire); }

    // Held for the whole of a management call on this disk (resize, delete,
    // the start of a restore, snapshots, checkpoints), so that two never
    // interleave and none acts on a disk another has deleted. Throws
    // errc::not_found once the disk is deleted, errc::busy while a restore
    // rewrites it.
    std::unique_lock<std::mutex> manage();

    // Clean shutdown: makes the data durable, persists tracking and writes
    // its clean-shutdown seal. Call once no I/O is in flight.
    void close_clean();
    // For a live upgrade, once no I/O is in flight: stops the background
    // threads and returns the tracker's live map (nullopt: tracking off or
    // the disk deleted), writing nothing. The data stays in the page cache,
    // which the next rctd shares: what clients flushed is durable already.
    std::optional<tracker_handoff> hand_off();

    // Consistency groups (group_cut.hh), with manage() held: while held,
    // new writes wait in memory at the disk's outer layer; admitted ones go
    // on. hold_writes throws bad_alloc before holding anything.
    void hold_writes();
    void release_writes() noexcept;

    // Frontends register each client socket serving this disk so that a
    // forced delete can cut them off (shutdown(2) wakes their workers).
    void attach_client(int sockfd);
    void detach_client(int sockfd);
    unsigned clients() const;
    void disconnect_clients();

private:
    friend class disk_registry;
    // Shrinking returns once no write past the new end is in flight.
    void set_size(std::uint64_t s);
    file_identity identity() const;
    // The disk's directory is gone: it stops writing files by path, which
    // might by now name a new disk's files. Caller holds manage().
    void retire();
    // Caller holds manage(), which found no restore running: the check and
    // the mark are one step.
    void begin_restore() noexcept { restoring_.store(true, std::memory_order_release); }
    void end_restore() noexcept { restoring_.store(false, std::memory_order_release); }

    const disk_meta meta_;
    const std::filesystem::path dir_;
    unique_fd data_;  // a second handle: identity, resize, the final sync
    std::shared_ptr<snapshot_store> snapshots_;  // outlives tracker_: views may hold it longer
    std::unique_ptr<tracker> tracker_;
    std::unique_ptr<cut_barrier> barrier_;  // with tracking only
    std::unique_ptr<size_guard> store_;
    std::atomic<bool> removed_{false};
    std::atomic<bool> restoring_{false};
    std::mutex mgmt_mu_;

    io_stats stats_;
    mutable rct::mutex clients_mutex_;
    std::set<int> clients_ GUARDED_BY(clients_mutex_);
};

}  // namespace rct
