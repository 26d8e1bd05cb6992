// env: the one path by which the engine makes files durable (the idea of
// LevelDB's Env). Every open, write, sync, truncation, hole punch, rename and
// removal of a file that must survive a crash goes through it; I/O that has
// to run on io_uring (the data file, chunks.dat) reports each completed
// sync with synced(), so that an env modelling durability knows what a
// power cut keeps. Errors are values (-errno); durable_file.hh wraps them in
// exceptions naming the file for setup-time callers.
//
// Opens never follow a symbolic link in the final component and resolve
// the name relative to its directory's fd (real env: openat with
// O_NOFOLLOW), so a link planted where a metadata file belongs is refused
// (ELOOP), never written through; files and directories are created with
// the explicit modes the callers pass (0600 and 0700), which rctd's umask
// of 077 cannot widen.
//
// The process has one env: real() unless a test installs another (a fault
// env that drops unsynced writes at a simulated power cut, fails writes or
// syncs, or returns ENOSPC) before it opens anything. Implementations are
// thread-safe: trackers, copiers, workers and the control thread call them.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace rct::persist {

class env {
public:
    virtual ~env() = default;

    // The installed env.
    static env& get() noexcept;
    // Installs e (nullptr: back to the real one). Not while files are open.
    static void install(env* e) noexcept;
    static env& real() noexcept;

    // fd or -errno; the caller owns the fd (closing needs no env: what a
    // close does not sync, a power cut may drop).
    virtual int open(const std::filesystem::path& p, int flags, mode_t mode) = 0;
    // All n bytes, or -errno.
    virtual int write_at(int fd, const void* data, std::size_t n, std::uint64_t off) = 0;
    // Bytes read (short only at the end of the file), or -errno.
    virtual ssize_t read_at(int fd, void* data, std::size_t n, std::uint64_t off) = 0;
    virtual int datasync(int fd) = 0;
    virtual int truncate(int fd, std::uint64_t size) = 0;
    virtual int punch_hole(int fd, std::uint64_t off, std::uint64_t len) = 0;
    virtual int rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
    // renameat(2) (AT_FDCWD for a path), for a file reached by its
    // directory's fd; never follows a link in either name.
    virtual int rename_at(int from_dir, const std::filesystem::path& from, int to_dir,
                          const std::filesystem::path& to) = 0;
    virtual int remove(const std::filesystem::path& p) = 0;
    virtual int sync_dir(const std::filesystem::path& dir) = 0;
    // mkdir(2): 0 or -errno (-EEXIST when it is there already).
    virtual int mkdir(const std::filesystem::path& dir, mode_t mode) = 0;
    // A sync done outside the env completed: of the whole file (len 0), or
    // of [off, off+len) written with RWF_DSYNC.
    virtual void synced(int fd, std::uint64_t off, std::uint64_t len) noexcept = 0;
};

}  // namespace rct::persist
