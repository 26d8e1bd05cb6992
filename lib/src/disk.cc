#include <rct/disk.hh>

#include "cut_barrier.hh"
#include "size_guard.hh"

#include <rct/error.hh>
#include <rct/file_backend.hh>
#include <rct/write_gate.hh>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include <utility>

namespace rct {

disk::disk(disk_meta meta, std::filesystem::path dir, unique_fd data, const disk_options& opts,
           const tracker_handoff* warm)
    : meta_(std::move(meta)), dir_(std::move(dir)), data_(::dup(data.get()))
{
    if (!data_) {
        throw_errno("dup", errno);
    }
    std::unique_ptr<backend> file = make_file_backend(std::move(data));
    if (opts.tracking) {
        // The store first: the tracker's live epoch must start above every
        // epoch number its copies were labelled with before a crash.
        snapshots_ = snapshot_store::open(dir_ / "snapshots", meta_.id, data_.get(), opts.snapshots);
        tracker_ = tracker::open(dir_ / "tracking", meta_.id, meta_.size, identity(), opts.tracker,
                                 snapshots_->min_live_epoch(), warm);
        snapshots_->attach(*tracker_, meta_.size, tracker_->status().data_modified_offline);
        file = make_gated_backend(make_gated_backend(std::move(file), *snapshots_), *tracker_);
        barrier_ = std::make_unique<cut_barrier>();
        file = make_gated_backend(std::move(file), *barrier_);
    }
    store_ = std::make_unique<size_guard>(std::move(file), meta_.size);
}

disk::~disk() = default;

std::uint64_t disk::size() const noexcept
{
    return store_->size();
}

backend& disk::store() noexcept
{
    return *store_;
}

void disk::set_size(std::uint64_t s)
{
    store_->set_size(s);
}

std::unique_lock<std::mutex> disk::manage()
{
    std::unique_lock lock(mgmt_mu_);
    if (removed()) {
        throw error(errc::not_found, fmt::format("disk {} was deleted", name()));
    }
    if (restoring()) {
        throw error(errc::busy, fmt::format("disk {} is being restored from a snapshot; try again when it is done",
                                            name()));
    }
    return lock;
}

void disk::retire()
{
    removed_.store(true, std::memory_order_release);
    if (tracker_) {
        tracker_->retire();
    }
}

file_identity disk::identity() const
{
    struct stat st {};
    if (::fstat(data_.get(), &st) != 0) {
        throw_errno("fstat " + (dir_ / "data.raw").string(), errno);
    }
    return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
            static_cast<std::uint64_t>(st.st_size),
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
            static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec};
}

void disk::close_clean()
{
    // Not manage(): shutdown closes a deleted or restoring disk too.
    std::lock_guard lock(mgmt_mu_);
    if (::fdatasync(data_.get()) != 0) {
        throw_errno("fdatasync " + (dir_ / "data.raw").string(), errno);
    }
    if (snapshots_) {
        snapshots_->close();
    }
    if (tracker_ && !removed()) {
        tracker_->close_clean(identity());
    }
}

void disk::hold_writes()
{
    if (barrier_) {
        barrier_->close();
    }
}

void disk::release_writes() noexcept
{
    if (barrier_) {
        barrier_->open();
    }
}

std::optional<tracker_handoff> disk::hand_off()
{
    std::lock_guard lock(mgmt_mu_);
    if (snapshots_) {
        snapshots_->close();
    }
    if (!tracker_ || removed()) {
        return std::nullopt;
    }
    return tracker_->hand_off();
}

void disk::attach_client(int sockfd)
{
    rct::lock_guard lock(clients_mutex_);
    clients_.insert(sockfd);
}

void disk::detach_client(int sockfd)
{
    rct::lock_guard lock(clients_mutex_);
    clients_.erase(sockfd);
}

unsigned disk::clients() const
{
    rct::lock_guard lock(clients_mutex_);
    return static_cast<unsigned>(clients_.size());
}

void disk::disconnect_clients()
{
    // Under the mutex so that a socket cannot be detached, closed and its
    // number reused by an unrelated connection between our look and the
    // shutdown: a frontend detaches before it closes.
    rct::lock_guard lock(clients_mutex_);
    for (int fd : clients_) {
        ::shutdown(fd, SHUT_RDWR);
    }
}

}  // namespace rct
