#include "env.hh"

#include <fcntl.h>
#include <stdio.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

namespace rct::persist {
namespace {

int result(int rc) noexcept
{
    return rc < 0 ? -errno : rc;
}

class real_env final : public env {
public:
    int open(const std::filesystem::path& p, int flags, mode_t mode) override
    {
        const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : ".";
        const int dfd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            return -errno;
        }
        const int fd = result(::openat(dfd, p.filename().c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
        ::close(dfd);
        return fd;
    }
    int write_at(int fd, const void* data, std::size_t n, std::uint64_t off) override
    {
        const auto* b = static_cast<const std::uint8_t*>(data);
        while (n > 0) {
            const ssize_t w = ::pwrite(fd, b, n, static_cast<off_t>(off));
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return -errno;
            }
            b += w;
            n -= static_cast<std::size_t>(w);
            off += static_cast<std::uint64_t>(w);
        }
        return 0;
    }
    ssize_t read_at(int fd, void* data, std::size_t n, std::uint64_t off) override
    {
        auto* b = static_cast<std::uint8_t*>(data);
        std::size_t done = 0;
        while (done < n) {
            const ssize_t r = ::pread(fd, b + done, n - done, static_cast<off_t>(off + done));
            if (r < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return -errno;
            }
            if (r == 0) {
                break;
            }
            done += static_cast<std::size_t>(r);
        }
        return static_cast<ssize_t>(done);
    }
    int datasync(int fd) override { return result(::fdatasync(fd)); }
    int truncate(int fd, std::uint64_t size) override { return result(::ftruncate(fd, static_cast<off_t>(size))); }
    int punch_hole(int fd, std::uint64_t off, std::uint64_t len) override
    {
        return result(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                                  static_cast<off_t>(len)));
    }
    int rename(const std::filesystem::path& from, const std::filesystem::path& to) override
    {
        return result(::rename(from.c_str(), to.c_str()));
    }
    int rename_at(int from_dir, const std::filesystem::path& from, int to_dir,
                  const std::filesystem::path& to) override
    {
        return result(::renameat(from_dir, from.c_str(), to_dir, to.c_str()));
    }
    int remove(const std::filesystem::path& p) override { return result(::unlink(p.c_str())); }
    int sync_dir(const std::filesystem::path& dir) override
    {
        const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            return -errno;
        }
        const int rc = result(::fsync(fd));
        ::close(fd);
        return rc;
    }
    int mkdir(const std::filesystem::path& dir, mode_t mode) override { return result(::mkdir(dir.c_str(), mode)); }
    void synced(int, std::uint64_t, std::uint64_t) noexcept override {}
};

std::atomic<env*> installed{nullptr};

}  // namespace

env& env::real() noexcept
{
    static real_env e;
    return e;
}

env& env::get() noexcept
{
    env* e = installed.load(std::memory_order_acquire);
    return e != nullptr ? *e : real();
}

void env::install(env* e) noexcept
{
    installed.store(e, std::memory_order_release);
}

}  // namespace rct::persist
