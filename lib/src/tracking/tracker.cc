// The tracker: live bitmap, sealed epochs, write-intent regions, and the
// background thread that makes them durable. The protocol is described in
// rct/tracker.hh and docs/format/tracking.md; the comments here cover the
// orderings that make it correct.
//
// Write path ordering (begin_write), all seq_cst:
//   1. mark the chunks in the live map, re-check the live-map pointer and
//      mark the new map too if a cut or resize swapped it meanwhile;
//   2. set the region activity bits;
//   3. test the regions' durable bits; if any is clear, queue for commit.
// The persister clears a durable bit only after (a) exchanging the activity
// bits to zero, (b) persisting the live map, (c) storing durable=0 and
// re-testing activity. (2)/(3) against (c) is Dekker's pattern: either the
// writer sees durable=0 and waits for a fresh commit, or the persister sees
// the activity and keeps the bit. Because (1) precedes (2), a write that
// passed (3) had its mark in the map persisted in (b) or its region kept.
//
// A write in flight across a cut is marked again at completion in the new
// epoch (end_write), so a change can never be attributed only to an epoch
// whose backup might have been read before the data landed.
#include "bitmap.hh"
#include "rules.hh"
#include "store.hh"
#include "token.hh"

#include "../persist/durable_file.hh"
#include "../quiescence.hh"

#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/thread_annotations.hh>
#include <rct/tracker.hh>

#include <pthread.h>
#include <sys/random.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <future>
#include <mutex>
#include <shared_mutex>
#include <thread>

namespace rct::tracking {
namespace {

namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

struct live_map {
    live_map(std::uint64_t e, std::uint64_t chunks) : epoch(e), bits(chunks) {}
    std::uint64_t epoch;
    atomic_bitmap bits;
};

std::uint32_t fresh_generation()
{
    std::uint32_t g = 0;
    while (g == 0) {
        if (::getrandom(&g, sizeof g, 0) != sizeof g) {
            g = static_cast<std::uint32_t>(::time(nullptr));
        }
    }
    return g;
}

// Sets bits [a, b) of a plain word vector whose bit 0 is chunk `base`.
void set_bits(std::vector<std::uint64_t>& w, std::uint64_t base, std::uint64_t a, std::uint64_t b)
{
    for (std::uint64_t i = a - base; i < b - base;) {
        if (i % 64 == 0 && b - base - i >= 64) {
            w[i / 64] = ~std::uint64_t{0};
            i += 64;
        } else {
            w[i / 64] |= std::uint64_t{1} << (i % 64);
            ++i;
        }
    }
}

class tracker_impl final : public tracker {
public:
    tracker_impl(const fs::path& dir, std::string disk_id, std::uint64_t size, const tracker_options& opts)
        : dir_(dir), disk_id_(std::move(disk_id)), opts_(opts), size_(size), log_(dir / "epochs.log")
    {
    }

    ~tracker_impl() override { stop_thread(); }

    void open(const file_identity& data, std::uint64_t min_live_epoch, const tracker_handoff* warm);
    bool take_handoff(live_map& live, log_state& st, const tracker_handoff& warm) REQUIRES(state_mu_);
    log_state load_log(std::string& damage, std::uint64_t min_live_epoch) REQUIRES(state_mu_);
    static void mark_runs(live_map& live, const std::vector<run>& runs);
    std::optional<current_state> recover_live(live_map& live, log_state& st, const std::string& damage,
                                              const file_identity& data) REQUIRES(state_mu_);
    void add_intent_regions(live_map& live, bool initialized, const std::string& problem) REQUIRES(state_mu_);

    bool begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept override;
    void end_write(io_request& r) noexcept override;

    checkpoint_info checkpoint(std::optional<std::string> name,
                               const std::function<void(std::uint64_t)>& after_cut) override;
    std::vector<checkpoint_info> checkpoints() const override;
    void delete_checkpoint(const std::string& name) override;
    changes_page changes(const std::string& since, const std::optional<std::string>& until, std::uint64_t cursor,
                         std::size_t limit) const override;
    int dirty_map(std::uint32_t generation, std::uint64_t since_epoch, std::optional<std::uint64_t> until_epoch,
                  std::uint64_t offset, std::uint64_t length, std::size_t max_extents,
                  std::vector<extent>& out) const override;
    std::optional<std::uint64_t> checkpoint_epoch(const std::string& name) const override;
    void check_resize(std::uint64_t new_size) const override;
    void resize(std::uint64_t new_size) override;
    tracking_status status() const override;
    void close_clean(const file_identity& data) override;
    tracker_handoff hand_off() override;
    void retire() override;

private:
    struct waiter {
        io_request* r;
        std::function<void(io_request&, int)> resume;
    };
    struct seal_request {
        live_map* map;
        sealed_epoch meta;
        std::promise<void> done;
    };

    std::uint64_t chunks_for(std::uint64_t size) const { return (size + granularity_ - 1) / granularity_; }
    std::uint64_t regions_for(std::uint64_t size) const { return (size + region_size_ - 1) / region_size_; }
    void chunk_range(const io_request& r, std::uint64_t& c0, std::uint64_t& c1) const
    {
        c0 = r.offset / granularity_;
        c1 = (r.offset + std::max<std::uint64_t>(r.length, 1) - 1) / granularity_;
    }

    void start_thread();
    void stop_thread();
    void background() noexcept;
    void commit_intents(std::vector<waiter>& ws) noexcept;
    bool persist() noexcept;
    void reset_generation(const std::string& reason, std::uint64_t live_epoch) REQUIRES(state_mu_);
    void settle_size_change(const std::optional<current_state>& cur, live_map& live) REQUIRES(state_mu_);
    void write_current_unless_retired(std::uint32_t generation, const live_map& m);
    std::string token_for(const sealed_epoch& s) const REQUIRES_SHARED(state_mu_);
    std::uint64_t resolve(const std::string& ref, const char* what) const REQUIRES_SHARED(state_mu_);
    std::vector<std::uint64_t> union_words(std::uint64_t since, std::optional<std::uint64_t> until,
                                           std::uint64_t w0, std::uint64_t w1) const REQUIRES_SHARED(state_mu_);
    std::unique_ptr<live_map> take_spare(std::uint64_t epoch);
    void retire(live_map* m);
    checkpoint_info info_of(const sealed_epoch& s) const REQUIRES_SHARED(state_mu_);

    const fs::path dir_;
    const std::string disk_id_;
    const tracker_options opts_;
    std::uint32_t granularity_ = 0;
    std::uint64_t region_size_ = 0;
    std::uint64_t region_capacity_ = 0;

    std::atomic<std::uint64_t> size_;
    std::atomic<live_map*> current_{nullptr};
    // The live epoch as far as the durable log knows: a cut moves current_
    // ahead of it until the seal is appended. current.map is only ever
    // written for this epoch, or recovery would find a map newer than the
    // log and have to discard every checkpoint.
    std::atomic<std::uint64_t> log_live_epoch_{0};
    std::unique_ptr<atomic_bitmap> durable_;   // region intent bits known durable
    std::unique_ptr<atomic_bitmap> activity_;  // regions written since the last persist began

    // Lock order: mgmt_mu_, then state_mu_, then queue_mu_.
    rct::mutex mgmt_mu_;                  // serialises management operations
    mutable rct::shared_mutex state_mu_;  // sealed_, generation_, status fields, owned_maps_
    std::vector<sealed_epoch> sealed_ GUARDED_BY(state_mu_);  // ascending epoch
    std::uint32_t generation_ GUARDED_BY(state_mu_) = 1;
    std::string reset_reason_ GUARDED_BY(state_mu_);
    std::uint64_t dropped_below_ GUARDED_BY(state_mu_) = 0;  // log_state::dropped_below
    bool recovered_ GUARDED_BY(state_mu_) = false;
    bool data_modified_offline_ GUARDED_BY(state_mu_) = false;
    std::uint64_t recovery_excess_ GUARDED_BY(state_mu_) = 0;
    std::vector<std::unique_ptr<live_map>> owned_maps_ GUARDED_BY(state_mu_);  // every map not yet freed

    epoch_log log_;
    std::unique_ptr<intent_file> intent_;
    std::vector<std::uint64_t> intent_image_;  // background thread only
    log::limiter persist_failures_;            // one line per disk per window, not one per interval

    rct::mutex queue_mu_;
    rct::cond_var queue_cv_;
    std::vector<waiter> waiters_ GUARDED_BY(queue_mu_);
    std::deque<seal_request*> seals_ GUARDED_BY(queue_mu_);
    std::unique_ptr<live_map> spare_ GUARDED_BY(queue_mu_);
    std::vector<live_map*> retired_ GUARDED_BY(queue_mu_);  // freed once readers_ is quiet
    quiescence readers_;  // writers between loading current_ and their last use
    bool persist_now_ GUARDED_BY(queue_mu_) = false;
    bool stop_ GUARDED_BY(queue_mu_) = false;
    std::thread thread_;

    // Held across every write by path after open, so that retire() returns
    // only once none is in progress.
    rct::mutex paths_mu_;
    bool dir_gone_ GUARDED_BY(paths_mu_) = false;
};

void tracker_impl::open(const file_identity& data, std::uint64_t min_live_epoch, const tracker_handoff* warm)
{
    // Nothing else runs yet; the lock keeps the analysis honest and costs
    // nothing.
    rct::exclusive_lock guard(state_mu_);
    std::string damage;
    log_state st = load_log(damage, min_live_epoch);
    const std::uint64_t chunks = chunks_for(size_.load());
    region_capacity_ = std::max<std::uint64_t>(regions_for(size_.load()) * 4, 65536);
    durable_ = std::make_unique<atomic_bitmap>(region_capacity_);
    activity_ = std::make_unique<atomic_bitmap>(region_capacity_);
    intent_ = std::make_unique<intent_file>(dir_ / "intent.map", region_size_, region_capacity_);
    intent_image_.assign((region_capacity_ + 63) / 64, 0);
    {
        rct::lock_guard q(queue_mu_);
        waiters_.reserve(4096);
    }

    auto live = std::make_unique<live_map>(st.next_epoch, chunks);
    if (!st.sealed.empty() && st.sealed.back().name.empty()) {
        mark_runs(*live, st.sealed.back().runs);  // deleted newest checkpoint, merged into live
        st.sealed.pop_back();
    }
    if (warm != nullptr && damage.empty() && take_handoff(*live, st, *warm)) {
        log_live_epoch_.store(live->epoch);
        current_.store(live.get());
        owned_maps_.push_back(std::move(live));
        start_thread();
        return;
    }
    const auto cur = recover_live(*live, st, damage, data);
    if (sealed_.empty()) {
        sealed_ = std::move(st.sealed);
    }
    settle_size_change(cur, *live);
    // Also learns the newest slot's sequence, so the next commit goes to
    // the other slot and supersedes it.
    intent_->load();
    // From here on a crash must be detected as unclean.
    remove_clean(dir_);
    // Persist the recovered live map before clearing every intent bit.
    write_current(dir_, generation_, live->epoch, chunks, live->bits.runs());
    intent_->store(intent_image_);
    log_live_epoch_.store(live->epoch);
    current_.store(live.get());
    owned_maps_.push_back(std::move(live));
    start_thread();
}

// A live upgrade's hand-off, when it is this history's live epoch: the
// live map is the previous rctd's, exactly, and the files are left as it
// kept them (its intent bits stay set and durable), so no write waits for
// a commit and nothing is written here. False: recover from the files.
bool tracker_impl::take_handoff(live_map& live, log_state& st, const tracker_handoff& warm)
{
    std::vector<run> runs;
    runs.reserve(warm.runs.size());
    for (const auto& r : warm.runs) {
        runs.push_back({r.start, r.count});
    }
    std::string why;
    if (!st.initialized || st.disk_id != disk_id_) {
        why = "the tracking state is not this disk's";
    } else if (warm.generation != generation_ || warm.epoch != st.next_epoch || warm.chunks != live.bits.bits()) {
        why = fmt::format("it is generation {} epoch {} of {} chunks, the files say generation {} epoch {} of {}",
                          warm.generation, warm.epoch, warm.chunks, generation_, st.next_epoch, live.bits.bits());
    } else {
        try {
            check_runs(runs, warm.chunks, "the hand-off");
        } catch (const error& e) {
            why = e.what();
        }
    }
    const auto words = why.empty() ? intent_->load() : std::nullopt;
    if (why.empty() && !words) {
        why = "intent.map holds no valid bitmap";
    }
    if (!why.empty()) {
        log::warn("tracking {}: the previous rctd's hand-off does not fit ({}); recovering from the files",
                  dir_.string(), why);
        return false;
    }
    mark_runs(live, runs);
    sealed_ = std::move(st.sealed);
    for (std::size_t i = 0; i < intent_image_.size() && i < words->size(); ++i) {
        intent_image_[i] = (*words)[i];
        durable_->or_word(i, (*words)[i]);
    }
    // A rolled-back upgrade: the new rctd that gave up sealed the files.
    std::error_code ec;
    if (std::filesystem::exists(dir_ / "clean", ec)) {
        remove_clean(dir_);
    }
    return true;
}

// Replays epochs.log, or starts a new one (first open, or damage: the old
// one is set aside and `damage` says why), and settles the live epoch's
// number above min_live_epoch.
log_state tracker_impl::load_log(std::string& damage, std::uint64_t min_live_epoch)
{
    log_state st;
    try {
        st = log_.replay();
    } catch (const error& e) {
        damage = e.what();
    }
    if (st.torn_tail) {
        log::warn("tracking {}: cut an incomplete record off the end of epochs.log", dir_.string());
    }
    if (damage.empty() && !st.damage.empty()) {
        st.reset_reason = "the change log was damaged (" + st.damage + "); the checkpoints made before the damage "
                          "were dropped";
        const auto kept = log_.set_aside(".damaged");
        log_.rewrite_after_damage(st, st.reset_reason);
        log::error("tracking {}: epochs.log: {}; kept as {}; {} later checkpoint(s) kept", dir_.string(),
                   st.reset_reason, kept.filename().string(), st.sealed.size());
    }
    if (!damage.empty()) {
        // Never trust a damaged log: start a new generation (every older
        // token then asks for a full backup) with the whole disk changed.
        const auto kept = log_.set_aside(".damaged");
        log::error("tracking: {}; kept as {}; restarting tracking: every checkpoint now asks for a full backup",
                   damage, kept.filename().string());
        st = {};
    }
    if (!st.initialized) {
        // A damaged log keeps the granularity its INIT record had, if that
        // record itself was intact.
        granularity_ = log_.init_granularity() != 0 ? log_.init_granularity() : opts_.granularity;
        region_size_ = opts_.region_size;
        // A new history must never be mistaken for a lost one: tokens of an
        // earlier log (deleted, damaged, set aside) carry its generation.
        st.generation = fresh_generation();
        log_.append_init(st.generation, granularity_, region_size_, disk_id_);
    } else {
        granularity_ = st.granularity;
        region_size_ = st.region_size;
    }
    if (st.next_epoch < min_live_epoch) {
        log_.append_advance(min_live_epoch);
        if (st.advanced_from == 0) {
            st.advanced_from = st.next_epoch;
        }
        st.next_epoch = min_live_epoch;
    }
    generation_ = st.generation;
    reset_reason_ = damage.empty() ? st.reset_reason : "the change log was damaged (" + damage + ")";
    dropped_below_ = st.dropped_below;
    return st;
}

void tracker_impl::mark_runs(live_map& live, const std::vector<run>& runs)
{
    const std::uint64_t chunks = live.bits.bits();
    for (const run& r : runs) {
        if (r.count != 0 && r.start < chunks) {
            live.bits.set_range(r.start, std::min(r.start + r.count, chunks) - 1);
        }
    }
}

// What the live epoch holds: exactly current.map after a clean stop; after
// a crash current.map plus every intent region; the whole disk when the
// history cannot be trusted (and then a new generation, with the reason).
// Returns current.map as read (settle_size_change needs its size).
std::optional<current_state> tracker_impl::recover_live(live_map& live, log_state& st, const std::string& damage,
                                                        const file_identity& data)
{
    const std::uint64_t chunks = live.bits.bits();
    const auto everything = [&] { live.bits.set_range(0, chunks == 0 ? 0 : chunks - 1); };
    const auto reset = [&](const std::string& why) REQUIRES(state_mu_) {
        sealed_ = std::move(st.sealed);
        reset_generation(why, live.epoch);
        everything();
        st.sealed.clear();
    };
    std::string problem;
    const auto clean = read_clean(dir_, problem);
    std::optional<current_state> cur;
    try {
        cur = read_current(dir_);
    } catch (const error& e) {
        problem = e.what();
    }
    // Every epoch from the first ADVANCE since the last seal up to the live
    // one has been the live epoch in turn: a map of any of them is current.
    const bool cur_fits = cur && cur->generation == generation_ &&
                          (cur->epoch == st.next_epoch ||
                           (st.advanced_from != 0 && cur->epoch >= st.advanced_from && cur->epoch <= st.next_epoch));
    recovered_ = st.initialized && !clean;
    if (!damage.empty()) {
        everything();
    } else if (cur && cur->generation == generation_ && cur->epoch > st.next_epoch) {
        // Acknowledged checkpoints are missing from the log.
        reset("epochs.log lacks checkpoints that current.map proves existed");
    } else if (st.initialized && st.disk_id != disk_id_) {
        reset("the tracking state belongs to another disk (id " + st.disk_id + ")");
    } else if (clean && (clean->id.dev != data.dev || clean->id.ino != data.ino || clean->id.size != data.size ||
                         clean->id.mtime_ns != data.mtime_ns || clean->id.ctime_ns != data.ctime_ns)) {
        data_modified_offline_ = true;
        reset("the data file was modified while rctd was not running (its size, inode or timestamps differ "
              "from the clean-shutdown record)");
    } else if (st.initialized && (!cur || (clean && !cur_fits))) {
        // current.map is missing, refused, or not the one a clean stop
        // writes: the changes it held are known nowhere else (persisting
        // cleared their intent bits), so every chunk counts as changed.
        log::warn("tracking {}: the live change map is unusable{}{}; marking the whole disk changed",
                  dir_.string(), problem.empty() ? "" : ": ", problem);
        recovered_ = true;
        recovery_excess_ = size_.load();
        everything();
    } else if (clean && cur_fits) {
        mark_runs(live, cur->runs);
    } else {
        // No (valid) clean seal: the daemon crashed or lost power.
        recovered_ = st.initialized;
        if (cur_fits) {
            mark_runs(live, cur->runs);
        }
        add_intent_regions(live, st.initialized, problem);
    }
    return cur;
}

void tracker_impl::add_intent_regions(live_map& live, bool initialized, const std::string& problem)
{
    const std::uint64_t chunks = live.bits.bits();
    const auto words = intent_->load();
    if (!words) {
        if (initialized) {
            log::warn("tracking {}: no valid intent bitmap{}{}; marking the whole disk changed", dir_.string(),
                      problem.empty() ? "" : ": ", problem);
            live.bits.set_range(0, chunks == 0 ? 0 : chunks - 1);
            recovery_excess_ = size_.load();
        }
        return;
    }
    const std::uint64_t per = region_size_ / granularity_;
    for (std::uint64_t reg = 0; reg < regions_for(size_.load()); ++reg) {
        if (((*words)[reg / 64] >> (reg % 64)) & 1) {
            const std::uint64_t a = reg * per;
            const std::uint64_t b = std::min(chunks, a + per);
            if (a < b) {
                live.bits.set_range(a, b - 1);
                recovery_excess_ += (b - a) * granularity_;
            }
        }
    }
    if (initialized) {
        log::notice("tracking {}: recovered after an unclean shutdown; {} MiB of intent regions counted as changed",
                    dir_.string(), recovery_excess_ >> 20);
    }
}

// The disk was resized while the tracker did not run (a resize completed at
// start from its resize_to record, or a crash before the resized map was
// persisted). The size it last knew: its persisted live map's, else (that
// file lost) the newest checkpoint's.
void tracker_impl::settle_size_change(const std::optional<current_state>& cur, live_map& live)
{
    if (!cur && sealed_.empty()) {
        return;
    }
    const std::uint64_t known_chunks = cur ? cur->chunks : chunks_for(sealed_.back().size);
    const std::uint64_t chunks = live.bits.bits();
    if (known_chunks < chunks) {
        // As in resize(): the new space and the old tail chunk changed.
        live.bits.set_range(known_chunks == 0 ? 0 : known_chunks - 1, chunks - 1);
    } else if (known_chunks > chunks && (!cur || cur->generation == generation_)) {
        reset_generation("the disk shrank from " + std::to_string(known_chunks) + " to " + std::to_string(chunks) +
                             " chunks while rctd was not running",
                         live.epoch);
    }
}

void tracker_impl::write_current_unless_retired(std::uint32_t generation, const live_map& m)
{
    rct::lock_guard lock(paths_mu_);
    if (!dir_gone_) {
        write_current(dir_, generation, m.epoch, m.bits.bits(), m.bits.runs());
    }
}

void tracker_impl::reset_generation(const std::string& reason, std::uint64_t live_epoch)
{
    ++generation_;
    reset_reason_ = reason;
    log_.append_reset(generation_, live_epoch, reason);
    sealed_.clear();
    log::warn("tracking {}: reset to generation {}: {}; older change tokens now require a full backup",
              dir_.string(), generation_, reason);
}

bool tracker_impl::begin_write(io_request& r, std::function<void(io_request&, int)> resume) noexcept
{
    const quiescence::guard g(readers_);
    std::uint64_t c0, c1;
    chunk_range(r, c0, c1);
    live_map* m = current_.load();
    m->bits.set_range(c0, std::min(c1, m->bits.bits() - 1));
    live_map* now = current_.load();
    if (now != m) {
        now->bits.set_range(c0, std::min(c1, now->bits.bits() - 1));
    }
    r.layer_tag = reinterpret_cast<std::uintptr_t>(now);

    const std::uint64_t r0 = r.offset / region_size_;
    const std::uint64_t r1 = (r.offset + std::max<std::uint64_t>(r.length, 1) - 1) / region_size_;
    bool ready = true;
    for (std::uint64_t g = r0; g <= r1 && g < region_capacity_; ++g) {
        if (!activity_->test(g)) {
            activity_->set_range(g, g);
        }
        ready = ready && durable_->test(g);
    }
    if (ready) {
        return true;
    }
    {
        rct::lock_guard lock(queue_mu_);
        // Capacity is reserved for the common case; beyond it push_back may
        // throw bad_alloc, which terminates: better than an untracked write.
        waiters_.push_back({&r, std::move(resume)});
    }
    queue_cv_.notify_one();
    return false;
}

void tracker_impl::end_write(io_request& r) noexcept
{
    const quiescence::guard g(readers_);
    live_map* now = current_.load();
    if (reinterpret_cast<std::uintptr_t>(now) != r.layer_tag) {
        std::uint64_t c0, c1;
        chunk_range(r, c0, c1);
        now->bits.set_range(c0, std::min(c1, now->bits.bits() - 1));
    }
}

void tracker_impl::start_thread()
{
    thread_ = std::thread([this] {
        ::pthread_setname_np(::pthread_self(), "rct-tracker");
        background();
    });
}

void tracker_impl::stop_thread()
{
    {
        rct::lock_guard lock(queue_mu_);
        stop_ = true;
    }
    queue_cv_.notify_one();
    if (thread_.joinable()) {
        thread_.join();
    }
}

void tracker_impl::background() noexcept
{
    auto next_persist = clock::now() + opts_.persist_interval;
    rct::unique_lock lock(queue_mu_);
    for (;;) {
        queue_cv_.wait_until(lock, next_persist, [&]() REQUIRES(queue_mu_) {
            return stop_ || !waiters_.empty() || !seals_.empty() || persist_now_ || !spare_;
        });
        if (stop_ && waiters_.empty() && seals_.empty()) {
            return;
        }
        // Intent commits first: writers are waiting on them.
        if (!waiters_.empty()) {
            std::vector<waiter> ws;
            ws.swap(waiters_);
            lock.unlock();
            commit_intents(ws);
            lock.lock();
            continue;
        }
        if (!seals_.empty()) {
            seal_request* req = seals_.front();
            seals_.pop_front();
            lock.unlock();
            try {
                req->meta.runs = req->map->bits.runs();
                log_.append_seal(req->meta);
                log_live_epoch_.store(req->meta.epoch + 1);
                {
                    rct::exclusive_lock st(state_mu_);
                    sealed_.push_back(req->meta);
                }
                req->done.set_value();
            } catch (...) {
                req->done.set_exception(std::current_exception());
            }
            lock.lock();
            continue;
        }
        if (!spare_) {
            lock.unlock();
            auto m = std::make_unique<live_map>(0, chunks_for(size_.load()));
            lock.lock();
            spare_ = std::move(m);
        }
        if (persist_now_ || clock::now() >= next_persist) {
            persist_now_ = false;
            lock.unlock();
            persist();
            lock.lock();
            next_persist = clock::now() + opts_.persist_interval;
            // Free replaced maps once no writer can still hold one.
            std::vector<live_map*> dead;
            if (!retired_.empty() && readers_.quiet()) {
                dead.swap(retired_);
            }
            if (!dead.empty()) {
                rct::exclusive_lock st(state_mu_);
                std::erase_if(owned_maps_, [&](auto& m) {
                    return std::find(dead.begin(), dead.end(), m.get()) != dead.end();
                });
            }
        }
    }
}

void tracker_impl::commit_intents(std::vector<waiter>& ws) noexcept
{
    for (const waiter& w : ws) {
        const std::uint64_t r0 = w.r->offset / region_size_;
        const std::uint64_t r1 = (w.r->offset + std::max<std::uint64_t>(w.r->length, 1) - 1) / region_size_;
        for (std::uint64_t g = r0; g <= r1 && g < region_capacity_; ++g) {
            intent_image_[g / 64] |= std::uint64_t{1} << (g % 64);
        }
    }
    int err = 0;
    try {
        intent_->store(intent_image_);
        for (std::uint64_t i = 0; i < intent_image_.size(); ++i) {
            durable_->or_word(i, intent_image_[i]);
        }
    } catch (const std::exception& e) {
        log::error("tracking {}: cannot commit write intent: {}; failing the writes", dir_.string(), e.what());
        err = -EIO;
    }
    for (waiter& w : ws) {
        resume_on_owner(*w.r, std::move(w.resume), err);
    }
}

bool tracker_impl::persist() noexcept
{
    try {
        const std::uint64_t words = (region_capacity_ + 63) / 64;
        std::vector<std::uint64_t> active(words);
        for (std::uint64_t i = 0; i < words; ++i) {
            active[i] = activity_->exchange_word(i, 0);
        }
        live_map* m = current_.load();
        if (m->epoch != log_live_epoch_.load()) {
            // A cut whose seal is not yet in the log: persist next time.
            // Put the activity back so no intent bit is cleared meanwhile.
            for (std::uint64_t i = 0; i < words; ++i) {
                activity_->or_word(i, active[i]);
            }
            return true;
        }
        std::uint32_t gen;
        {
            rct::shared_lock st(state_mu_);
            gen = generation_;
        }
        write_current_unless_retired(gen, *m);
        bool changed = false;
        for (std::uint64_t i = 0; i < words; ++i) {
            std::uint64_t clear = intent_image_[i] & ~active[i];
            while (clear != 0) {
                const unsigned b = static_cast<unsigned>(__builtin_ctzll(clear));
                clear &= clear - 1;
                const std::uint64_t g = i * 64 + b;
                durable_->clear_bit(g);
                if (activity_->test(g)) {
                    durable_->set_range(g, g);  // a writer got in: keep it
                    continue;
                }
                intent_image_[i] &= ~(std::uint64_t{1} << b);
                changed = true;
            }
        }
        if (changed) {
            intent_->store(intent_image_);
        }
        return true;
    } catch (const std::exception& e) {
        // Intent bits stay set, so nothing is lost; the excess just grows.
        log::limited(persist_failures_, log::level::err, "tracking {}: cannot persist the change map: {}",
                     dir_.string(), e.what());
        return false;
    }
}

std::unique_ptr<live_map> tracker_impl::take_spare(std::uint64_t epoch)
{
    std::unique_ptr<live_map> m;
    {
        rct::lock_guard lock(queue_mu_);
        m = std::move(spare_);
    }
    queue_cv_.notify_one();  // the background thread prepares the next one
    const std::uint64_t chunks = chunks_for(size_.load());
    if (!m || m->bits.bits() != chunks) {
        m = std::make_unique<live_map>(epoch, chunks);
    }
    m->epoch = epoch;
    return m;
}

void tracker_impl::retire(live_map* m)
{
    rct::lock_guard lock(queue_mu_);
    retired_.push_back(m);
}

std::string tracker_impl::token_for(const sealed_epoch& s) const
{
    token_fields t;
    if (auto id = parse_uuid(disk_id_)) {
        t.disk_id = *id;
    }
    t.generation = generation_;
    t.epoch = s.epoch;
    t.size = s.size;
    t.granularity = granularity_;
    return encode_token(t);
}

checkpoint_info tracker_impl::info_of(const sealed_epoch& s) const
{
    return {s.name, s.epoch, s.created_at, s.size, token_for(s), 0, generation_};
}

checkpoint_info tracker_impl::checkpoint(std::optional<std::string> name,
                                         const std::function<void(std::uint64_t)>& after_cut)
{
    rct::lock_guard mg(mgmt_mu_);
    live_map* old = current_.load();
    const std::uint64_t epoch = old->epoch;
    std::string n = name.value_or("cp-" + std::to_string(epoch));
    if (!valid_checkpoint_name(n)) {
        throw error(errc::invalid_argument,
                    "invalid checkpoint name '" + n + "': use 1-128 of A-Z a-z 0-9 . _ - :, not starting with rct1.");
    }
    {
        rct::shared_lock st(state_mu_);
        for (const auto& s : sealed_) {
            if (s.name == n) {
                throw error(errc::exists, "checkpoint '" + n + "' already exists");
            }
        }
    }
    auto fresh = take_spare(epoch + 1);
    live_map* fresh_raw = fresh.get();
    {
        rct::exclusive_lock st(state_mu_);
        owned_maps_.push_back(std::move(fresh));
    }
    // The cut: from this store on, new writes mark the new epoch. Nothing
    // before it affected I/O (writes went on into the old epoch), so the
    // cut's duration is this store, timed to show it.
    const auto cut_start = clock::now();
    current_.store(fresh_raw);
    const auto cut_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - cut_start).count());
    if (after_cut) {
        after_cut(epoch);
    }

    seal_request req{old, {epoch, static_cast<std::int64_t>(::time(nullptr)), size_.load(), n, {}}, {}};
    auto done = req.done.get_future();
    {
        rct::lock_guard lock(queue_mu_);
        seals_.push_back(&req);
    }
    queue_cv_.notify_one();
    try {
        done.get();
    } catch (...) {
        // The seal is not durable: give its changes back to the live epoch
        // so that nothing is lost, and report the failure.
        for (const run& r : old->bits.runs()) {
            fresh_raw->bits.set_range(r.start, std::min(r.start + r.count, fresh_raw->bits.bits()) - 1);
        }
        fresh_raw->epoch = epoch;
        retire(old);
        throw;  // log_live_epoch_ still equals epoch: persisting resumes
    }
    retire(old);
    rct::shared_lock st(state_mu_);
    auto info = info_of(sealed_.back());
    info.cut_ns = cut_ns;
    return info;
}

std::vector<checkpoint_info> tracker_impl::checkpoints() const
{
    rct::shared_lock st(state_mu_);
    std::vector<checkpoint_info> out;
    for (const auto& s : sealed_) {
        out.push_back(info_of(s));
    }
    return out;
}

void tracker_impl::delete_checkpoint(const std::string& name)
{
    rct::lock_guard mg(mgmt_mu_);
    rct::exclusive_lock st(state_mu_);
    auto it = std::find_if(sealed_.begin(), sealed_.end(), [&](const auto& s) { return s.name == name; });
    if (it == sealed_.end()) {
        throw error(errc::not_found, "no checkpoint named '" + name + "'");
    }
    log_.append_delete(it->epoch);
    if (std::next(it) != sealed_.end()) {
        auto& next = std::next(it)->runs;
        next.insert(next.end(), it->runs.begin(), it->runs.end());
        normalize(next);
    } else {
        live_map* m = current_.load();
        for (const run& r : it->runs) {
            if (r.start < m->bits.bits()) {
                m->bits.set_range(r.start, std::min(r.start + r.count, m->bits.bits()) - 1);
            }
        }
    }
    sealed_.erase(it);
}

std::uint64_t tracker_impl::resolve(const std::string& ref, const char* what) const
{
    if (ref.substr(0, token_prefix.size()) != token_prefix) {
        for (const auto& s : sealed_) {
            if (s.name == ref) {
                return s.epoch;
            }
        }
        throw error(errc::not_found,
                    std::string("no checkpoint named '") + ref + "' (" + what + ")" +
                        (reset_reason_.empty() ? ""
                                               : "; note that tracking was reset (" + reset_reason_ +
                                                     "): if it existed before, a full backup is required"));
    }
    const auto t = decode_token(ref);
    if (!t) {
        throw error(errc::full_backup_required,
                    std::string("the '") + what + "' token is malformed (damaged or not an rct change token); "
                    "a full backup is required");
    }
    const auto id = parse_uuid(disk_id_);
    if (!id || *id != t->disk_id) {
        throw error(errc::full_backup_required,
                    std::string("the '") + what + "' token was issued for another disk (or for an earlier disk "
                    "of this name that was deleted and recreated); a full backup is required");
    }
    if (t->generation != generation_) {
        throw error(errc::full_backup_required,
                    std::string("change tracking of this disk was reset after the '") + what + "' token was issued" +
                        (reset_reason_.empty() ? "" : " (" + reset_reason_ + ")") + "; a full backup is required");
    }
    if (t->granularity != granularity_) {
        throw error(errc::full_backup_required, std::string("the '") + what +
                                                     "' token does not match this disk's tracking granularity; "
                                                     "a full backup is required");
    }
    for (const auto& s : sealed_) {
        if (s.epoch == t->epoch) {
            return s.epoch;
        }
    }
    if (t->epoch < dropped_below_) {
        throw error(errc::full_backup_required, std::string("the checkpoint of the '") + what +
                                                     "' token was dropped when tracking was reset (" +
                                                     reset_reason_ + "); a full backup is required");
    }
    throw error(errc::full_backup_required,
                std::string("the checkpoint of the '") + what +
                    "' token no longer exists (it was deleted); a full backup is required");
}

std::vector<std::uint64_t> tracker_impl::union_words(std::uint64_t since, std::optional<std::uint64_t> until,
                                                     std::uint64_t w0, std::uint64_t w1) const
{
    std::vector<std::uint64_t> w(w1 - w0, 0);
    const std::uint64_t base = w0 * 64;
    const std::uint64_t end = w1 * 64;
    for (const auto& s : sealed_) {
        if (s.epoch <= since || (until && s.epoch > *until)) {
            continue;
        }
        auto it = std::partition_point(s.runs.begin(), s.runs.end(),
                                       [&](const run& r) { return r.start + r.count <= base; });
        for (; it != s.runs.end() && it->start < end; ++it) {
            set_bits(w, base, std::max(it->start, base), std::min(it->start + it->count, end));
        }
    }
    if (!until) {
        live_map* m = current_.load();
        const std::uint64_t lim = std::min(w1, m->bits.words());
        for (std::uint64_t i = w0; i < lim; ++i) {
            w[i - w0] |= m->bits.word(i);
        }
    }
    return w;
}

changes_page tracker_impl::changes(const std::string& since, const std::optional<std::string>& until,
                                   std::uint64_t cursor, std::size_t limit) const
{
    rct::shared_lock st(state_mu_);
    changes_page page;
    page.generation = generation_;
    page.since_epoch = resolve(since, "since");
    if (until) {
        page.until_epoch = resolve(*until, "until");
        if (*page.until_epoch <= page.since_epoch) {
            throw error(errc::invalid_argument, "until must name a checkpoint newer than since");
        }
    }
    const std::uint64_t size = size_.load();
    const std::uint64_t chunks = chunks_for(size);
    const std::uint64_t first = std::min(cursor / granularity_, chunks);
    const std::uint64_t w0 = first / 64;
    const std::uint64_t w1 = (chunks + 63) / 64;
    const auto w = union_words(page.since_epoch, page.until_epoch, w0, w1);
    std::uint64_t c = first;
    while (c < chunks) {
        // Find the next set bit at or after c.
        std::uint64_t wi = c / 64 - w0;
        std::uint64_t v = w[wi] & (~std::uint64_t{0} << (c % 64));
        while (v == 0 && ++wi < w.size()) {
            v = w[wi];
        }
        if (v == 0) {
            break;
        }
        const std::uint64_t start = (wi + w0) * 64 + static_cast<std::uint64_t>(__builtin_ctzll(v));
        if (start >= chunks) {
            break;
        }
        if (page.extents.size() == limit) {
            page.next_cursor = start * granularity_;
            break;
        }
        // Find the end of the run.
        std::uint64_t e = start;
        wi = e / 64 - w0;
        v = ~w[wi] & (~std::uint64_t{0} << (e % 64));
        while (v == 0 && ++wi < w.size()) {
            v = ~w[wi];
        }
        e = v == 0 ? chunks : std::min(chunks, (wi + w0) * 64 + static_cast<std::uint64_t>(__builtin_ctzll(v)));
        const std::uint64_t off = start * granularity_;
        page.extents.push_back({off, std::min(e * granularity_, size) - off});
        c = e;
    }
    return page;
}

int tracker_impl::dirty_map(std::uint32_t generation, std::uint64_t since_epoch,
                            std::optional<std::uint64_t> until_epoch, std::uint64_t offset, std::uint64_t length,
                            std::size_t max_extents, std::vector<extent>& out) const
{
    rct::shared_lock st(state_mu_);
    const auto sealed = [&](std::uint64_t e) REQUIRES_SHARED(state_mu_) {
        return std::any_of(sealed_.begin(), sealed_.end(), [&](const sealed_epoch& s) { return s.epoch == e; });
    };
    if (generation != generation_ || !sealed(since_epoch) || (until_epoch && !sealed(*until_epoch))) {
        return -ESTALE;
    }
    const std::uint64_t end = offset + length;
    const std::uint64_t c0 = offset / granularity_;
    const std::uint64_t c1 = (end + granularity_ - 1) / granularity_;
    const auto w = union_words(since_epoch, until_epoch, c0 / 64, (c1 + 63) / 64);
    const std::uint64_t base = c0 / 64 * 64;
    std::uint64_t pos = offset;
    std::size_t added = 0;
    for (std::uint64_t c = c0; c < c1 && added < max_extents; ++c) {
        const bool dirty = (w[(c - base) / 64] >> ((c - base) % 64)) & 1;
        const std::uint64_t stop = std::min(end, (c + 1) * granularity_);
        const std::uint32_t flags = dirty ? 1 : 0;
        if (!out.empty() && added > 0 && out.back().flags == flags) {
            out.back().length += stop - pos;
        } else {
            out.push_back({stop - pos, flags});
            ++added;
        }
        pos = stop;
    }
    return 0;
}

std::optional<std::uint64_t> tracker_impl::checkpoint_epoch(const std::string& name) const
{
    rct::shared_lock st(state_mu_);
    for (const auto& s : sealed_) {
        if (s.name == name) {
            return s.epoch;
        }
    }
    return std::nullopt;
}

void tracker_impl::check_resize(std::uint64_t new_size) const
{
    if (regions_for(new_size) > region_capacity_) {
        throw error(errc::invalid_argument, "the disk cannot grow more than 4x while rctd runs; restart rctd first");
    }
}

void tracker_impl::resize(std::uint64_t new_size)
{
    rct::lock_guard mg(mgmt_mu_);
    const std::uint64_t old_size = size_.load();
    if (new_size == old_size) {
        return;
    }
    check_resize(new_size);
    live_map* old = current_.load();
    auto bigger = std::make_unique<live_map>(old->epoch, chunks_for(new_size));
    live_map* raw = bigger.get();
    {
        rct::exclusive_lock st(state_mu_);
        owned_maps_.push_back(std::move(bigger));
        if (new_size < old_size) {
            reset_generation("the disk shrank from " + std::to_string(old_size) + " to " + std::to_string(new_size) +
                                 " bytes",
                             old->epoch);
        }
    }
    current_.store(raw);
    size_.store(new_size);
    // Copy after the swap: a late mark on the old map is re-made on the new
    // one by its writer's re-check.
    const std::uint64_t words = std::min(old->bits.words(), raw->bits.words());
    for (std::uint64_t i = 0; i < words; ++i) {
        raw->bits.or_word(i, old->bits.word(i));
    }
    if (new_size > old_size) {
        // New space (and the old tail chunk) counts as changed.
        raw->bits.set_range(old_size / granularity_, chunks_for(new_size) - 1);
    }
    retire(old);
    {
        rct::lock_guard lock(queue_mu_);
        spare_.reset();
        persist_now_ = true;
    }
    queue_cv_.notify_one();
}

tracking_status tracker_impl::status() const
{
    rct::shared_lock st(state_mu_);
    tracking_status s;
    s.active = true;
    s.reason = reset_reason_;
    s.generation = generation_;
    s.granularity = granularity_;
    s.region_size = region_size_;
    s.current_epoch = current_.load()->epoch;
    s.checkpoints = sealed_.size();
    s.recovered_after_crash = recovered_;
    s.recovery_excess_bytes = recovery_excess_;
    s.data_modified_offline = data_modified_offline_;
    return s;
}

void tracker_impl::close_clean(const file_identity& data)
{
    rct::lock_guard mg(mgmt_mu_);
    stop_thread();
    if (!persist()) {
        throw error(errc::io_error, "cannot persist change tracking of " + dir_.string() +
                                        "; the next start will recover from the intent bitmap");
    }
    rct::lock_guard pl(paths_mu_);
    if (dir_gone_) {
        return;
    }
    rct::shared_lock st(state_mu_);
    write_clean(dir_, generation_, current_.load()->epoch, data);
}

tracker_handoff tracker_impl::hand_off()
{
    rct::lock_guard mg(mgmt_mu_);
    stop_thread();
    rct::shared_lock st(state_mu_);
    const live_map* m = current_.load();
    tracker_handoff h{generation_, m->epoch, m->bits.bits(), {}};
    for (const run& r : m->bits.runs()) {
        h.runs.push_back({r.start, r.count});
    }
    return h;
}

void tracker_impl::retire()
{
    rct::lock_guard lock(paths_mu_);
    dir_gone_ = true;
}

}  // namespace
}  // namespace rct::tracking

namespace rct {

std::unique_ptr<tracker> tracker::open(const std::filesystem::path& dir, const std::string& disk_id,
                                       std::uint64_t size, const file_identity& data, const tracker_options& opts,
                                       std::uint64_t min_live_epoch, const tracker_handoff* warm)
{
    persist::make_dirs(dir);
    auto t = std::make_unique<tracking::tracker_impl>(dir, disk_id, size, opts);
    t->open(data, min_live_epoch, warm);
    return t;
}

}  // namespace rct
