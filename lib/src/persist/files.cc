#include <rct/durable_file.hh>

#include <rct/error.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>

namespace rct::persist {

namespace fs = std::filesystem;

void write_all(int fd, const void* data, std::size_t n, std::uint64_t off, const fs::path& p)
{
    const auto* b = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, b, n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("write " + p.string(), errno);
        }
        b += w;
        n -= static_cast<std::size_t>(w);
        off += static_cast<std::uint64_t>(w);
    }
}

void sync_fd(int fd, const fs::path& p)
{
    if (::fdatasync(fd) != 0) {
        throw_errno("fdatasync " + p.string(), errno);
    }
}

std::vector<std::uint8_t> read_file(const fs::path& p, bool& exists)
{
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) {
            exists = false;
            return {};
        }
        throw_errno("open " + p.string(), errno);
    }
    exists = true;
    std::vector<std::uint8_t> out;
    std::uint8_t buf[1 << 16];
    for (;;) {
        const ssize_t r = ::read(fd.get(), buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("read " + p.string(), errno);
        }
        if (r == 0) {
            break;
        }
        out.insert(out.end(), buf, buf + r);
    }
    return out;
}

void replace_file(const fs::path& dir, const std::string& name, const std::vector<std::uint8_t>& bytes)
{
    const fs::path tmp = dir / (name + ".tmp");
    const fs::path dst = dir / name;
    unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) {
        throw_errno("open " + tmp.string(), errno);
    }
    write_all(fd.get(), bytes.data(), bytes.size(), 0, tmp);
    sync_fd(fd.get(), tmp);
    fd.reset();
    if (::rename(tmp.c_str(), dst.c_str()) != 0) {
        throw_errno("rename " + tmp.string(), errno);
    }
    fsync_dir(dir);
}

void fsync_dir(const fs::path& dir)
{
    unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) {
        throw_errno("fsync " + dir.string(), errno);
    }
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
