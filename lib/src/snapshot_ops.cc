// Registry operations that read snapshots: clone (a new disk from a
// snapshot) and restore (a disk back to a snapshot's content). Both move
// data through the engine's own layers with a private ring (sync_io): the
// snapshot view for reading, and for restore the disk's data path, so that
// change tracking records the rewrite and newer snapshots keep their content.
#include "bytes.hh"
#include "persist/durable_file.hh"

#include <rct/disk_registry.hh>

#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/sync_io.hh>

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace rct {
namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t piece = std::uint64_t{4} << 20;

std::shared_ptr<snapshot_view> open_view(disk& d, const std::string& snap)
{
    if (d.snapshots() == nullptr) {
        throw error(errc::invalid_argument,
                    fmt::format("disk {} has change tracking off, so no snapshots", d.name()));
    }
    return d.snapshots()->view(snap);
}


// Calls fn(offset, length) for every extent of the view that may hold data.
template <typename F>
void for_each_data_extent(snapshot_view& v, F fn)
{
    std::vector<extent> ext;
    for (std::uint64_t pos = 0; pos < v.size();) {
        ext.clear();
        const std::uint64_t len = std::min<std::uint64_t>(v.size() - pos, std::uint64_t{1} << 30);
        if (const int rc = v.allocation(pos, len, 4096, ext); rc < 0 || ext.empty()) {
            throw error(errc::io_error, fmt::format("cannot map the snapshot: {}", std::strerror(rc < 0 ? -rc : EIO)));
        }
        for (const extent& e : ext) {
            if ((e.flags & extent_zero) == 0) {
                fn(pos, e.length);
            }
            pos += e.length;
        }
    }
}

void check(int rc, const char* what)
{
    if (rc < 0) {
        throw error(errc::io_error, fmt::format("{}: {}", what, std::strerror(-rc)));
    }
}

}  // namespace

std::shared_ptr<disk> disk_registry::clone(const std::string& name, const std::string& snap,
                                           const std::string& new_name, progress* prog)
{
    if (!valid_name(new_name)) {
        throw error(errc::invalid_argument, fmt::format("invalid disk name '{}'", new_name));
    }
    if (find(new_name)) {
        throw error(errc::exists, fmt::format("disk {} already exists", new_name));
    }
    const std::shared_ptr<disk> d = find_or_throw(name);
    auto view = open_view(*d, snap);
    // Written outside STATE/disks, then moved in by import: a crash leaves
    // no half-made disk (STATE/tmp is emptied at start).
    const fs::path tmp_dir = state_dir_ / "tmp";
    persist::make_dirs(tmp_dir);
    std::uint64_t rnd = 0;
    if (::getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) {
        rnd = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    const fs::path tmp = tmp_dir / fmt::format("clone-{}-{:016x}.raw", new_name, rnd);
    unique_fd fd(persist::open_file(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
    struct remover {
        fs::path p;
        ~remover() { persist::env::get().remove(p); }
    } cleanup{tmp};
    if (const int rc = persist::env::get().truncate(fd.get(), view->size()); rc < 0) {
        throw_errno("truncate " + tmp.string(), -rc);
    }
    sync_io io;
    std::vector<std::byte> buf(piece);
    if (prog != nullptr) {
        prog->set_total(view->size());
    }
    std::uint64_t counted = 0;  // where progress is up to: holes count as done
    for_each_data_extent(*view, [&](std::uint64_t off, std::uint64_t len) {
        for (std::uint64_t p = off; p < off + len; p += piece) {
            rct::check(prog);
            const std::uint64_t n = std::min(piece, off + len - p);
            check(io.run(*view, io_op::read, p, n, buf.data()), "reading the snapshot");
            advance(prog, p + n - counted);
            counted = p + n;
            if (all_zero(buf.data(), n)) {
                continue;  // stays a hole
            }
            persist::write_all(fd.get(), buf.data(), n, p, tmp);
        }
    });
    rct::check(prog);
    persist::sync_fd(fd.get(), tmp);
    // Our own file, by its fds: a state dir reached through a link (which
    // an import's path rules would refuse) clones all the same.
    import_source src;
    src.file = std::move(fd);
    src.dir = unique_fd(::open(tmp_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!src.dir) {
        throw_errno("open " + tmp_dir.string(), errno);
    }
    src.name = tmp.filename().string();
    src.shown = tmp.string();
    if (prog != nullptr) {
        prog->finish();
    }
    return import(new_name, std::move(src), true);
}

void disk_registry::restore(const std::string& name, const std::string& snap, bool force)
{
    const std::shared_ptr<disk> d = find_or_throw(name);
    std::shared_ptr<snapshot_view> view;
    {
        // Checked and marked in one step under the management lock; other
        // management calls find the mark and fail busy until the end.
        const auto managing = d->manage();
        view = open_view(*d, snap);
        if (const unsigned n = d->clients(); n > 0 && !force) {
            throw error(errc::busy,
                        fmt::format("disk {} has {} connected client{}; a restore rewrites it under them: "
                                    "disconnect them or use --force",
                                    name, n, n == 1 ? "" : "s"));
        }
        if (view->size() != d->size()) {
            throw error(errc::invalid_argument,
                        fmt::format("snapshot {} is {} bytes but disk {} is {} bytes now; resize the disk to {} first",
                                    snap, view->size(), name, d->size(), view->size()));
        }
        d->begin_restore();
    }
    struct unmark {
        disk& d;
        ~unmark() { d.end_restore(); }
    } guard{*d};
    d->disconnect_clients();
    for (int i = 0; d->clients() > 0; ++i) {
        if (i == 3000) {
            throw error(errc::busy, fmt::format("disk {}: clients did not disconnect within 30 s", name));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    // What differs from the snapshot: everything changed since its
    // checkpoint, or the whole disk if tracking no longer knows it.
    std::vector<byte_extent> ranges;
    try {
        for (std::uint64_t cursor = 0;;) {
            auto page = d->tracking()->changes(snap, std::nullopt, cursor, 1 << 16);
            ranges.insert(ranges.end(), page.extents.begin(), page.extents.end());
            if (!page.next_cursor) {
                break;
            }
            cursor = *page.next_cursor;
        }
    } catch (const error& e) {
        log::notice("restore {} from {}: {}; rewriting the whole disk", name, snap, e.what());
        ranges = {{0, d->size()}};
    }
    sync_io io;
    std::vector<std::byte> buf(piece);
    std::uint64_t bytes = 0;
    for (const byte_extent& r : ranges) {
        for (std::uint64_t p = r.offset; p < r.offset + r.length; p += piece) {
            const std::uint64_t n = std::min(piece, r.offset + r.length - p);
            check(io.run(*view, io_op::read, p, n, buf.data()), "reading the snapshot");
            if (all_zero(buf.data(), n)) {
                check(io.run(d->store(), io_op::write_zeroes, p, n, nullptr, io_may_trim), "zeroing the disk");
            } else {
                check(io.run(d->store(), io_op::write, p, n, buf.data()), "writing the disk");
            }
            bytes += n;
        }
    }
    check(io.run(d->store(), io_op::flush, 0, 0, nullptr), "flushing the disk");
    log::notice("restored disk {} from snapshot {}: {} bytes rewritten", name, snap, bytes);
}

}  // namespace rct
