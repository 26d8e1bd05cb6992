// disk_registry: the set of disks in a state directory, and their lifecycle.
//
// Layout of the state directory (see docs/format/disk.md):
//   STATE/disks/NAME/disk.json   metadata, committed by temp+fsync+rename
//   STATE/disks/NAME/data.raw    the disk's bytes (sparse raw image)
//
// All methods are thread-safe. The registry's mutex guards only its maps and
// is never held across I/O (fsync, ftruncate, opening files, building a
// disk), so lookups by the frontends' handshakes never wait for a management
// call. Calls on one existing disk serialise on that disk's management lock
// (disk::manage()); create, import and clone reserve their name first.
// Failures throw rct::error.
#pragma once

#include <rct/disk.hh>
#include <rct/progress.hh>
#include <rct/unique_fd.hh>

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <rct/thread_annotations.hh>

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace rct {

// The file an import reads: open for reading by whoever asked (copied
// from), and for a move also its directory and name, renamed in without
// following a symbolic link and only while it is still that same file.
struct import_source {
    unique_fd file;
    unique_fd dir;               // move only
    std::string name;            // move only: the file's name in dir
    std::string shown;           // the path, for messages
    std::optional<uid_t> owner;  // move only: refused unless the file is this user's

    // from, reached without any symbolic link (any component; a link is
    // refused as invalid_argument), opened by this process.
    static import_source open_path(const std::filesystem::path& from, bool move);
    // Only dir and name of from (the file comes from elsewhere: a passed
    // fd), by the same rules; the file itself is not opened.
    void locate(const std::filesystem::path& from);
};

class disk_registry {
public:
    // Creates STATE/disks if needed and loads every disk in it. A disk that
    // cannot be opened (metadata that fails its checks, files it cannot
    // read) is quarantined: never served, listed by quarantined() with the
    // reason, its files left as they are; the other disks are unaffected.
    // Throws if the state directory itself is unusable. warm: the previous
    // rctd's tracker hand-offs by disk id (live upgrade; hand_off_all).
    explicit disk_registry(std::filesystem::path state_dir, disk_options opts = {},
                           const std::map<std::string, tracker_handoff>& warm = {});

    const std::filesystem::path& state_dir() const noexcept { return state_dir_; }

    std::shared_ptr<disk> find(std::string_view name) const;
    std::vector<std::shared_ptr<disk>> list() const;  // sorted by name
    // Disks found at start that are not served, with why: name -> reason.
    std::map<std::string, std::string> quarantined() const;

    // Names: 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-'.
    static bool valid_name(std::string_view name) noexcept;

    // granularity: change-tracking chunk size in bytes, a power of two from
    // 4 KiB to 1 MiB; 0 means the default (64 KiB).
    std::shared_ptr<disk> create(const std::string& name, std::uint64_t size, std::uint32_t granularity = 0);
    // Copies the source file (sparsely) into the state dir; with move,
    // renames it in, then it becomes the daemon's own (owner, mode 0600).
    // A move is refused for a file with other hard links, outside the state
    // dir's filesystem, or not the owner's (when src.owner is set).
    // progress (optional) counts the bytes copied, holes included, and a
    // cancel through it fails the import (errc::cancelled) with nothing left.
    std::shared_ptr<disk> import(const std::string& name, import_source src, bool move, progress* p = nullptr);
    // import(name, import_source::open_path(from, move), move).
    std::shared_ptr<disk> import(const std::string& name, const std::filesystem::path& from, bool move);
    // Refused (errc::busy) while clients are connected, unless force, which
    // disconnects them.
    void remove(const std::string& name, bool force);
    // Growing is always allowed; shrinking needs force, and is refused while
    // the disk has snapshots.
    void resize(const std::string& name, std::uint64_t new_size, bool force);
    // A new, independent disk with the content of snapshot SNAP of NAME;
    // progress as for import.
    std::shared_ptr<disk> clone(const std::string& name, const std::string& snap, const std::string& new_name,
                                progress* p = nullptr);
    // Rewrites NAME with SNAP's content, through the data path (tracking
    // records it; newer snapshots keep theirs). New clients are refused
    // meanwhile; connected ones make it fail (errc::busy) unless force,
    // which disconnects them.
    void restore(const std::string& name, const std::string& snap, bool force);
    // Clean shutdown of every disk (see disk::close_clean); failures are
    // logged, and the next start recovers those disks as after a crash.
    void close_all();
    // disk::hand_off of every disk, by disk id, for the next rctd's warm.
    std::map<std::string, tracker_handoff> hand_off_all();

private:
    class reservation;

    std::shared_ptr<disk> open_disk(const std::filesystem::path& dir,
                                    const std::map<std::string, tracker_handoff>& warm);
    std::shared_ptr<disk> find_or_throw(const std::string& name) const;
    // A name no disk, quarantined disk or other create holds, kept until
    // the reservation goes.
    reservation reserve(const std::string& name);
    std::shared_ptr<disk> install(const std::filesystem::path& staging, disk_meta meta, unique_fd fd,
                                  const disk_options& opts);
    static void check_resize(disk& d, std::uint64_t new_size, bool force);
    static void truncate_data(disk& d, const disk_meta& old_meta, std::uint64_t new_size);

    const std::filesystem::path state_dir_;
    const disk_options opts_;
    mutable rct::mutex mutex_;
    std::map<std::string, std::shared_ptr<disk>, std::less<>> disks_ GUARDED_BY(mutex_);
    std::map<std::string, std::string> quarantined_ GUARDED_BY(mutex_);
    std::set<std::string, std::less<>> reserved_ GUARDED_BY(mutex_);
};

}  // namespace rct
