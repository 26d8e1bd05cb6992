#include <rct/disk.hh>

#include <rct/error.hh>
#include <rct/file_backend.hh>
#include <rct/write_gate.hh>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <utility>

namespace rct {

disk::disk(disk_meta meta, std::filesystem::path dir, unique_fd data, const disk_options& opts)
    : meta_(std::move(meta)), dir_(std::move(dir)), data_(::dup(data.get())), size_(meta_.size)
{
    if (!data_) {
        throw_errno("dup", errno);
    }
    auto file = make_file_backend(std::move(data));
    if (opts.tracking) {
        // The store first: the tracker's live epoch must start above every
        // epoch number its copies were labelled with before a crash.
        snapshots_ = snapshot_store::open(dir_ / "snapshots", meta_.id, data_.get(), opts.snapshots);
        tracker_ = tracker::open(dir_ / "tracking", meta_.id, meta_.size, identity(), opts.tracker,
                                 snapshots_->min_live_epoch());
        snapshots_->attach(*tracker_, meta_.size, tracker_->status().data_modified_offline);
        store_ = make_gated_backend(make_gated_backend(std::move(file), *snapshots_), *tracker_);
    } else {
        store_ = std::move(file);
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

void disk::attach_client(int sockfd)
{
    std::lock_guard lock(clients_mutex_);
    clients_.insert(sockfd);
}

void disk::detach_client(int sockfd)
{
    std::lock_guard lock(clients_mutex_);
    clients_.erase(sockfd);
}

unsigned disk::clients() const
{
    std::lock_guard lock(clients_mutex_);
    return static_cast<unsigned>(clients_.size());
}

void disk::disconnect_clients()
{
    // Under the mutex so that a socket cannot be detached, closed and its
    // number reused by an unrelated connection between our look and the
    // shutdown: a frontend detaches before it closes.
    std::lock_guard lock(clients_mutex_);
    for (int fd : clients_) {
        ::shutdown(fd, SHUT_RDWR);
    }
}

}  // namespace rct
