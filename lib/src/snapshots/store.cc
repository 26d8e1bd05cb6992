// The snapshot store: cuts, deletes, the copier thread and the admission of
// writes. The orderings that make snapshots exact:
//
// - A cut installs a fresh cow_map right after the tracker's epoch switch
//   (the tracker's after_cut hook), so writes of the new epoch are checked
//   against "nothing preserved yet". Writes admitted against the old map
//   may still be in flight; the cut returns, and the copier copies, only
//   after they have drained (wait_drained), so a copy never races a write
//   that the snapshot includes.
// - Admission (begin_write) counts the write in its map's in-flight stripe
//   and re-checks the current map (Dekker against the cut's pointer swap):
//   either the cut sees the count or the writer sees the new map.
// - A copy's data is durable (chunks.dat fdatasync) before its index record
//   (index.log append + fdatasync), and both before the held write is
//   released; published_ is bumped before the release, for views.
// - Labels: a copy made while snapshot N is the newest valid one is
//   labelled N; every copy of a chunk has a larger label than the ones
//   before it, and content equal to the chunk at every snapshot cut since the
//   previous copy. Epoch numbers are never reused: the tracker's live epoch
//   starts above every label (min_live_epoch).
#include "../bytes.hh"
#include "store.hh"

#include "../persist/durable_file.hh"
#include <rct/error.hh>
#include <rct/log.hh>

#include <fcntl.h>
#include <pthread.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <span>

#include <xxhash.h>

namespace rct::snapshots {
namespace {

namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

// A damaged index is set aside with the slots it described (evidence is
// never deleted); the snapshots it names come back as invalid in a new one.
store_index open_index(const fs::path& dir, std::string& damage, std::vector<snapshot_record>& lost)
{
    {
        store_index old(dir);
        if (!old.damage().empty()) {
            damage = old.damage();
            lost = old.named_in_damaged_log();
            // The chunk store first: an empty index must never sit beside the
            // old slots, or the next open would reclaim (truncate) them.
            const std::string suffix = fmt::format(".damaged-{}", ::time(nullptr));
            const fs::path chunks = dir / "chunks.dat";
            const fs::path chunks_kept = dir / ("chunks.dat" + suffix);
            if (const int rc = persist::env::get().rename(chunks, chunks_kept); rc < 0 && rc != -ENOENT) {
                throw_errno("rename " + chunks.string(), -rc);
            }
            persist::fsync_dir(dir);
            const auto kept = old.set_aside(suffix);
            log::error("snapshots {}: index.log is damaged ({}); kept as {} with {}; its {} snapshot{} are "
                       "invalid",
                       dir.string(), damage, kept.filename().string(), chunks_kept.filename().string(),
                       lost.size(), lost.size() == 1 ? "" : "s");
        }
    }
    return store_index(dir);
}


}  // namespace

store_impl::store_impl(const fs::path& dir, std::string disk_id, int data_fd, const snapshot_options& opts)
    : dir_(dir), disk_id_(std::move(disk_id)), opts_(opts), data_(::dup(data_fd)),
      idx_(open_index(dir, index_damage_, lost_))
{
    if (!data_) {
        throw_errno("dup", errno);
    }
    chunks_.reset(persist::open_or_create(dir / "chunks.dat", O_RDWR | O_NOFOLLOW, 0600));
}

store_impl::~store_impl()
{
    close();
}

void store_impl::attach(tracker& t, std::uint64_t size, bool data_changed)
{
    tracker_ = &t;
    size_.store(size);
    const auto st = t.status();
    granularity_ = st.granularity;
    std::set<std::uint64_t> checkpoints;
    for (const auto& cp : t.checkpoints()) {
        checkpoints.insert(cp.epoch);
    }
    // Nothing else runs yet: neither the copier nor any writer or view.
    if (!idx_.initialized()) {
        idx_.init(granularity_, disk_id_);
    }
    restore_lost();
    std::vector<std::uint64_t> all;
    for (const auto& [e, s] : idx_.snaps()) {
        if (s.invalid_reason.empty()) {
            all.push_back(e);
        }
    }
    if (idx_.granularity() != granularity_ || idx_.disk_id() != disk_id_) {
        invalidate(all, "the snapshot store belongs to another disk or tracking granularity");
    } else if (data_changed) {
        invalidate(all, "the data file was modified while rctd was not running");
    }
    std::vector<std::uint64_t> gone;
    for (const auto& [e, s] : idx_.snaps()) {
        if (!checkpoints.count(e) && s.generation == st.generation) {
            gone.push_back(e);  // its checkpoint never became durable: the cut did not happen
        }
    }
    for (auto e : gone) {
        log::notice("snapshots {}: dropping snapshot of epoch {}: its checkpoint was not sealed", dir_.string(), e);
        idx_.log_drop(e);
        idx_.apply_drop(e);
    }
    drop_torn_copies();
    const auto dead = idx_.garbage();
    idx_.log_free(dead);
    idx_.apply_free(dead);
    const auto used = idx_.used_slots();
    {
        rct::lock_guard sl(slot_mu_);
        next_slot_ = used.empty() ? 0 : used.back() + 1;
        used_slots_ = used.size();
        free_slots_.clear();
        std::uint64_t prev = 0;
        for (std::uint64_t u : used) {
            for (std::uint64_t s = prev; s < u; ++s) {
                free_slots_.push_back(s);
            }
            if (u > prev) {
                persist::env::get().punch_hole(chunks_.get(), prev * granularity_, (u - prev) * granularity_);
            }
            prev = u + 1;
        }
        if (const int rc = persist::env::get().truncate(chunks_.get(), next_slot_ * granularity_); rc < 0) {
            throw_errno("truncate " + (dir_ / "chunks.dat").string(), -rc);
        }
    }
    idx_.compact_if_worthwhile();
    install(build_map(size));
    copy_io_ = std::make_unique<chunk_copier>(data_.get(), chunks_.get(), dir_ / "chunks.dat", granularity_);
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "rct-snapcopy");
        copier();
    });
}

// Snapshots of a damaged index stay listed, invalid, with the reason.
void store_impl::restore_lost()
{
    std::vector<std::uint64_t> epochs;
    for (snapshot_record s : lost_) {
        if (idx_.snaps().count(s.epoch) == 0) {
            s.invalid_reason.clear();
            idx_.log_snapshot(s);
            idx_.apply_snapshot(s);
            epochs.push_back(s.epoch);
        }
    }
    invalidate(epochs, "the snapshot index was damaged (" + index_damage_ + "); the damaged index and its "
                       "chunk store were set aside");
    lost_.clear();
}

// The last COPIES record may have become durable before its slots' data
// (they are synced in parallel): a copy whose data does not match its
// checksum was never published, its write never issued, and the live chunk
// still holds the content. Forget it.
void store_impl::drop_torn_copies()
{
    std::vector<new_copy> torn;
    std::vector<std::byte> buf(idx_.granularity());
    for (const new_copy& nc : idx_.last_copies()) {
        if (nc.c.slot == zero_slot || nc.sum == 0) {
            continue;
        }
        const int rc = read_full(chunks_.get(), buf.data(), buf.size(), nc.c.slot * buf.size());
        if (rc < 0 || XXH64(buf.data(), buf.size(), 0) != nc.sum) {
            torn.push_back(nc);
        }
    }
    if (!torn.empty()) {
        log::notice("snapshots {}: {} chunk copies of the last batch before a crash never reached the store; "
                    "forgetting them (their writes were never issued)",
                    dir_.string(), torn.size());
        idx_.log_free(torn);
        idx_.apply_free(torn);
    }
}

std::uint64_t store_impl::newest_valid() const
{
    const auto& snaps = idx_.snaps();
    for (auto it = snaps.rbegin(); it != snaps.rend(); ++it) {
        if (it->second.invalid_reason.empty()) {
            return it->first;
        }
    }
    return 0;
}

std::unique_ptr<cow_map> store_impl::build_map(std::uint64_t size)
{
    const std::uint64_t label = newest_valid();
    auto m = std::make_unique<cow_map>(label, label == 0 ? 0 : chunk_count(size));
    if (label != 0) {
        idx_.for_each_preserved(label, [&](std::uint64_t c) {
            if (c < m->preserved.bits()) {
                m->preserved.set_range(c, c);
            }
        });
    }
    return m;
}

void store_impl::install(std::unique_ptr<cow_map> m)
{
    cow_map* raw = m.get();
    cow_map* old = current_.exchange(raw);
    rct::lock_guard lk(queue_mu_);
    maps_.push_back(std::move(m));
    if (old != nullptr) {
        retired_.emplace_back(old, false);
    }
}

void store_impl::wait_drained()
{
    std::vector<cow_map*> pending;
    {
        rct::lock_guard lk(queue_mu_);
        for (auto& [m, drained] : retired_) {
            if (!drained) {
                pending.push_back(m);
            }
        }
    }
    for (cow_map* m : pending) {
        // Writes in flight finish within milliseconds; only the caller
        // (a cut, or the copier) waits, never I/O.
        while (m->inflight_sum() != 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
    }
    rct::lock_guard lk(queue_mu_);
    // A writer that loaded a replaced map but has not yet counted itself in
    // it is inside readers_: free drained maps only when that is quiet.
    const bool quiet = readers_.quiet();
    std::vector<cow_map*> dead;
    for (auto& [m, drained] : retired_) {
        if (!drained) {
            drained = std::find(pending.begin(), pending.end(), m) != pending.end();
        } else if (quiet) {
            dead.push_back(m);
        }
    }
    std::erase_if(retired_, [&](auto& p) { return std::find(dead.begin(), dead.end(), p.first) != dead.end(); });
    std::erase_if(maps_, [&](auto& m) { return std::find(dead.begin(), dead.end(), m.get()) != dead.end(); });
}

bool store_impl::begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept
{
    const unsigned k = thread_stripe();
    cow_map* m;
    {
        const quiescence::guard g(readers_);
        for (;;) {
            m = current_.load();
            m->inflight[k].n.fetch_add(1);
            if (current_.load() == m) {
                break;
            }
            m->inflight[k].n.fetch_sub(1);
        }
    }
    if (m->label != 0 && r.length != 0) {
        const std::uint64_t c0 = r.offset / granularity_;
        const std::uint64_t c1 = std::min((r.offset + r.length - 1) / granularity_ + 1, m->preserved.bits());
        for (std::uint64_t c = c0; c < c1; ++c) {
            if (!m->preserved.test(c)) {
                m->inflight[k].n.fetch_sub(1);
                r.snapshot_tag = 0;
                first_writes_.fetch_add(1, std::memory_order_relaxed);
                {
                    rct::lock_guard lk(queue_mu_);
                    // Reserved capacity covers the common case; beyond it a
                    // bad_alloc terminates rather than lose a snapshot.
                    waiters_.push_back({&r, std::move(resume)});
                }
                queue_cv_.notify_one();
                return false;
            }
        }
    }
    r.snapshot_tag = reinterpret_cast<std::uintptr_t>(m) | k;
    return true;
}

void store_impl::end_write(io_request& r) noexcept
{
    if (r.snapshot_tag != 0) {
        auto* m = reinterpret_cast<cow_map*>(r.snapshot_tag & ~std::uint64_t{63});
        m->inflight[r.snapshot_tag & 63].n.fetch_sub(1);
        r.snapshot_tag = 0;
    }
}

void store_impl::copier() noexcept
{
    try {
        copy_io_->enable();
    } catch (const std::exception& e) {
        log::error("snapshots {}: cannot start the copier's ring: {}; first writes after a cut will mark the "
                   "snapshots invalid",
                   dir_.string(), e.what());
        copy_io_.reset();
    }
    rct::unique_lock lk(queue_mu_);
    waiters_.reserve(4096);
    for (;;) {
        queue_cv_.wait(lk, [&]() REQUIRES(queue_mu_) { return stop_ || !waiters_.empty(); });
        if (waiters_.empty()) {
            return;  // stop_
        }
        std::vector<waiter> ws;
        ws.swap(waiters_);
        waiters_.reserve(4096);
        lk.unlock();
        copy_batch(ws);
        lk.lock();
    }
}

void store_impl::copy_batch(std::vector<waiter>& ws) noexcept
{
    int err = 0;
    {
        rct::lock_guard batch(batch_mu_);
        wait_drained();
        // The copier holds m for the whole batch while cuts may replace it:
        // counted as a reader, it keeps m from being freed under it.
        const quiescence::guard using_map(readers_);
        cow_map* m = current_.load();
        std::vector<std::uint64_t> need;
        if (m->label != 0) {
            for (const waiter& w : ws) {
                const std::uint64_t c0 = w.r->offset / granularity_;
                const std::uint64_t c1 =
                    std::min((w.r->offset + std::max<std::uint64_t>(w.r->length, 1) - 1) / granularity_ + 1,
                             m->preserved.bits());
                for (std::uint64_t c = c0; c < c1; ++c) {
                    if (!m->preserved.test(c)) {
                        need.push_back(c);
                    }
                }
            }
            std::sort(need.begin(), need.end());
            need.erase(std::unique(need.begin(), need.end()), need.end());
        }
        if (!need.empty()) {
            err = preserve(m, need);
        }
    }
    for (waiter& w : ws) {
        resume_on_owner(*w.r, std::move(w.resume), err);
    }
}

int store_impl::preserve(cow_map* m, const std::vector<std::uint64_t>& need) noexcept
{
    // One COPIES record per slice, synced before the next is written, so
    // that only the last record in the log can be incomplete after a crash.
    for (std::size_t first = 0; first < need.size(); first += max_copies_per_record) {
        const std::size_t n = std::min(max_copies_per_record, need.size() - first);
        if (const int rc = preserve_slice(m, std::span(need).subspan(first, n)); rc < 0) {
            return rc;
        }
    }
    published_.fetch_add(1);
    return 0;
}

int store_impl::preserve_slice(cow_map* m, std::span<const std::uint64_t> need) noexcept
{
    const std::uint64_t label = m->label;
    std::vector<new_copy> copies;
    std::vector<std::uint64_t> failed;
    std::vector<std::uint64_t> written;  // slots holding this slice's data
    std::string reason;
    auto fail = [&](std::uint64_t c, std::string why) {
        failed.push_back(c);
        if (reason.empty()) {
            reason = std::move(why);
        }
    };
    if (!copy_io_) {
        for (std::uint64_t c : need) {
            fail(c, "the snapshot store's copier could not start");
        }
        need = {};
    }
    const std::size_t window = copy_io_ ? copy_io_->window() : 1;
    std::vector<int> res(window);
    std::vector<chunk_copier::slot_write> writes;
    for (std::size_t first = 0; first < need.size(); first += window) {
        const auto part = need.subspan(first, std::min(window, need.size() - first));
        copy_io_->read(part, res);
        writes.clear();
        for (std::size_t i = 0; i < part.size(); ++i) {
            const std::uint64_t c = part[i];
            if (res[i] < 0) {
                fail(c, std::string("reading the data file for a copy failed: ") + std::strerror(-res[i]));
                continue;
            }
            if (all_zero(copy_io_->buffer(i), granularity_)) {
                copies.push_back({c, {label, zero_slot}, 0});
                continue;
            }
            rct::unique_lock lk(slot_mu_);
            if (opts_.store_limit != 0 && (used_slots_ + 1) * granularity_ > opts_.store_limit) {
                lk.unlock();
                fail(c, "the snapshot store is full (limit " + std::to_string(opts_.store_limit) + " bytes)");
                continue;
            }
            std::uint64_t slot;
            if (!free_slots_.empty()) {
                slot = free_slots_.back();
                free_slots_.pop_back();
            } else {
                slot = next_slot_++;
            }
            ++used_slots_;
            writes.push_back({i, slot});
        }
        copy_io_->write(writes, res);
        for (std::size_t k = 0; k < writes.size(); ++k) {
            const std::uint64_t c = part[writes[k].buffer];
            if (res[k] < 0) {
                release_slots({writes[k].slot});
                fail(c, std::string("writing the snapshot store failed: ") + std::strerror(-res[k]));
                continue;
            }
            written.push_back(writes[k].slot);
            copies.push_back(
                {c, {label, writes[k].slot}, XXH64(copy_io_->buffer(writes[k].buffer), granularity_, 0)});
        }
    }
    // The record carries each slot's checksum, so the two files may become
    // durable in either order: the slots' data and the record are synced
    // in parallel, and open checks the last record against the data.
    std::string sync_error;
    bool recorded = false;
    try {
        idx_.write_copies(copies);
        recorded = true;
    } catch (const std::exception& e) {
        sync_error = std::string("recording copies in the index failed: ") + e.what();
    }
    if (recorded) {
        if (!written.empty()) {
            copy_io_->start_sync();
        }
        std::string log_error;
        try {
            idx_.sync_log();
        } catch (const std::exception& e) {
            log_error = e.what();
        }
        if (const int err = written.empty() ? 0 : copy_io_->finish_sync(); err < 0) {
            sync_error = std::string("syncing the snapshot store failed: ") + std::strerror(-err);
        } else if (!log_error.empty()) {
            sync_error = "recording copies in the index failed: " + log_error;
        }
    }
    if (!sync_error.empty()) {
        // The record may yet be durable: its slots are not reused in this
        // run (a restart checks them and reclaims what is unused).
        for (const auto& nc : copies) {
            fail(nc.chunk, sync_error);
        }
        copies.clear();
    } else {
        rct::exclusive_lock lk(mu_);
        idx_.apply_copies(copies);
    }
    if (!failed.empty()) {
        std::set<std::uint64_t> victims;
        {
            rct::shared_lock lk(mu_);
            for (std::uint64_t c : failed) {
                for (auto e : idx_.readers_of_live(c)) {
                    victims.insert(e);
                }
            }
        }
        try {
            invalidate({victims.begin(), victims.end()}, reason);
            log::error("snapshots {}: {}; {} snapshot(s) marked invalid, the disk keeps working", dir_.string(),
                       reason, victims.size());
        } catch (const std::exception& e) {
            log::error("snapshots {}: {}, and marking snapshots invalid failed too ({}): failing the writes",
                       dir_.string(), reason, e.what());
            return -EIO;
        }
    }
    for (const auto& nc : copies) {
        m->preserved.set_range(nc.chunk, nc.chunk);
    }
    for (std::uint64_t c : failed) {
        m->preserved.set_range(c, c);
    }
    return 0;
}

void store_impl::release_slots(const std::vector<std::uint64_t>& slots)
{
    rct::lock_guard lk(slot_mu_);
    for (std::uint64_t s : slots) {
        persist::env::get().punch_hole(chunks_.get(), s * granularity_, granularity_);
        free_slots_.push_back(s);
        --used_slots_;
    }
}

void store_impl::invalidate(const std::vector<std::uint64_t>& epochs, const std::string& reason)
{
    idx_.log_invalid(epochs, reason);
    rct::exclusive_lock lk(mu_);
    idx_.apply_invalid(epochs, reason);
}

void store_impl::collect()
{
    std::vector<new_copy> dead;
    {
        rct::shared_lock lk(mu_);
        dead = idx_.garbage();
    }
    if (dead.empty()) {
        return;
    }
    idx_.log_free(dead);
    std::vector<std::uint64_t> slots;
    {
        rct::exclusive_lock lk(mu_);
        slots = idx_.apply_free(dead);
    }
    release_slots(slots);
}

void store_impl::fail_all(const std::string& reason)
{
    std::vector<std::uint64_t> all;
    {
        rct::shared_lock lk(mu_);
        for (const auto& [e, s] : idx_.snaps()) {
            if (s.invalid_reason.empty()) {
                all.push_back(e);
            }
        }
    }
    try {
        invalidate(all, reason);
        collect();
    } catch (const std::exception& e) {
        log::error("snapshots {}: cannot record that snapshots are invalid ({})", dir_.string(), e.what());
    }
    rct::shared_lock lk(mu_);
    install(build_map(size_.load()));
}

snapshot_info store_impl::snapshot(std::optional<std::string> name, const std::function<void()>& on_cut)
{
    rct::lock_guard mg(mgmt_mu_);
    if (tracker_ == nullptr) {
        throw error(errc::invalid_argument, "snapshots need change tracking, which is off for this disk");
    }
    if (!name) {
        name = "snap-" + std::to_string(tracker_->status().current_epoch);
    }
    auto fresh = std::make_unique<cow_map>(0, chunk_count(size_.load()));
    cow_map* raw = fresh.get();
    std::uint64_t swap_ns = 0;
    bool cut = false;
    checkpoint_info cp;
    try {
        cp = tracker_->checkpoint(name, [&](std::uint64_t epoch) {
            raw->label = epoch;
            const auto t0 = clock::now();
            install(std::move(fresh));
            swap_ns = static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count());
            cut = true;
            if (on_cut) {
                on_cut();
            }
        });
    } catch (const std::exception& e) {
        if (cut) {
            // Copies labelled with an epoch the tracker will reuse: no
            // snapshot may trust them.
            rct::lock_guard batch(batch_mu_);
            fail_all(std::string("a checkpoint seal failed right after a snapshot cut (") + e.what() + ")");
        }
        throw;
    }
    const snapshot_record rec{cp.epoch, tracker_->status().generation, cp.created_at, cp.size, cp.name, {}};
    try {
        idx_.log_snapshot(rec);
        rct::exclusive_lock lk(mu_);
        idx_.apply_snapshot(rec);
    } catch (...) {
        rct::lock_guard batch(batch_mu_);
        rct::shared_lock lk(mu_);
        install(build_map(size_.load()));
        throw;
    }
    wait_drained();
    cp.cut_ns += swap_ns;
    snapshot_info info;
    info.checkpoint = cp;
    return info;
}

snapshot_info store_impl::info_of(const snapshot_record& s, const std::map<std::uint64_t, checkpoint_info>& cps,
                                  const std::map<std::uint64_t, std::uint64_t>& excl) const
{
    snapshot_info i;
    if (auto it = cps.find(s.epoch); it != cps.end()) {
        i.checkpoint = it->second;
    } else {
        i.checkpoint = {s.name, s.epoch, s.created_at, s.size, {}, 0};  // tracking was reset since: no token
    }
    if (auto it = excl.find(s.epoch); it != excl.end()) {
        i.exclusive_bytes = it->second * granularity_;
    }
    i.valid = s.invalid_reason.empty();
    i.invalid_reason = s.invalid_reason;
    return i;
}

std::vector<snapshot_info> store_impl::snapshots() const
{
    std::map<std::uint64_t, checkpoint_info> cps;
    if (tracker_ != nullptr) {
        for (auto& cp : tracker_->checkpoints()) {
            cps.emplace(cp.epoch, cp);
        }
    }
    rct::shared_lock lk(mu_);
    const auto excl = idx_.exclusive_slots();
    std::vector<snapshot_info> out;
    for (const auto& [e, s] : idx_.snaps()) {
        out.push_back(info_of(s, cps, excl));
    }
    return out;
}

std::uint64_t store_impl::find_epoch(const std::string& name) const
{
    for (const auto& [e, s] : idx_.snaps()) {
        if (s.name == name) {
            return e;
        }
    }
    throw error(errc::not_found, "no snapshot named '" + name + "'");
}

void store_impl::delete_snapshot(const std::string& name, bool force)
{
    rct::lock_guard mg(mgmt_mu_);
    rct::lock_guard batch(batch_mu_);
    std::uint64_t e;
    {
        rct::exclusive_lock lk(mu_);
        e = find_epoch(name);
        if (auto it = pins_.find(e); it != pins_.end() && it->second > 0) {
            if (!force) {
                throw error(errc::busy, "snapshot '" + name + "' is exported (" + std::to_string(it->second) +
                                            " open view(s)); use --force to delete it anyway");
            }
        }
        // Open views fail reads from now on, and view() opens no new one
        // while the drop is logged: it would read dropped copies.
        revoked_.insert(e);
    }
    try {
        idx_.log_drop(e);
    } catch (...) {
        rct::exclusive_lock lk(mu_);
        revoked_.erase(e);
        throw;
    }
    {
        rct::exclusive_lock lk(mu_);
        idx_.apply_drop(e);
        if (pins_.count(e) == 0) {
            revoked_.erase(e);  // else the last unpin does
        }
    }
    collect();
    rct::shared_lock lk(mu_);
    // Deletes are what leave dead records behind: without this a daemon
    // that cuts and deletes for months grows index.log until a restart.
    // No append can run meanwhile (mgmt_mu_, batch_mu_).
    try {
        idx_.compact_if_worthwhile();
    } catch (const std::exception& e) {
        log::warn("snapshots {}: compacting index.log failed: {}; it stays as it is", dir_.string(), e.what());
    }
    install(build_map(size_.load()));
}

bool store_impl::is_snapshot(std::uint64_t epoch) const
{
    rct::shared_lock lk(mu_);
    return idx_.snaps().count(epoch) != 0;
}

snapshot_store_status store_impl::status() const
{
    rct::shared_lock lk(mu_);
    snapshot_store_status s;
    s.copies = idx_.copy_count();
    {
        rct::lock_guard sl(slot_mu_);
        s.store_bytes = used_slots_ * granularity_;
    }
    s.store_limit = opts_.store_limit;
    s.first_writes = first_writes_.load(std::memory_order_relaxed);
    s.index_damaged = !index_damage_.empty();
    s.index_damage = index_damage_;
    return s;
}

bool store_impl::empty() const
{
    rct::shared_lock lk(mu_);
    return idx_.snaps().empty();
}

void store_impl::resize(std::uint64_t new_size)
{
    size_.store(new_size);
}

bool store_impl::resolve(std::uint64_t epoch, std::uint64_t c0, std::uint64_t c1, std::vector<source>& out) const
{
    rct::shared_lock lk(mu_);
    auto it = idx_.snaps().find(epoch);
    if (it == idx_.snaps().end() || !it->second.invalid_reason.empty() || revoked_.count(epoch) != 0) {
        return false;
    }
    for (std::uint64_t c = c0; c <= c1; ++c) {
        out.push_back(idx_.lookup(c, epoch));
    }
    return true;
}

void store_impl::unpin(std::uint64_t epoch)
{
    rct::exclusive_lock lk(mu_);
    if (auto it = pins_.find(epoch); it != pins_.end() && --it->second == 0) {
        pins_.erase(it);
        revoked_.erase(epoch);
    }
}

void store_impl::close()
{
    {
        rct::lock_guard lk(queue_mu_);
        stop_ = true;
    }
    queue_cv_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
}

}  // namespace rct::snapshots

namespace rct {

std::shared_ptr<snapshot_store> snapshot_store::open(const std::filesystem::path& dir, const std::string& disk_id,
                                                     int data_fd, const snapshot_options& opts)
{
    persist::make_dirs(dir);
    return std::make_shared<snapshots::store_impl>(dir, disk_id, data_fd, opts);
}

}  // namespace rct
