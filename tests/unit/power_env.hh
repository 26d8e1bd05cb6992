// power_env: a persistence seam (persist::env) that models what a power cut
// keeps, for tests. It tracks, per inode, the content as of its last
// completed sync (fdatasync through the env, or a sync the engine reports
// from io_uring) and, per directory, the entries as of its last fsync. At
// cut() every later write, sync, rename or removal fails (the machine is
// off); restore() then rebuilds the tree under root from those durable
// images alone: unsynced writes, unsynced new files and unsynced renames
// and removals are gone, as POSIX allows after a crash. It can also fail
// the next matching sync or write (EIO, ENOSPC).
//
// Worst case by design: nothing unsynced survives (real filesystems keep
// some; a design must not rely on that). Whole-file syncs copy the file, so
// keep the files small. Thread-safe (one mutex).
#pragma once

#include "persist/env.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace rct::test {

class power_env final : public persist::env {
public:
    explicit power_env(std::filesystem::path root) : root_(std::move(root)) { snapshot(); }

    // Everything now on disk under root becomes the durable image.
    void snapshot()
    {
        std::lock_guard l(mu_);
        content_.clear();
        entries_.clear();
        dirs_.clear();
        record_tree(root_);
    }

    void cut()
    {
        std::lock_guard l(mu_);
        off_ = true;
    }

    // Call with nothing running on the files. Powers the machine back on.
    void restore()
    {
        std::lock_guard l(mu_);
        const std::filesystem::path staging = root_.string() + ".power";
        std::filesystem::remove_all(staging);
        std::filesystem::create_directory(staging);
        build(inode_of(root_), staging);
        for (const auto& e : std::filesystem::directory_iterator(root_)) {
            std::filesystem::remove_all(e.path());
        }
        for (const auto& e : std::filesystem::directory_iterator(staging)) {
            std::filesystem::rename(e.path(), root_ / e.path().filename());
        }
        std::filesystem::remove(staging);
        off_ = false;
        content_.clear();
        entries_.clear();
        dirs_.clear();
        record_tree(root_);
    }

    // The next sync (or write) of a file whose name contains `part` fails
    // with `err`.
    void fail_next_sync(const std::string& part, int err)
    {
        std::lock_guard l(mu_);
        sync_fault_ = {part, err};
    }
    void fail_next_write(const std::string& part, int err)
    {
        std::lock_guard l(mu_);
        write_fault_ = {part, err};
    }

    int open(const std::filesystem::path& p, int flags, mode_t mode) override
    {
        std::lock_guard l(mu_);
        struct stat st {};
        const bool existed = ::lstat(p.c_str(), &st) == 0;
        if (off_ && (flags & (O_CREAT | O_TRUNC | O_WRONLY | O_RDWR)) != 0 && !existed) {
            return -EIO;
        }
        const int fd = real().open(p, flags, mode);
        if (fd >= 0 && !existed) {
            content_.erase(inode_of(fd));  // a new inode: nothing of it is durable yet
        }
        if (fd >= 0) {
            names_[inode_of(fd)] = p.filename().string();
        }
        return fd;
    }
    int write_at(int fd, const void* data, std::size_t n, std::uint64_t off) override
    {
        std::lock_guard l(mu_);
        if (const int err = fault(write_fault_, fd); off_ || err != 0) {
            return off_ ? -EIO : -err;
        }
        return real().write_at(fd, data, n, off);
    }
    ssize_t read_at(int fd, void* data, std::size_t n, std::uint64_t off) override
    {
        return real().read_at(fd, data, n, off);
    }
    int datasync(int fd) override
    {
        std::lock_guard l(mu_);
        if (const int err = fault(sync_fault_, fd); off_ || err != 0) {
            return off_ ? -EIO : -err;
        }
        const int rc = real().datasync(fd);
        if (rc == 0) {
            content_[inode_of(fd)] = read_all(fd);
        }
        return rc;
    }
    int truncate(int fd, std::uint64_t size) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().truncate(fd, size);
    }
    int punch_hole(int fd, std::uint64_t off, std::uint64_t len) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().punch_hole(fd, off, len);
    }
    int rename(const std::filesystem::path& from, const std::filesystem::path& to) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().rename(from, to);
    }
    int rename_at(int from_dir, const std::filesystem::path& from, int to_dir,
                  const std::filesystem::path& to) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().rename_at(from_dir, from, to_dir, to);
    }
    int remove(const std::filesystem::path& p) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().remove(p);
    }
    int mkdir(const std::filesystem::path& dir, mode_t mode) override
    {
        std::lock_guard l(mu_);
        return off_ ? -EIO : real().mkdir(dir, mode);
    }
    int sync_dir(const std::filesystem::path& dir) override
    {
        std::lock_guard l(mu_);
        if (off_) {
            return -EIO;
        }
        const int rc = real().sync_dir(dir);
        if (rc == 0) {
            record_entries(dir);
        }
        return rc;
    }
    void synced(int fd, std::uint64_t off, std::uint64_t len) noexcept override
    {
        std::lock_guard l(mu_);
        if (off_) {
            return;
        }
        const auto now = read_all(fd);
        auto& durable = content_[inode_of(fd)];
        if (len == 0) {
            durable = now;
            return;
        }
        if (durable.size() < off + len) {
            durable.resize(off + len, 0);
        }
        for (std::uint64_t i = off; i < off + len && i < now.size(); ++i) {
            durable[i] = now[i];
        }
    }

private:
    struct fault_spec {
        std::string part;
        int err = 0;
    };

    static persist::env& real() { return persist::env::real(); }
    static ino_t inode_of(int fd)
    {
        struct stat st {};
        return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
    }
    static ino_t inode_of(const std::filesystem::path& p)
    {
        struct stat st {};
        return ::lstat(p.c_str(), &st) == 0 ? st.st_ino : 0;
    }
    // Through a read-only reopen: the engine's fd may be write-only.
    static std::vector<std::uint8_t> read_all(int fd)
    {
        const std::string self = "/proc/self/fd/" + std::to_string(fd);
        const int rfd = ::open(self.c_str(), O_RDONLY | O_CLOEXEC);
        struct stat st {};
        std::vector<std::uint8_t> out;
        if (rfd >= 0 && ::fstat(rfd, &st) == 0) {
            out.resize(static_cast<std::size_t>(st.st_size));
            const ssize_t r = real().read_at(rfd, out.data(), out.size(), 0);
            out.resize(r < 0 ? 0 : static_cast<std::size_t>(r));
        }
        if (rfd >= 0) {
            ::close(rfd);
        }
        return out;
    }

    int fault(fault_spec& f, int fd)
    {
        if (f.err == 0) {
            return 0;
        }
        const auto it = names_.find(inode_of(fd));
        if (it == names_.end() || it->second.find(f.part) == std::string::npos) {
            return 0;
        }
        return std::exchange(f.err, 0);
    }

    void record_entries(const std::filesystem::path& dir)
    {
        auto& list = entries_[inode_of(dir)];
        list.clear();
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
            const ino_t ino = inode_of(e.path());
            list[e.path().filename().string()] = ino;
            if (e.is_directory()) {
                dirs_.insert(ino);
            }
        }
    }
    void record_tree(const std::filesystem::path& dir)
    {
        dirs_.insert(inode_of(dir));
        record_entries(dir);
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
            if (e.is_directory()) {
                record_tree(e.path());
            } else if (e.is_regular_file()) {
                const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                    content_[inode_of(fd)] = read_all(fd);
                    ::close(fd);
                }
            }
        }
    }
    void build(ino_t dir, const std::filesystem::path& out)
    {
        for (const auto& [name, ino] : entries_[dir]) {
            if (dirs_.count(ino) != 0) {
                std::filesystem::create_directory(out / name);
                build(ino, out / name);
            } else {
                std::ofstream f(out / name, std::ios::binary);
                const auto& bytes = content_[ino];
                f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
            }
        }
    }

    const std::filesystem::path root_;
    std::mutex mu_;
    bool off_ = false;
    std::map<ino_t, std::vector<std::uint8_t>> content_;         // durable content per inode
    std::map<ino_t, std::map<std::string, ino_t>> entries_;     // durable entries per directory inode
    std::set<ino_t> dirs_;
    std::map<ino_t, std::string> names_;  // last name an inode was opened under (for faults)
    fault_spec sync_fault_, write_fault_;
};

}  // namespace rct::test
