// The snapshot store's implementation class, shared by the store itself
// (store.cc: cuts, deletes, the copier thread), the copy-on-write admission
// of writes, and snapshot views (view.cc). See rct/snapshots.hh for the
// model and docs/format/snapshots.md for the files.
#pragma once

#include "../tracking/bitmap.hh"
#include "chunk_copier.hh"
#include "index.hh"
#include "../quiescence.hh"

#include <rct/thread_annotations.hh>

#include <rct/snapshots.hh>
#include <rct/unique_fd.hh>

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
#include <thread>

namespace rct::snapshots {

// "Which chunks are preserved for the newest snapshot", swapped at each cut,
// plus a count of writes admitted against it that are still in flight (the
// cut waits for them: they may still land in the snapshot's content).
struct cow_map {
    cow_map(std::uint64_t label_, std::uint64_t chunks) : label(label_), preserved(chunks) {}
    std::uint64_t label;  // newest snapshot epoch when installed; 0 = no snapshot
    tracking::atomic_bitmap preserved;
    struct alignas(64) stripe {
        std::atomic<std::int64_t> n{0};
    };
    // Striped by thread: admission and completion happen on the same worker.
    std::array<stripe, 8> inflight;
    std::int64_t inflight_sum() const noexcept
    {
        std::int64_t s = 0;
        for (const auto& x : inflight) {
            s += x.n.load(std::memory_order_seq_cst);
        }
        return s;
    }
};

class store_impl final : public snapshot_store, public std::enable_shared_from_this<store_impl> {
public:
    store_impl(const std::filesystem::path& dir, std::string disk_id, int data_fd, const snapshot_options& opts);
    ~store_impl() override;

    std::uint64_t min_live_epoch() const noexcept override { return idx_.max_epoch() + 1; }
    void attach(tracker& t, std::uint64_t size, bool data_changed) override;
    bool begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept override;
    void end_write(io_request& r) noexcept override;
    snapshot_info snapshot(std::optional<std::string> name, const std::function<void()>& on_cut) override;
    std::vector<snapshot_info> snapshots() const override;
    void delete_snapshot(const std::string& name, bool force) override;
    bool is_snapshot(std::uint64_t epoch) const override;
    std::shared_ptr<snapshot_view> view(const std::string& name) override;
    snapshot_store_status status() const override;
    bool empty() const override;
    void resize(std::uint64_t new_size) override;
    void close() override;

    // For views. resolve() fills the source of each chunk of [c0, c1] for
    // the snapshot at epoch; false if the snapshot is gone or invalid.
    bool resolve(std::uint64_t epoch, std::uint64_t c0, std::uint64_t c1, std::vector<source>& out) const;
    // Bumped whenever copies are published, before the writes they hold back
    // are released: a view that read the live file re-checks it.
    std::uint64_t publish_count() const noexcept { return published_.load(std::memory_order_seq_cst); }
    std::uint32_t granularity() const noexcept { return granularity_; }
    int data_fd() const noexcept { return data_.get(); }
    int chunks_fd() const noexcept { return chunks_.get(); }
    void unpin(std::uint64_t epoch);

private:
    struct waiter {
        io_request* r;
        std::function<void(io_request&, int)> resume;
    };

    std::uint64_t chunk_count(std::uint64_t size) const { return (size + granularity_ - 1) / granularity_; }
    std::uint64_t newest_valid() const;                      // mu_ held
    std::uint64_t find_epoch(const std::string& name) const;  // mu_ held
    std::unique_ptr<cow_map> build_map(std::uint64_t size);   // mu_ held (shared or unique)
    void install(std::unique_ptr<cow_map> m);
    void wait_drained();
    void copier() noexcept;
    void copy_batch(std::vector<waiter>& ws) noexcept;
    int preserve(cow_map* m, const std::vector<std::uint64_t>& need) noexcept;  // batch_mu_ held
    int preserve_slice(cow_map* m, std::span<const std::uint64_t> need) noexcept;
    void drop_torn_copies();
    void restore_lost();
    void release_slots(const std::vector<std::uint64_t>& slots);
    // Durable, then visible. Callers hold batch_mu_ (or run before the copier).
    void invalidate(const std::vector<std::uint64_t>& epochs, const std::string& reason);
    void collect();  // frees every copy no valid snapshot needs
    snapshot_info info_of(const snapshot_record& s, const std::map<std::uint64_t, checkpoint_info>& cps,
                          const std::map<std::uint64_t, std::uint64_t>& excl) const;
    void fail_all(const std::string& reason);  // batch_mu_ held

    const std::filesystem::path dir_;
    const std::string disk_id_;
    const snapshot_options opts_;
    unique_fd data_;
    unique_fd chunks_;
    std::unique_ptr<chunk_copier> copy_io_;  // the copier thread's, from attach on
    tracker* tracker_ = nullptr;
    std::uint32_t granularity_ = 0;

    std::atomic<std::uint64_t> size_{0};
    std::string index_damage_;          // what was wrong with index.log at open
    std::vector<snapshot_record> lost_;  // snapshots it named, until attach lists them invalid

    // Lock order: mgmt_mu_, batch_mu_, mu_, queue_mu_, slot_mu_.
    rct::mutex mgmt_mu_;            // serialises cuts and deletes
    rct::mutex batch_mu_;           // held by the copier for a batch; by deletes to change the map
    mutable rct::shared_mutex mu_;  // idx_'s memory (its log_* calls run without it), pins_, revoked_
    store_index idx_;
    std::map<std::uint64_t, unsigned> pins_ GUARDED_BY(mu_);  // open views per snapshot epoch
    std::set<std::uint64_t> revoked_ GUARDED_BY(mu_);         // being deleted, or force-deleted while viewed
    mutable rct::mutex slot_mu_;
    std::vector<std::uint64_t> free_slots_ GUARDED_BY(slot_mu_);
    std::uint64_t next_slot_ GUARDED_BY(slot_mu_) = 0;
    std::uint64_t used_slots_ GUARDED_BY(slot_mu_) = 0;
    std::atomic<std::uint64_t> published_{0};
    std::atomic<std::uint64_t> first_writes_{0};

    std::atomic<cow_map*> current_{nullptr};
    std::vector<std::unique_ptr<cow_map>> maps_ GUARDED_BY(queue_mu_);  // current and retired
    std::vector<std::pair<cow_map*, bool>> retired_ GUARDED_BY(queue_mu_);  // true once drained
    quiescence readers_;  // writers between loading current_ and counting themselves in it

    rct::mutex queue_mu_;
    rct::cond_var queue_cv_;
    std::vector<waiter> waiters_ GUARDED_BY(queue_mu_);
    bool stop_ GUARDED_BY(queue_mu_) = false;
    std::thread thread_;
};

}  // namespace rct::snapshots
