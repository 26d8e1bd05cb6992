#include <rct/disk.hh>

#include <sys/socket.h>

#include <utility>

namespace rct {

disk::disk(disk_meta meta, std::filesystem::path dir, std::unique_ptr<backend> store)
    : meta_(std::move(meta)), dir_(std::move(dir)), store_(std::move(store)), size_(meta_.size)
{
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
