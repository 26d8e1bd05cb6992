#include "index.hh"

#include "../tracking/rules.hh"

#include <rct/error.hh>

#include <algorithm>
#include <ctime>

namespace rct::snapshots {
namespace {

using persist::payload_reader;
using persist::payload_writer;

inline constexpr std::uint32_t index_magic = 0x504e5352;  // "RSNP" in memory order

enum record_type : std::uint16_t {
    rec_init = 1,
    rec_snap = 2,
    rec_drop = 3,
    rec_invalid = 4,
    rec_copies = 5,
    rec_free = 6,
};

// Keeps records well below the format's 4 GiB limit and replay memory small.
constexpr std::size_t max_entries_per_record = max_copies_per_record;

std::vector<std::uint8_t> snap_payload(const snapshot_record& s)
{
    payload_writer w;
    w.put(s.epoch).put(s.generation).put(s.created_at).put(s.size).put_string(s.name);
    return w.buf;
}

snapshot_record read_snap(payload_reader& r)
{
    snapshot_record s;
    s.epoch = r.get<std::uint64_t>();
    s.generation = r.get<std::uint32_t>();
    s.created_at = r.get<std::int64_t>();
    s.size = r.get<std::uint64_t>();
    s.name = r.get_string();
    if (s.epoch == 0 || !tracking::valid_checkpoint_name(s.name)) {
        throw error(errc::corrupt, "SNAP: epoch 0 or an invalid name");
    }
    return s;
}

std::vector<std::uint8_t> invalid_payload(const std::vector<std::uint64_t>& epochs, const std::string& reason)
{
    payload_writer w;
    w.put_string(reason.substr(0, 1000)).put<std::uint32_t>(static_cast<std::uint32_t>(epochs.size()));
    for (auto e : epochs) {
        w.put(e);
    }
    return w.buf;
}

}  // namespace

store_index::store_index(const std::filesystem::path& dir) : log_(dir / "index.log", index_magic)
{
    const auto res = log_.replay([&](std::uint16_t type, payload_reader& r) { replay_record(type, r); });
    if (res.damage.empty()) {
        try {
            check_slots_unique();
        } catch (const error& e) {
            damage_ = e.what();
        }
    } else {
        damage_ = res.damage;
    }
    if (!damage_.empty()) {
        for (const auto& [e, s] : snaps_) {
            salvaged_.push_back(s);
        }
        salvage(log_.read_all(), res.valid_bytes + 1);
    }
}

void store_index::salvage(const std::vector<std::uint8_t>& bytes, std::size_t from)
{
    persist::record_log::salvage(bytes.data(), bytes.size(), from, index_magic,
                                 [&](std::uint16_t type, payload_reader& r) {
                                     if (type == rec_snap) {
                                         snapshot_record s = read_snap(r);
                                         if (std::none_of(salvaged_.begin(), salvaged_.end(),
                                                          [&](auto& x) { return x.epoch == s.epoch; })) {
                                             salvaged_.push_back(std::move(s));
                                         }
                                     } else if (type == rec_drop) {
                                         const auto e = r.get<std::uint64_t>();
                                         std::erase_if(salvaged_, [&](auto& x) { return x.epoch == e; });
                                     }
                                 });
}

void store_index::replay_record(std::uint16_t type, payload_reader& r)
{
    switch (type) {
    case rec_init:
        granularity_ = r.get<std::uint32_t>();
        created_at_ = r.get<std::int64_t>();
        disk_id_ = r.get_string();
        if (!tracking::valid_granularity(granularity_)) {
            throw error(errc::corrupt, "INIT: impossible granularity");
        }
        break;
    case rec_snap: {
        snapshot_record s = read_snap(r);
        max_epoch_ = std::max(max_epoch_, s.epoch);
        snaps_[s.epoch] = std::move(s);
        break;
    }
    case rec_drop:
        snaps_.erase(r.get<std::uint64_t>());
        break;
    case rec_invalid: {
        const std::string reason = r.get_string();
        const auto n = r.get<std::uint32_t>();
        if (n > r.remaining() / 8) {
            throw error(errc::corrupt, "INVALID: count exceeds record");
        }
        for (std::uint32_t i = 0; i < n; ++i) {
            if (auto it = snaps_.find(r.get<std::uint64_t>()); it != snaps_.end()) {
                it->second.invalid_reason = reason.empty() ? "marked invalid" : reason;
            }
        }
        break;
    }
    case rec_copies:
        replay_copies(r);
        break;
    case rec_free:
        replay_free(r);
        break;
    default:
        throw error(errc::corrupt, "unknown record type " + std::to_string(type));
    }
    if (type != rec_init && granularity_ == 0) {
        throw error(errc::corrupt, "the first record is not INIT");
    }
}

void store_index::replay_copies(payload_reader& r)
{
    const auto n = r.get<std::uint32_t>();
    if (n > r.remaining() / 32) {
        throw error(errc::corrupt, "COPIES: count exceeds record");
    }
    last_copies_.clear();
    for (std::uint32_t i = 0; i < n; ++i) {
        new_copy nc;
        nc.chunk = r.get<std::uint64_t>();
        nc.c.label = r.get<std::uint64_t>();
        nc.c.slot = r.get<std::uint64_t>();
        nc.sum = r.get<std::uint64_t>();
        const std::uint64_t max_index = ~std::uint64_t{0} / std::max<std::uint32_t>(granularity_, 1);
        if (nc.c.label == 0 || nc.chunk >= max_index || (nc.c.slot != zero_slot && nc.c.slot >= max_index)) {
            throw error(errc::corrupt, "COPIES: a copy with label 0 or a chunk or slot past any file");
        }
        // rct 0.1 left a COPIES record whose sync failed in the log, and a
        // later one may copy the chunk again under the same label: the
        // later record is the one that was acknowledged.
        if (const auto it = copies_.find(nc.chunk); it != copies_.end()) {
            ncopies_ -= static_cast<std::uint64_t>(
                std::erase_if(it->second, [&](const copy& c) { return c.label == nc.c.label; }));
        }
        last_copies_.push_back(nc);
        apply_copy(nc);
    }
}

void store_index::replay_free(payload_reader& r)
{
    const auto n = r.get<std::uint32_t>();
    if (n > r.remaining() / 16) {
        throw error(errc::corrupt, "FREE: count exceeds record");
    }
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto chunk = r.get<std::uint64_t>();
        const auto label = r.get<std::uint64_t>();
        auto it = copies_.find(chunk);
        if (it == copies_.end()) {
            continue;
        }
        auto& v = it->second;
        auto c = std::find_if(v.begin(), v.end(), [&](const copy& x) { return x.label == label; });
        if (c != v.end()) {
            v.erase(c);
            --ncopies_;
        }
        if (v.empty()) {
            copies_.erase(it);
        }
    }
}

// Two copies in one slot would let freeing one destroy the other.
void store_index::check_slots_unique() const
{
    const auto used = used_slots();
    if (std::adjacent_find(used.begin(), used.end()) != used.end()) {
        throw error(errc::corrupt, log_.path().string() + ": two chunk copies share a slot");
    }
}

void store_index::init(std::uint32_t granularity, const std::string& disk_id)
{
    payload_writer w;
    const auto now = static_cast<std::int64_t>(::time(nullptr));
    w.put(granularity).put(now).put_string(disk_id);
    std::lock_guard lk(log_mu_);
    log_.append(rec_init, w.buf);
    granularity_ = granularity;
    created_at_ = now;
    disk_id_ = disk_id;
}

void store_index::log_snapshot(const snapshot_record& s)
{
    std::lock_guard lk(log_mu_);
    log_.append(rec_snap, snap_payload(s));
}

void store_index::apply_snapshot(const snapshot_record& s)
{
    max_epoch_ = std::max(max_epoch_, s.epoch);
    snaps_[s.epoch] = s;
}

void store_index::log_drop(std::uint64_t epoch)
{
    payload_writer w;
    w.put(epoch);
    std::lock_guard lk(log_mu_);
    log_.append(rec_drop, w.buf);
}

void store_index::apply_drop(std::uint64_t epoch)
{
    snaps_.erase(epoch);
}

void store_index::log_invalid(const std::vector<std::uint64_t>& epochs, const std::string& reason)
{
    if (!epochs.empty()) {
        std::lock_guard lk(log_mu_);
        log_.append(rec_invalid, invalid_payload(epochs, reason));
    }
}

void store_index::apply_invalid(const std::vector<std::uint64_t>& epochs, const std::string& reason)
{
    for (auto e : epochs) {
        if (auto it = snaps_.find(e); it != snaps_.end()) {
            it->second.invalid_reason = reason;
        }
    }
}

void store_index::write_copies(const std::vector<new_copy>& copies)
{
    if (copies.size() > max_entries_per_record) {
        throw error(errc::invalid_argument, "too many copies for one record");
    }
    payload_writer w;
    w.put<std::uint32_t>(static_cast<std::uint32_t>(copies.size()));
    for (const auto& nc : copies) {
        w.put(nc.chunk).put(nc.c.label).put(nc.c.slot).put(nc.sum);
    }
    // Held until sync_log: an append in between whose sync failed would cut
    // this record off with its own, behind the copier's back.
    std::unique_lock lk(log_mu_);
    log_.write(rec_copies, w.buf);
    pending_copies_ = std::move(lk);
}

void store_index::sync_log()
{
    std::unique_lock lk = pending_copies_.owns_lock() ? std::move(pending_copies_) : std::unique_lock(log_mu_);
    log_.sync();
}

void store_index::apply_copies(const std::vector<new_copy>& copies)
{
    for (const auto& nc : copies) {
        apply_copy(nc);
    }
}

void store_index::apply_copy(const new_copy& nc)
{
    auto& v = copies_[nc.chunk];
    auto at = std::upper_bound(v.begin(), v.end(), nc.c.label,
                               [](std::uint64_t l, const copy& c) { return l < c.label; });
    v.insert(at, nc.c);
    ++ncopies_;
    max_epoch_ = std::max(max_epoch_, nc.c.label);
}

// Copy i of a chunk (labels ascending) is what snapshot S reads when S's
// epoch lies in (label of copy i-1, label of copy i]; it is needed while a
// valid snapshot lies there.
bool store_index::needed(const std::vector<copy>& v, std::size_t i) const
{
    const std::uint64_t lo = i == 0 ? 0 : v[i - 1].label;
    for (auto it = snaps_.upper_bound(lo); it != snaps_.end() && it->first <= v[i].label; ++it) {
        if (it->second.invalid_reason.empty()) {
            return true;
        }
    }
    return false;
}

std::vector<new_copy> store_index::garbage() const
{
    std::vector<new_copy> dead;
    for (const auto& [chunk, v] : copies_) {
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (!needed(v, i)) {
                dead.push_back({chunk, v[i]});
            }
        }
    }
    return dead;
}

void store_index::log_free(const std::vector<new_copy>& dead)
{
    std::lock_guard lk(log_mu_);
    for (std::size_t first = 0; first < dead.size(); first += max_entries_per_record) {
        const std::size_t n = std::min(max_entries_per_record, dead.size() - first);
        payload_writer w;
        w.put<std::uint32_t>(static_cast<std::uint32_t>(n));
        for (std::size_t i = first; i < first + n; ++i) {
            w.put(dead[i].chunk).put(dead[i].c.label);
        }
        log_.append(rec_free, w.buf);
    }
}

std::vector<std::uint64_t> store_index::apply_free(const std::vector<new_copy>& dead)
{
    std::vector<std::uint64_t> slots;
    for (const auto& d : dead) {
        auto it = copies_.find(d.chunk);
        if (it == copies_.end()) {
            continue;
        }
        auto& v = it->second;
        std::erase_if(v, [&](const copy& x) { return x.label == d.c.label; });
        if (v.empty()) {
            copies_.erase(it);
        }
        --ncopies_;
        if (d.c.slot != zero_slot) {
            slots.push_back(d.c.slot);
        }
    }
    return slots;
}

source store_index::lookup(std::uint64_t chunk, std::uint64_t epoch) const
{
    auto it = copies_.find(chunk);
    if (it != copies_.end()) {
        for (const copy& c : it->second) {
            if (c.label >= epoch) {
                return c.slot == zero_slot ? source{source::zero, 0} : source{source::slot, c.slot};
            }
        }
    }
    return {source::live, 0};
}

bool store_index::preserved_since(std::uint64_t chunk, std::uint64_t epoch) const
{
    auto it = copies_.find(chunk);
    return it != copies_.end() && !it->second.empty() && it->second.back().label >= epoch;
}

std::vector<std::uint64_t> store_index::readers_of_live(std::uint64_t chunk) const
{
    std::uint64_t newest_copy = 0;
    if (auto it = copies_.find(chunk); it != copies_.end() && !it->second.empty()) {
        newest_copy = it->second.back().label;
    }
    std::vector<std::uint64_t> out;
    for (auto it = snaps_.upper_bound(newest_copy); it != snaps_.end(); ++it) {
        if (it->second.invalid_reason.empty()) {
            out.push_back(it->first);
        }
    }
    return out;
}

std::vector<std::uint64_t> store_index::used_slots() const
{
    std::vector<std::uint64_t> out;
    for (const auto& [chunk, v] : copies_) {
        for (const copy& c : v) {
            if (c.slot != zero_slot) {
                out.push_back(c.slot);
            }
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::map<std::uint64_t, std::uint64_t> store_index::exclusive_slots() const
{
    std::map<std::uint64_t, std::uint64_t> out;
    for (const auto& [chunk, v] : copies_) {
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (v[i].slot == zero_slot) {
                continue;
            }
            const std::uint64_t lo = i == 0 ? 0 : v[i - 1].label;
            std::uint64_t only = 0;
            unsigned users = 0;
            for (auto it = snaps_.upper_bound(lo); it != snaps_.end() && it->first <= v[i].label; ++it) {
                ++users;
                only = it->first;
            }
            if (users == 1) {
                ++out[only];
            }
        }
    }
    return out;
}

std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>> store_index::live_records() const
{
    std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>> recs;
    payload_writer init;
    init.put(granularity_).put(created_at_).put_string(disk_id_);
    recs.emplace_back(rec_init, init.buf);
    for (const auto& [e, s] : snaps_) {
        recs.emplace_back(rec_snap, snap_payload(s));
        if (!s.invalid_reason.empty()) {
            recs.emplace_back(rec_invalid, invalid_payload({e}, s.invalid_reason));
        }
    }
    payload_writer w;
    std::uint32_t n = 0;
    auto flush = [&] {
        if (n != 0) {
            payload_writer head;
            head.put(n);
            head.buf.insert(head.buf.end(), w.buf.begin(), w.buf.end());
            recs.emplace_back(rec_copies, std::move(head.buf));
            w.buf.clear();
            n = 0;
        }
    };
    // Compaction happens after the open-time check of the last batch, so
    // every copy here is verified: checksums 0 mean "not to be checked".
    for (const auto& [chunk, v] : copies_) {
        for (const copy& c : v) {
            w.put(chunk).put(c.label).put(c.slot).put(std::uint64_t{0});
            if (++n == max_entries_per_record) {
                flush();
            }
        }
    }
    flush();
    return recs;
}

void store_index::compact_if_worthwhile()
{
    // A live copy costs 32 bytes in a COPIES record; rewrite when the log
    // is more than twice what it would be, and at least 4 MiB bigger.
    const std::uint64_t live = ncopies_ * 32 + snaps_.size() * 200 + 4096;
    if (log_.size() > 2 * live && log_.size() - live > (std::uint64_t{4} << 20)) {
        std::lock_guard lk(log_mu_);
        log_.rewrite(live_records());
    }
}

}  // namespace rct::snapshots
