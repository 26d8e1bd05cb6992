// The registry's on-disk protocol (docs/format/disk.md has the full story):
//
// - A disk comes into being in a staging directory STATE/disks/.create-...tmp
//   (or .import-/.move-), fully written and synced, and is then renamed to
//   STATE/disks/NAME. A crash leaves either no disk or a complete one, never
//   a half-built NAME directory that would block the name.
// - disk.json is replaced by writing disk.json.tmp, fsync, rename, fsync of
//   the directory.
// - A resize first records its target ("resize_to") in disk.json, then
//   changes the data file, then commits the new size. At load, a data file
//   whose size matches either end of a recorded resize is accepted and the
//   resize is finished or rolled back accordingly.
// - Removal renames NAME to .deleted-NAME-ID (one atomic step that takes the
//   disk away) and deletes the contents afterwards; leftovers are deleted at
//   the next load.
//
// The registry's mutex covers only its maps: every file operation (copies,
// renames, fsync, building a disk) runs without it, so lookups by the
// frontends are never held up. Create and import reserve their name under
// the mutex first; calls on an existing disk hold its management lock.
#include "bytes.hh"
#include "disk_record.hh"
#include "persist/durable_file.hh"
#include "tracking/rules.hh"

#include <rct/disk_registry.hh>

#include <rct/error.hh>
#include <rct/file_backend.hh>
#include <rct/log.hh>
#include <rct/unique_fd.hh>

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

namespace rct {
namespace {

namespace fs = std::filesystem;

constexpr const char* meta_file = "disk.json";
constexpr const char* data_file = "data.raw";
using disk_record::format_name;
using disk_record::format_version;
using disk_record::sector;
using disk_record::stored_meta;

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

bool ends_with(const std::string& s, std::string_view suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

[[noreturn]] void throw_errno_at(const char* call, const fs::path& p, int err)
{
    throw_errno(fmt::format("{} {}", call, p.string()), err);
}

unique_fd open_at(const fs::path& p, int flags, mode_t mode = 0)
{
    return unique_fd(persist::open_file(p, flags, mode));
}

using persist::fsync_dir;
using persist::sync_fd;

void truncate_to(int fd, std::uint64_t size, const fs::path& p)
{
    if (const int rc = persist::env::get().truncate(fd, size); rc < 0) {
        throw_errno_at("ftruncate", p, -rc);
    }
}

// Best effort: the caller is already failing, or the tree is garbage that a
// later load deletes again.
void remove_tree(const fs::path& p) noexcept
{
    std::error_code ec;
    fs::remove_all(p, ec);
    if (ec) {
        log::error("cannot delete {}: {}", p.string(), ec.message());
    }
}

// Deletes a staging directory unless the disk made it into place.
class staging_guard {
public:
    explicit staging_guard(fs::path p) : path_(std::move(p)) {}
    ~staging_guard()
    {
        if (!path_.empty()) {
            remove_tree(path_);
        }
    }
    staging_guard(const staging_guard&) = delete;
    staging_guard& operator=(const staging_guard&) = delete;
    void release() noexcept { path_.clear(); }

private:
    fs::path path_;
};

std::string new_uuid()
{
    unsigned char b[16];
    std::size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("getrandom", errno);
        }
        got += static_cast<std::size_t>(n);
    }
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
    return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
                       "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                       b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                       b[13], b[14], b[15]);
}

std::int64_t now_unix()
{
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void check_name(const std::string& name)
{
    if (!disk_registry::valid_name(name)) {
        throw error(errc::invalid_argument,
                    fmt::format("invalid disk name '{}': use 1-64 characters of A-Z a-z 0-9 . _ -, "
                                "not starting with '.' or '-'",
                                name));
    }
}

void check_size(std::uint64_t size)
{
    if (size == 0) {
        throw error(errc::invalid_argument, "disk size must be greater than zero");
    }
    if (size % sector != 0) {
        throw error(errc::invalid_argument,
                    fmt::format("disk size {} is not a multiple of {} bytes", size, sector));
    }
    if (size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
        throw error(errc::invalid_argument, fmt::format("disk size {} is too large", size));
    }
}

// Replaces dir/disk.json atomically and durably.
void commit_meta(const fs::path& dir, const disk_meta& meta, std::optional<std::uint64_t> resize_to = {})
{
    nlohmann::ordered_json j;
    j["format"] = format_name;
    j["version"] = format_version;
    j["name"] = meta.name;
    j["id"] = meta.id;
    j["size"] = meta.size;
    j["created_at"] = meta.created_at;
    if (resize_to) {
        j["resize_to"] = *resize_to;
    }
    const std::string text = j.dump(4) + "\n";
    persist::replace_file(dir, meta_file, std::vector<std::uint8_t>(text.begin(), text.end()));
}

stored_meta read_meta(const fs::path& dir)
{
    const fs::path p = dir / meta_file;
    bool exists = true;
    const auto bytes = persist::read_file(p, exists, 1u << 20);
    if (!exists) {
        throw error(errc::corrupt, fmt::format("{} is missing", p.string()));
    }
    return disk_record::parse({reinterpret_cast<const char*>(bytes.data()), bytes.size()}, p.string());
}

// copy_file_range when the kernel and filesystems allow it (it may share
// extents instead of copying), read/write otherwise; the fallback skips
// all-zero blocks, which the destination (freshly truncated) already reads
// as zeroes.
//
// Each call copies at most copy_step, so that progress moves and a cancel
// is seen within a step.
class range_copier {
public:
    range_copier(int src, int dst, const fs::path& from, progress* p) : src_(src), dst_(dst), from_(from), p_(p) {}

    void copy(off_t offset, off_t length)
    {
        constexpr off_t copy_step = off_t{64} << 20;
        while (length > 0 && !fallback_) {
            check(p_);
            loff_t in = offset;
            loff_t out = offset;
            ssize_t n = ::copy_file_range(src_, &in, dst_, &out, static_cast<std::size_t>(std::min(length, copy_step)), 0);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL) {
                    fallback_ = true;
                    break;
                }
                throw_errno_at("copy_file_range from", from_, errno);
            }
            if (n == 0) {
                throw error(errc::io_error, fmt::format("{} shrank during the copy", from_.string()));
            }
            offset += n;
            length -= n;
            advance(p_, static_cast<std::uint64_t>(n));
        }
        while (length > 0) {
            check(p_);
            if (buf_.empty()) {
                buf_.resize(1u << 20);
            }
            const auto chunk = static_cast<std::size_t>(std::min<off_t>(length, static_cast<off_t>(buf_.size())));
            ssize_t n = ::pread(src_, buf_.data(), chunk, offset);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw_errno_at("read", from_, errno);
            }
            if (n == 0) {
                throw error(errc::io_error, fmt::format("{} shrank during the copy", from_.string()));
            }
            if (!all_zero(buf_.data(), static_cast<std::size_t>(n))) {
                write_at(buf_.data(), static_cast<std::size_t>(n), offset);
            }
            offset += n;
            length -= n;
            advance(p_, static_cast<std::uint64_t>(n));
        }
    }

private:
    void write_at(const char* p, std::size_t n, off_t offset)
    {
        persist::write_all(dst_, p, n, static_cast<std::uint64_t>(offset), "the imported disk");
    }

    const int src_;
    const int dst_;
    const fs::path& from_;
    progress* const p_;
    bool fallback_ = false;
    std::vector<char> buf_;
};

// Copies the first size bytes of src into dst (already truncated to size),
// visiting only the source's data extents so holes stay holes.
void sparse_copy(int src, int dst, off_t size, const fs::path& from, progress* p)
{
    range_copier copier(src, dst, from, p);
    off_t pos = 0;
    while (pos < size) {
        off_t data = ::lseek(src, pos, SEEK_DATA);
        off_t hole = size;
        if (data < 0) {
            if (errno == ENXIO) {
                break;  // only a hole remains
            }
            if (errno != EINVAL && errno != EOPNOTSUPP) {
                throw_errno_at("lseek(SEEK_DATA) in", from, errno);
            }
            data = pos;  // no hole support: treat the rest as data
        } else {
            hole = ::lseek(src, data, SEEK_HOLE);
            if (hole < 0) {
                throw_errno_at("lseek(SEEK_HOLE) in", from, errno);
            }
        }
        if (data >= size) {
            break;
        }
        hole = std::min(hole, size);
        advance(p, static_cast<std::uint64_t>(data - pos));
        copier.copy(data, hole - data);
        pos = hole;
    }
    if (p != nullptr) {
        p->finish();
    }
}

// rename(2) that refuses to replace an existing target (an empty directory
// would otherwise be replaced silently).
int rename_noreplace(const fs::path& from, const fs::path& to)
{
    int r = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
    if (r != 0 && errno == EINVAL) {
        r = ::rename(from.c_str(), to.c_str());  // filesystem without RENAME_NOREPLACE
    }
    return r;
}


// open(2) that refuses a symbolic link in any component of p (openat2
// RESOLVE_NO_SYMLINKS), so that a caller's link can never lead rctd to a
// file of someone else's. Throws: not_found, or invalid_argument for a link.
unique_fd open_no_symlinks(const fs::path& p, int flags)
{
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags);
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, AT_FDCWD, p.c_str(), &how, sizeof how);
    if (fd < 0) {
        if (errno == ENOENT) {
            throw error(errc::not_found, fmt::format("{} does not exist", p.string()));
        }
        if (errno == ELOOP) {
            throw error(errc::invalid_argument,
                        fmt::format("{} is or passes through a symbolic link; give the real path", p.string()));
        }
        throw_errno_at("open", p, errno);
    }
    return unique_fd(static_cast<int>(fd));
}

// Whether directory dirfd is top or below it, walking up through "..".
bool inside(int dirfd, const fs::path& top)
{
    struct stat t {};
    if (::stat(top.c_str(), &t) != 0) {
        return false;
    }
    unique_fd cur(::openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat c {};
    while (cur && ::fstat(cur.get(), &c) == 0) {
        if (c.st_dev == t.st_dev && c.st_ino == t.st_ino) {
            return true;
        }
        unique_fd up(::openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
        struct stat u {};
        if (!up || ::fstat(up.get(), &u) != 0 || (u.st_dev == c.st_dev && u.st_ino == c.st_ino)) {
            return false;  // reached / (or cannot tell)
        }
        cur = std::move(up);
    }
    return false;
}

// What a source must be before anything is made of it: a regular file of a
// disk's size; for a move, still the file at dir/name, the owner's, with
// no other name, and not a disk's own. Returns its stat.
struct stat check_import_source(const import_source& src, bool move, const fs::path& disks_dir)
{
    struct stat st {};
    if (::fstat(src.file.get(), &st) != 0) {
        throw_errno_at("fstat", src.shown, errno);
    }
    if (!S_ISREG(st.st_mode)) {
        throw error(errc::invalid_argument, fmt::format("{} is not a regular file", src.shown));
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size == 0 || size % sector != 0) {
        throw error(errc::invalid_argument,
                    fmt::format("{} is {} bytes; a disk image must be a non-zero multiple of {} bytes", src.shown,
                                size, sector));
    }
    if (!move) {
        return st;
    }
    struct stat at {};
    if (::fstatat(src.dir.get(), src.name.c_str(), &at, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno_at("stat", src.shown, errno);
    }
    if (at.st_dev != st.st_dev || at.st_ino != st.st_ino) {
        throw error(errc::invalid_argument, fmt::format("{} is not the file that was opened", src.shown));
    }
    if (src.owner && st.st_uid != *src.owner) {
        throw error(errc::invalid_argument,
                    fmt::format("{} belongs to uid {}, not to the caller: --move takes only the caller's own "
                                "files (import it without --move to copy it)",
                                src.shown, st.st_uid));
    }
    if (st.st_nlink != 1) {
        throw error(errc::invalid_argument,
                    fmt::format("{} has other hard links, which would keep access to the disk; it cannot be "
                                "moved, import it without --move to copy it",
                                src.shown));
    }
    if (inside(src.dir.get(), disks_dir)) {
        throw error(errc::invalid_argument,
                    fmt::format("{} is inside the state directory; it cannot be moved", src.shown));
    }
    return st;
}

// A moved-in file becomes the daemon's: still the file that was checked
// (else refused and given back), owned by rctd, mode 0600. Returns its size.
std::uint64_t adopt_moved(int fd, const struct stat& checked, const std::string& shown)
{
    struct stat now {};
    if (::fstat(fd, &now) != 0) {
        throw_errno_at("fstat", shown, errno);
    }
    if (now.st_dev != checked.st_dev || now.st_ino != checked.st_ino || now.st_nlink != 1) {
        throw error(errc::invalid_argument, fmt::format("{} was replaced while it was moved in", shown));
    }
    if (::fchown(fd, ::geteuid(), ::getegid()) != 0 || ::fchmod(fd, 0600) != 0) {
        throw_errno_at("chown", shown, errno);
    }
    const auto size = static_cast<std::uint64_t>(now.st_size);  // may have changed since the check
    check_size(size);
    return size;
}

}  // namespace

disk_registry::disk_registry(std::filesystem::path state_dir, disk_options opts,
                             const std::map<std::string, tracker_handoff>& warm)
    : state_dir_(std::move(state_dir)), opts_(std::move(opts))
{
    const fs::path disks_dir = state_dir_ / "disks";
    persist::make_dirs(disks_dir);
    std::error_code ec;

    // Clones in progress at a crash (see clone()).
    fs::remove_all(state_dir_ / "tmp", ec);

    fs::directory_iterator it(disks_dir, ec);
    if (ec) {
        throw error(errc::io_error, fmt::format("cannot read {}: {}", disks_dir.string(), ec.message()));
    }
    for (const auto& entry : it) {
        const fs::path& p = entry.path();
        const std::string name = p.filename().string();
        if (starts_with(name, ".deleted-")) {
            log::notice("finishing the removal of {}", p.string());
            remove_tree(p);
        } else if (starts_with(name, ".move-") && ends_with(name, ".tmp")) {
            // Holds the user's own file (import --move interrupted by a
            // crash): never delete it on our own.
            log::warn("{} is left over from an interrupted import --move; its {} is the original file, "
                      "recover or delete it by hand",
                      p.string(), data_file);
        } else if (name.front() == '.' && ends_with(name, ".tmp")) {
            log::notice("deleting {}, left over from an interrupted create or import", p.string());
            remove_tree(p);
        } else if (!entry.is_directory(ec) || !valid_name(name)) {
            log::warn("ignoring {}: not a disk directory", p.string());
        } else {
            try {
                disks_.emplace(name, open_disk(p, warm));
            } catch (const std::exception& e) {
                log::error("disk {} is quarantined (not served; its files are left as they are): {}", name,
                           e.what());
                quarantined_.emplace(name, e.what());
            }
        }
    }
    log::info("{} disk{} in {}", disks_.size(), disks_.size() == 1 ? "" : "s", disks_dir.string());
}

std::shared_ptr<disk> disk_registry::open_disk(const std::filesystem::path& dir,
                                               const std::map<std::string, tracker_handoff>& warm)
{
    stored_meta stored = read_meta(dir);
    disk_meta& meta = stored.meta;
    const std::string dir_name = dir.filename().string();
    if (meta.name != dir_name) {
        throw error(errc::corrupt, fmt::format("{}/{} names disk '{}', but it lives in directory '{}'",
                                               dir.string(), meta_file, meta.name, dir_name));
    }

    const fs::path data = dir / data_file;
    const int opened = persist::env::get().open(data, O_RDWR, 0);
    if (opened < 0) {
        if (opened == -ENOENT) {
            throw error(errc::corrupt, fmt::format("{} is missing", data.string()));
        }
        throw_errno_at("open", data, -opened);
    }
    unique_fd fd(opened);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno_at("fstat", data, errno);
    }
    if (!S_ISREG(st.st_mode)) {
        throw error(errc::corrupt, fmt::format("{} is not a regular file", data.string()));
    }
    const auto actual = static_cast<std::uint64_t>(st.st_size);

    if (stored.resize_to) {
        // A resize was interrupted: the data file tells how far it got.
        if (actual == *stored.resize_to) {
            log::notice("disk {}: completing an interrupted resize from {} to {} bytes", meta.name, meta.size,
                        actual);
            meta.size = actual;
        } else if (actual == meta.size) {
            log::notice("disk {}: rolling back an interrupted resize to {} bytes; it stays at {} bytes", meta.name,
                        *stored.resize_to, meta.size);
        } else {
            throw error(errc::corrupt,
                        fmt::format("{} is {} bytes, but an interrupted resize was from {} to {} bytes",
                                    data.string(), actual, meta.size, *stored.resize_to));
        }
        sync_fd(fd.get(), data);
        commit_meta(dir, meta);
    }
    if (actual != meta.size) {
        throw error(errc::corrupt, fmt::format("{} is {} bytes, but {} says {}", data.string(), actual, meta_file,
                                               meta.size));
    }
    const auto w = warm.find(meta.id);
    return std::make_shared<disk>(std::move(meta), dir, std::move(fd), opts_, w == warm.end() ? nullptr : &w->second);
}

std::shared_ptr<disk> disk_registry::find(std::string_view name) const
{
    rct::lock_guard lock(mutex_);
    auto it = disks_.find(name);
    return it == disks_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<disk>> disk_registry::list() const
{
    rct::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<disk>> out;
    out.reserve(disks_.size());
    for (const auto& [name, d] : disks_) {
        out.push_back(d);
    }
    return out;
}

std::map<std::string, std::string> disk_registry::quarantined() const
{
    rct::lock_guard lock(mutex_);
    return quarantined_;
}

bool disk_registry::valid_name(std::string_view name) noexcept
{
    if (name.empty() || name.size() > 64 || name.front() == '.' || name.front() == '-') {
        return false;
    }
    for (char c : name) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                        c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

// A name held by a create or import in progress, released when it ends.
class disk_registry::reservation {
public:
    reservation(disk_registry& reg, std::string name) : reg_(reg), name_(std::move(name)) {}
    ~reservation()
    {
        rct::lock_guard lock(reg_.mutex_);
        reg_.reserved_.erase(name_);
    }
    reservation(const reservation&) = delete;
    reservation& operator=(const reservation&) = delete;

private:
    disk_registry& reg_;
    const std::string name_;
};

disk_registry::reservation disk_registry::reserve(const std::string& name)
{
    rct::lock_guard lock(mutex_);
    if (disks_.count(name) != 0 || reserved_.count(name) != 0) {
        throw error(errc::exists, fmt::format("disk {} already exists", name));
    }
    if (auto q = quarantined_.find(name); q != quarantined_.end()) {
        throw error(errc::exists, fmt::format("disk {} exists but is quarantined ({}); repair or remove its "
                                              "directory by hand and restart rctd",
                                              name, q->second));
    }
    reserved_.insert(name);
    return {*this, name};
}

// The last step of create and import, with the name reserved: the staged
// directory becomes STATE/disks/NAME, the disk is built, and only then
// published in the map.
std::shared_ptr<disk> disk_registry::install(const fs::path& staging, disk_meta meta, unique_fd fd,
                                             const disk_options& opts)
{
    const fs::path disks_dir = state_dir_ / "disks";
    const fs::path target = disks_dir / meta.name;
    if (rename_noreplace(staging, target) != 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) {
            throw error(errc::exists, fmt::format("{} already exists (a disk that failed to load? see the log)",
                                                  target.string()));
        }
        throw_errno_at("rename into place", target, errno);
    }
    // From here on the disk exists: report no failure that would make the
    // caller undo it.
    try {
        fsync_dir(disks_dir);
    } catch (const error& e) {
        log::warn("disk {}: {}", meta.name, e.what());
    }
    std::shared_ptr<disk> d;
    try {
        d = std::make_shared<disk>(std::move(meta), target, std::move(fd), opts);
    } catch (const error& e) {
        // The directory is in place and will load (and retry tracking) at
        // the next start; say so rather than pretend nothing happened.
        throw error(e.code(), fmt::format("disk created but cannot be opened: {}", e.what()));
    }
    rct::lock_guard lock(mutex_);
    disks_.emplace(d->name(), d);
    return d;
}

std::shared_ptr<disk> disk_registry::create(const std::string& name, std::uint64_t size, std::uint32_t granularity)
{
    check_name(name);
    check_size(size);
    disk_options opts = opts_;
    if (granularity != 0) {
        if (!tracking::valid_granularity(granularity)) {
            throw error(errc::invalid_argument,
                        fmt::format("granularity {} is not a power of two between 4K and 1M", granularity));
        }
        opts.tracker.granularity = granularity;
    }
    const reservation held = reserve(name);

    disk_meta meta{name, new_uuid(), size, now_unix()};
    const fs::path disks_dir = state_dir_ / "disks";
    const fs::path staging = disks_dir / fmt::format(".create-{}-{}.tmp", name, meta.id);
    if (const int rc = persist::env::get().mkdir(staging, 0700); rc != 0) {
        throw_errno_at("mkdir", staging, -rc);
    }
    staging_guard guard(staging);

    const fs::path data = staging / data_file;
    unique_fd fd = open_at(data, O_RDWR | O_CREAT | O_EXCL, 0600);
    truncate_to(fd.get(), size, data);
    sync_fd(fd.get(), data);
    commit_meta(staging, meta);

    auto d = install(staging, std::move(meta), std::move(fd), opts);
    guard.release();
    return d;
}

import_source import_source::open_path(const std::filesystem::path& from, bool move)
{
    import_source src;
    src.shown = from.string();
    // O_NONBLOCK: a FIFO at the path must not hang the caller's request.
    src.file = open_no_symlinks(from, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (move) {
        src.locate(from);
    }
    return src;
}

void import_source::locate(const std::filesystem::path& from)
{
    dir = open_no_symlinks(from.parent_path(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    name = from.filename().string();
}

std::shared_ptr<disk> disk_registry::import(const std::string& name, const std::filesystem::path& from, bool move)
{
    return import(name, import_source::open_path(from, move), move);
}

std::shared_ptr<disk> disk_registry::import(const std::string& name, import_source src, bool move, progress* p)
{
    check_name(name);
    const struct stat st = check_import_source(src, move, state_dir_ / "disks");
    const reservation held = reserve(name);

    disk_meta meta{name, new_uuid(), static_cast<std::uint64_t>(st.st_size), now_unix()};
    const fs::path disks_dir = state_dir_ / "disks";
    const fs::path staging = disks_dir / fmt::format(".{}-{}-{}.tmp", move ? "move" : "import", name, meta.id);
    if (const int rc = persist::env::get().mkdir(staging, 0700); rc != 0) {
        throw_errno_at("mkdir", staging, -rc);
    }
    staging_guard guard(staging);
    const fs::path data = staging / data_file;

    if (!move) {
        unique_fd fd = open_at(data, O_RDWR | O_CREAT | O_EXCL, 0600);
        truncate_to(fd.get(), meta.size, data);
        if (p != nullptr) {
            p->set_total(meta.size);
        }
        sparse_copy(src.file.get(), fd.get(), static_cast<off_t>(meta.size), src.shown, p);
        check(p);
        sync_fd(fd.get(), data);
        commit_meta(staging, meta);
        auto d = install(staging, std::move(meta), std::move(fd), opts_);
        guard.release();
        return d;
    }

    if (const int rc = persist::env::get().rename_at(src.dir.get(), src.name, AT_FDCWD, data); rc != 0) {
        const int err = -rc;
        if (err == EXDEV) {
            throw error(errc::invalid_argument,
                        fmt::format("{} is on a different filesystem than {}; it cannot be moved, "
                                    "import it without --move to copy it",
                                    src.shown, state_dir_.string()));
        }
        if (err == ENOENT) {
            throw error(errc::not_found, fmt::format("{} does not exist", src.shown));
        }
        throw_errno_at("rename", src.shown, err);
    }
    try {
        unique_fd fd = open_at(data, O_RDWR);
        meta.size = adopt_moved(fd.get(), st, src.shown);
        if (p != nullptr) {
            p->set_total(meta.size);
            p->finish();
        }
        sync_fd(fd.get(), data);
        commit_meta(staging, meta);
        auto d = install(staging, std::move(meta), std::move(fd), opts_);
        guard.release();
        return d;
    } catch (...) {
        // Give the file back before the staging directory goes.
        if (persist::env::get().rename_at(AT_FDCWD, data, src.dir.get(), src.name) != 0) {
            log::error("could not move {} back to {} after a failed import: {}; it stays in {}", data.string(),
                       src.shown, std::strerror(errno), staging.string());
            guard.release();
        }
        throw;
    }
}

std::shared_ptr<disk> disk_registry::find_or_throw(const std::string& name) const
{
    auto d = find(name);
    if (!d) {
        throw error(errc::not_found, fmt::format("no disk named {}", name));
    }
    return d;
}

void disk_registry::remove(const std::string& name, bool force)
{
    const std::shared_ptr<disk> d = find_or_throw(name);
    const auto managing = d->manage();
    const unsigned n = d->clients();
    if (n > 0 && !force) {
        throw error(errc::busy,
                    fmt::format("disk {} has {} connected client{}; use --force", name, n, n == 1 ? "" : "s"));
    }
    const fs::path disks_dir = state_dir_ / "disks";
    const fs::path doomed = disks_dir / fmt::format(".deleted-{}-{}", name, d->id());
    if (::rename(d->dir().c_str(), doomed.c_str()) != 0) {
        throw_errno_at("rename", d->dir(), errno);
    }
    try {
        fsync_dir(disks_dir);
    } catch (const error& e) {
        // The disk is gone from the namespace either way; should the
        // rename be lost in a crash, the disk merely comes back.
        log::warn("disk {}: {}", name, e.what());
    }
    // Before the name is free again: from here on nothing of this disk
    // writes by path, so it cannot reach a disk created under the name.
    d->retire();
    if (force) {
        d->disconnect_clients();
    }
    {
        rct::lock_guard lock(mutex_);
        disks_.erase(name);
    }
    // Clients still connected keep the data file open; its blocks are freed
    // when the last of them lets go.
    remove_tree(doomed);
}

// Everything that could refuse the resize, before any file changes.
void disk_registry::check_resize(disk& d, std::uint64_t new_size, bool force)
{
    const std::uint64_t old_size = d.size();
    if (new_size < old_size && d.snapshots() != nullptr && !d.snapshots()->empty()) {
        throw error(errc::invalid_argument,
                    fmt::format("disk {} has snapshots, which would lose the cut-off content; delete them before "
                                "shrinking it",
                                d.name()));
    }
    if (new_size < old_size && !force) {
        throw error(errc::invalid_argument,
                    fmt::format("shrinking disk {} from {} to {} bytes loses data; use --force", d.name(), old_size,
                                new_size));
    }
    if (const tracker* t = d.tracking()) {
        t->check_resize(new_size);
    }
}

void disk_registry::resize(const std::string& name, std::uint64_t new_size, bool force)
{
    check_size(new_size);
    const std::shared_ptr<disk> d = find_or_throw(name);
    const auto managing = d->manage();
    if (new_size == d->size()) {
        return;
    }
    check_resize(*d, new_size, force);
    disk_meta meta{d->name(), d->id(), d->size(), d->created_at()};
    commit_meta(d->dir(), meta, new_size);
    truncate_data(*d, meta, new_size);
    if (tracker* t = d->tracking()) {
        // Before I/O may reach the new space: its map must cover it.
        t->resize(new_size);
    }
    if (snapshot_store* s = d->snapshots()) {
        s->resize(new_size);
    }
    d->set_size(new_size);
    meta.size = new_size;
    commit_meta(d->dir(), meta);
}

// Resize steps 2 and 3 (docs/format/disk.md), through the disk's own data
// file descriptor; on failure the resize is rolled back.
void disk_registry::truncate_data(disk& d, const disk_meta& old_meta, std::uint64_t new_size)
{
    const fs::path data = d.dir() / data_file;
    if (new_size < old_meta.size) {
        // Writes past the new end are refused and those in flight complete
        // before the blocks go: a late one would extend the file again.
        d.set_size(new_size);
    }
    if (::ftruncate(d.data_.get(), static_cast<off_t>(new_size)) != 0) {
        const int err = errno;
        d.set_size(old_meta.size);
        try {
            commit_meta(d.dir(), old_meta);
        } catch (const error& e) {
            log::warn("disk {}: {} (the next start settles the resize)", d.name(), e.what());
        }
        throw_errno_at("ftruncate", data, err);
    }
    // If the size cannot be made durable, the recorded resize_to stays and
    // the next start settles the disk at whichever size the file has.
    sync_fd(d.data_.get(), data);
}

void disk_registry::close_all()
{
    for (const auto& d : list()) {
        try {
            d->close_clean();
        } catch (const std::exception& e) {
            log::error("disk {}: clean shutdown failed: {}", d->name(), e.what());
        }
    }
}

std::map<std::string, tracker_handoff> disk_registry::hand_off_all()
{
    std::map<std::string, tracker_handoff> out;
    for (const auto& d : list()) {
        try {
            if (auto h = d->hand_off()) {
                out.emplace(d->id(), std::move(*h));
            }
        } catch (const std::exception& e) {
            // The next rctd recovers this disk from its files: a superset.
            log::error("disk {}: cannot hand its change tracking over: {}", d->name(), e.what());
        }
    }
    return out;
}

}  // namespace rct
