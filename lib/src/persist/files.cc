#include "durable_file.hh"

#include <rct/error.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>

namespace rct::persist {

namespace fs = std::filesystem;

int open_file(const fs::path& p, int flags, mode_t mode)
{
    const int fd = env::get().open(p, flags, mode);
    if (fd < 0) {
        throw_errno("open " + p.string(), -fd);
    }
    return fd;
}

int open_or_create(const fs::path& p, int flags, mode_t mode)
{
    const bool existed = ::access(p.c_str(), F_OK) == 0;
    const int fd = open_file(p, flags | O_CREAT, mode);
    if (!existed) {
        try {
            fsync_dir(p.parent_path());
        } catch (...) {
            ::close(fd);
            throw;
        }
    }
    return fd;
}

void make_dirs(const fs::path& dir)
{
    if (dir.empty() || fs::is_directory(dir)) {
        return;
    }
    make_dirs(dir.parent_path());
    if (const int rc = env::get().mkdir(dir, 0700); rc < 0 && !(rc == -EEXIST && fs::is_directory(dir))) {
        throw_errno("cannot create " + dir.string(), -rc);
    }
    fsync_dir(dir.parent_path());
}

void write_all(int fd, const void* data, std::size_t n, std::uint64_t off, const fs::path& p)
{
    if (const int rc = env::get().write_at(fd, data, n, off); rc < 0) {
        throw_errno("write " + p.string(), -rc);
    }
}

void sync_fd(int fd, const fs::path& p)
{
    if (const int rc = env::get().datasync(fd); rc < 0) {
        throw_errno("fdatasync " + p.string(), -rc);
    }
}

void fsync_dir(const fs::path& dir)
{
    if (const int rc = env::get().sync_dir(dir); rc < 0) {
        throw_errno("fsync " + dir.string(), -rc);
    }
}

void rename_file(const fs::path& from, const fs::path& to)
{
    if (const int rc = env::get().rename(from, to); rc < 0) {
        throw_errno("rename " + from.string(), -rc);
    }
}

std::vector<std::uint8_t> read_file(const fs::path& p, bool& exists, std::size_t limit)
{
    const int fd = env::get().open(p, O_RDONLY, 0);
    if (fd < 0) {
        if (fd == -ENOENT) {
            exists = false;
            return {};
        }
        throw_errno("open " + p.string(), -fd);
    }
    const unique_fd guard(fd);
    exists = true;
    std::vector<std::uint8_t> out;
    for (;;) {
        const std::size_t at = out.size();
        out.resize(at + (1 << 16));
        const ssize_t r = env::get().read_at(fd, out.data() + at, 1 << 16, at);
        if (r < 0) {
            throw_errno("read " + p.string(), static_cast<int>(-r));
        }
        out.resize(at + static_cast<std::size_t>(r));
        if (out.size() > limit) {
            throw error(errc::corrupt, p.string() + " is implausibly large");
        }
        if (r < (1 << 16)) {
            return out;
        }
    }
}

void replace_file(const fs::path& dir, const std::string& name, const std::vector<std::uint8_t>& bytes)
{
    const fs::path tmp = dir / (name + ".tmp");
    // A temp file is always new (O_EXCL): one left by a crash goes first,
    // and whatever else sits at the name (a planted link) is never opened.
    if (const int rc = env::get().remove(tmp); rc < 0 && rc != -ENOENT) {
        throw_errno("unlink " + tmp.string(), -rc);
    }
    {
        const unique_fd fd(open_file(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600));
        write_all(fd.get(), bytes.data(), bytes.size(), 0, tmp);
        sync_fd(fd.get(), tmp);
    }
    rename_file(tmp, dir / name);
    fsync_dir(dir);
}

void remove_file(const fs::path& dir, const std::string& name)
{
    if (const int rc = env::get().remove(dir / name); rc < 0 && rc != -ENOENT) {
        throw_errno("unlink " + (dir / name).string(), -rc);
    }
    fsync_dir(dir);
}

std::uint64_t checksum(const void* head, std::size_t head_len, const void* tail, std::size_t tail_len)
{
    XXH64_state_t* st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, head, head_len);
    if (tail_len != 0) {
        XXH64_update(st, tail, tail_len);
    }
    const std::uint64_t v = XXH64_digest(st);
    XXH64_freeState(st);
    return v;
}

}  // namespace rct::persist
