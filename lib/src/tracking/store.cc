#include "store.hh"

#include "rules.hh"

#include "../persist/durable_file.hh"

#include <rct/error.hh>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rct::tracking {
namespace {

namespace fs = std::filesystem;
using namespace persist;

using persist::payload_reader;
using persist::payload_writer;

void put_runs(payload_writer& w, const std::vector<run>& runs)
{
    w.put<std::uint64_t>(runs.size());
    for (const run& r : runs) {
        w.put<std::uint64_t>(r.start).put<std::uint64_t>(r.count);
    }
}

std::vector<run> get_runs(payload_reader& r)
{
    const auto n = r.get<std::uint64_t>();
    if (n > r.remaining() / 16) {
        throw error(errc::corrupt, "run count exceeds record");
    }
    std::vector<run> runs(n);
    for (auto& x : runs) {
        x.start = r.get<std::uint64_t>();
        x.count = r.get<std::uint64_t>();
    }
    return runs;
}

std::vector<std::uint8_t> init_payload(std::uint32_t generation, std::uint32_t granularity,
                                       std::uint64_t region_size, const std::string& disk_id)
{
    payload_writer w;
    w.put(generation).put(granularity).put(region_size).put<std::int64_t>(::time(nullptr)).put_string(disk_id);
    return std::move(w.buf);
}

std::vector<std::uint8_t> seal_payload(const sealed_epoch& s)
{
    payload_writer w;
    w.put(s.epoch).put(s.created_at).put(s.size).put_string(s.name);
    put_runs(w, s.runs);
    return std::move(w.buf);
}

std::vector<std::uint8_t> reset_payload(std::uint32_t generation, std::uint64_t next_epoch, const std::string& reason)
{
    payload_writer w;
    w.put(generation).put(next_epoch).put_string(reason.substr(0, 1000));
    return std::move(w.buf);
}

// DELETE and ADVANCE: one epoch number.
std::vector<std::uint8_t> epoch_payload(std::uint64_t epoch)
{
    payload_writer w;
    w.put(epoch);
    return std::move(w.buf);
}

// SEAL: consecutive epochs, valid names, runs inside the size at the cut.
// Right after damage that was passed over (gap_allowed) the epoch may jump:
// the damaged record may have been a seal or an advance.
void replay_seal(log_state& st, payload_reader& r, bool gap_allowed)
{
    sealed_epoch s;
    s.epoch = r.get<std::uint64_t>();
    s.created_at = r.get<std::int64_t>();
    s.size = r.get<std::uint64_t>();
    s.name = r.get_string();
    s.runs = get_runs(r);
    if (!st.initialized || !valid_checkpoint_name(s.name)) {
        throw error(errc::corrupt, "SEAL before INIT, or with an invalid checkpoint name");
    }
    check_runs(s.runs, (s.size + st.granularity - 1) / st.granularity, "SEAL");
    if (s.epoch != st.next_epoch && !(gap_allowed && s.epoch > st.next_epoch)) {
        throw error(errc::corrupt, "seal of epoch " + std::to_string(s.epoch) + " out of order (expected " +
                                       std::to_string(st.next_epoch) + ")");
    }
    st.next_epoch = s.epoch + 1;
    st.advanced_from = 0;
    if (!st.sealed.empty() && st.sealed.back().name.empty()) {
        // The previous checkpoint was deleted while it was the newest: its
        // changes went into this epoch.
        s.runs.insert(s.runs.end(), st.sealed.back().runs.begin(), st.sealed.back().runs.end());
        normalize(s.runs);
        st.sealed.pop_back();
    }
    st.sealed.push_back(std::move(s));
}

// DELETE: the checkpoint's runs merge into the next sealed epoch; if it was
// the newest, into the live epoch (marked by an empty name; open merges it).
void replay_delete(log_state& st, std::uint64_t epoch)
{
    const auto it = std::find_if(st.sealed.begin(), st.sealed.end(), [&](const auto& s) { return s.epoch == epoch; });
    if (it == st.sealed.end()) {
        return;
    }
    if (const auto next = std::next(it); next != st.sealed.end()) {
        next->runs.insert(next->runs.end(), it->runs.begin(), it->runs.end());
        normalize(next->runs);  // readers binary-search run lists
        st.sealed.erase(it);
    } else {
        it->name.clear();
    }
}

void replay_advance(log_state& st, std::uint64_t next)
{
    if (next < st.next_epoch) {
        throw error(errc::corrupt, "epoch advance goes backwards");
    }
    if (st.advanced_from == 0) {
        st.advanced_from = st.next_epoch;
    }
    st.next_epoch = next;
}

// Damage that a log can be read past without a wrong answer: a record whose
// header is intact, of a type that neither starts a history (INIT) nor
// changes its generation (RESET). What it said is lost, so every checkpoint
// before it may lack changes (a lost SEAL) and is dropped; checkpoints sealed
// after it depend only on records after it. It may have used an epoch
// number, so that number is never used again.
bool pass_over(log_state& st, const record_log::replay_result& res)
{
    const bool passable = res.damaged_type_known && st.initialized &&
                          (res.damaged_type == format::rec_seal || res.damaged_type == format::rec_delete ||
                           res.damaged_type == format::rec_advance);
    if (!passable) {
        return false;
    }
    st.damage = res.damage;
    st.sealed.clear();
    replay_advance(st, st.next_epoch + 1);
    st.dropped_below = st.next_epoch;
    return true;
}

}  // namespace

epoch_log::epoch_log(const fs::path& path) : log_(path, format::record_magic) {}

fs::path epoch_log::set_aside(const std::string& suffix)
{
    return log_.set_aside(suffix);
}

void epoch_log::apply(log_state& st, std::uint16_t type, payload_reader& r, bool gap_allowed)
{
    switch (type) {
    case format::rec_init:
        st.initialized = true;
        st.generation = r.get<std::uint32_t>();
        st.granularity = r.get<std::uint32_t>();
        st.region_size = r.get<std::uint64_t>();
        r.get<std::int64_t>();
        st.disk_id = r.get_string();
        if (!valid_granularity(st.granularity) || st.region_size < st.granularity ||
            (st.region_size & (st.region_size - 1)) != 0) {
            throw error(errc::corrupt, "INIT: impossible granularity or region size");
        }
        init_granularity_ = st.granularity;  // only a valid one is kept past damage
        break;
    case format::rec_seal:
        replay_seal(st, r, gap_allowed);
        break;
    case format::rec_delete:
        replay_delete(st, r.get<std::uint64_t>());
        break;
    case format::rec_reset:
        st.generation = r.get<std::uint32_t>();
        st.next_epoch = r.get<std::uint64_t>();
        st.reset_reason = r.get_string();
        st.dropped_below = st.next_epoch;
        st.sealed.clear();
        st.advanced_from = 0;
        break;
    case format::rec_advance:
        replay_advance(st, r.get<std::uint64_t>());
        break;
    default:
        throw error(errc::corrupt, "unknown record type " + std::to_string(type));
    }
}

log_state epoch_log::replay()
{
    log_state st;
    bool gap_allowed = false;
    const auto fn = [&](std::uint16_t type, payload_reader& r) {
        apply(st, type, r, gap_allowed);
        gap_allowed = gap_allowed && type != format::rec_seal;
    };
    auto res = log_.replay(fn);
    st.valid_bytes = res.valid_bytes;
    st.torn_tail = res.torn_tail;
    if (!res.damage.empty()) {
        const auto bytes = log_.read_all();
        while (pass_over(st, res)) {
            gap_allowed = true;
            res = record_log::parse(bytes.data(), bytes.size(), format::record_magic, fn, res.resume_at);
            if (res.damage.empty()) {
                return st;
            }
        }
        throw error(errc::corrupt, log_.path().string() + ": " + res.damage);
    }
    return st;
}

void epoch_log::rewrite_after_damage(const log_state& st, const std::string& reason)
{
    // Same generation (the surviving checkpoints' tokens stay valid); the
    // RESET drops nothing on replay that is not already gone, and carries
    // the reason for the tokens that were.
    std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>> recs;
    recs.emplace_back(format::rec_init, init_payload(st.generation, st.granularity, st.region_size, st.disk_id));
    std::uint64_t next = st.sealed.empty() ? st.dropped_below : st.sealed.front().epoch;
    recs.emplace_back(format::rec_reset, reset_payload(st.generation, next, reason));
    for (const auto& s : st.sealed) {
        if (s.epoch != next) {
            recs.emplace_back(format::rec_advance, epoch_payload(s.epoch));
        }
        if (s.name.empty()) {
            // The newest, deleted: its runs still belong to the live epoch.
            sealed_epoch named = s;
            named.name = "deleted";
            recs.emplace_back(format::rec_seal, seal_payload(named));
            recs.emplace_back(format::rec_delete, epoch_payload(s.epoch));
        } else {
            recs.emplace_back(format::rec_seal, seal_payload(s));
        }
        next = s.epoch + 1;
    }
    if (next != st.next_epoch) {
        recs.emplace_back(format::rec_advance, epoch_payload(st.next_epoch));
    }
    log_.rewrite(recs);
}

void epoch_log::append_init(std::uint32_t generation, std::uint32_t granularity, std::uint64_t region_size,
                            const std::string& disk_id)
{
    log_.append(format::rec_init, init_payload(generation, granularity, region_size, disk_id));
}

void epoch_log::append_seal(const sealed_epoch& s)
{
    log_.append(format::rec_seal, seal_payload(s));
}

void epoch_log::append_delete(std::uint64_t epoch)
{
    log_.append(format::rec_delete, epoch_payload(epoch));
}

void epoch_log::append_reset(std::uint32_t generation, std::uint64_t next_epoch, const std::string& reason)
{
    log_.append(format::rec_reset, reset_payload(generation, next_epoch, reason));
}

void epoch_log::append_advance(std::uint64_t next_epoch)
{
    log_.append(format::rec_advance, epoch_payload(next_epoch));
}

void write_current(const fs::path& dir, std::uint32_t generation, std::uint64_t epoch, std::uint64_t chunks,
                   const std::vector<run>& runs)
{
    payload_writer body;
    for (const run& r : runs) {
        body.put(r.start).put(r.count);
    }
    format::current_header h{format::current_magic, format::version, generation, epoch, chunks, runs.size(), 0};
    h.checksum = header_checksum(h, body.buf.data(), body.buf.size());
    std::vector<std::uint8_t> bytes(sizeof h + body.buf.size());
    std::memcpy(bytes.data(), &h, sizeof h);
    if (!body.buf.empty()) {
        std::memcpy(bytes.data() + sizeof h, body.buf.data(), body.buf.size());
    }
    replace_file(dir, "current.map", bytes);
}

std::optional<current_state> read_current(const fs::path& dir)
{
    bool exists = true;
    const auto bytes = read_file(dir / "current.map", exists);
    if (!exists) {
        return std::nullopt;
    }
    format::current_header h;
    if (bytes.size() < sizeof h) {
        throw error(errc::corrupt, "current.map is truncated");
    }
    std::memcpy(&h, bytes.data(), sizeof h);
    const std::size_t tail = bytes.size() - sizeof h;
    if (h.magic != format::current_magic || h.version != format::version || h.nruns != tail / 16 ||
        tail % 16 != 0 || header_checksum(h, bytes.data() + sizeof h, tail) != h.checksum) {
        throw error(errc::corrupt, "current.map fails its checksum or header check");
    }
    current_state st{h.generation, h.epoch, h.chunks, {}};
    payload_reader r(bytes.data() + sizeof h, tail);
    st.runs.resize(h.nruns);
    for (auto& x : st.runs) {
        x.start = r.get<std::uint64_t>();
        x.count = r.get<std::uint64_t>();
    }
    check_runs(st.runs, h.chunks, "current.map");
    return st;
}

intent_file::intent_file(const fs::path& path, std::uint64_t region_size, std::uint64_t regions)
    : region_size_(region_size), regions_(regions)
{
    const std::uint64_t bytes = sizeof(format::intent_header) + (regions + 63) / 64 * 8;
    slot_size_ = (bytes + 4095) / 4096 * 4096;
    fd_.reset(open_or_create(path, O_RDWR | O_NOFOLLOW, 0600));
}

namespace {

std::uint64_t slot_bytes(std::uint64_t regions)
{
    return (sizeof(format::intent_header) + (regions + 63) / 64 * 8 + 4095) / 4096 * 4096;
}

}  // namespace

// Each slot is read by its own header's size: a file written while the disk
// was smaller or larger (a resize since) has its slots where that size put
// them, and the newest one must not be missed for being elsewhere.
std::optional<intent_file::slot> intent_file::read_slot(std::uint64_t offset) const
{
    format::intent_header h;
    if (env::get().read_at(fd_.get(), &h, sizeof h, offset) != static_cast<ssize_t>(sizeof h) ||
        h.magic != format::intent_magic || h.version != format::version || h.regions > regions_ * 64 + 64) {
        return std::nullopt;
    }
    const std::size_t bm = (h.regions + 63) / 64 * 8;
    std::vector<std::uint8_t> bits(bm);
    if (env::get().read_at(fd_.get(), bits.data(), bm, offset + sizeof h) != static_cast<ssize_t>(bm) ||
        header_checksum(h, bits.data(), bm) != h.checksum) {
        return std::nullopt;
    }
    return slot{h, std::move(bits)};
}

std::optional<std::vector<std::uint64_t>> intent_file::load()
{
    // Slot 1 sits after slot 0 in the layout slot 0 was written with, and
    // after a resize the next commit may already have put one in this
    // size's: both are read, the highest sequence wins (an older layout's
    // slot is always older).
    std::optional<slot> slots[3] = {read_slot(0), read_slot(slot_size_), std::nullopt};
    if (slots[0] && slot_bytes(slots[0]->h.regions) != slot_size_) {
        slots[2] = read_slot(slot_bytes(slots[0]->h.regions));
    }
    const slot* best = nullptr;
    for (const auto& sl : slots) {
        if (sl && (best == nullptr || sl->h.sequence > best->h.sequence)) {
            best = &*sl;
        }
    }
    if (best == nullptr) {
        sequence_ = 0;
        return std::nullopt;
    }
    sequence_ = best->h.sequence;
    const std::size_t nwords = (regions_ + 63) / 64;
    if (best->h.region_size != region_size_) {
        // The bits mean other ranges: everything may be dirty.
        return std::vector<std::uint64_t>(nwords, ~std::uint64_t{0});
    }
    std::vector<std::uint64_t> words(nwords, 0);
    std::memcpy(words.data(), best->bits.data(), std::min(best->bits.size(), nwords * 8));
    if (best->bits.size() > nwords * 8) {
        // Written for a larger disk: regions past this size's capacity
        // were written too; their bits cannot be dropped unseen.
        const auto* extra = best->bits.data() + nwords * 8;
        if (std::any_of(extra, best->bits.data() + best->bits.size(), [](std::uint8_t b) { return b != 0; })) {
            return std::vector<std::uint64_t>(nwords, ~std::uint64_t{0});
        }
    }
    return words;
}

void intent_file::store(const std::vector<std::uint64_t>& words)
{
    ++sequence_;
    format::intent_header h{format::intent_magic, format::version, 0, sequence_, region_size_, regions_, 0};
    const std::size_t bm = (regions_ + 63) / 64 * 8;
    h.checksum = header_checksum(h, words.data(), bm);
    std::vector<std::uint8_t> buf(sizeof h + bm);
    std::memcpy(buf.data(), &h, sizeof h);
    std::memcpy(buf.data() + sizeof h, words.data(), bm);
    write_all(fd_.get(), buf.data(), buf.size(), (sequence_ % 2) * slot_size_, "intent.map");
    sync_fd(fd_.get(), "intent.map");
}

void write_clean(const fs::path& dir, std::uint32_t generation, std::uint64_t epoch, const file_identity& id)
{
    format::clean_seal s{format::clean_magic, format::version, generation, epoch, id.dev, id.ino, id.size,
                         id.mtime_ns, id.ctime_ns, 0};
    s.checksum = header_checksum(s, nullptr, 0);
    std::vector<std::uint8_t> bytes(sizeof s);
    std::memcpy(bytes.data(), &s, sizeof s);
    replace_file(dir, "clean", bytes);
}

std::optional<clean_state> read_clean(const fs::path& dir, std::string& problem)
{
    bool exists = true;
    format::clean_seal s;
    std::vector<std::uint8_t> bytes;
    try {
        bytes = read_file(dir / "clean", exists, sizeof s);  // a longer one is refused unread
    } catch (const error& e) {
        if (e.code() != errc::corrupt) {
            throw;
        }
    }
    if (!exists) {
        return std::nullopt;
    }
    if (bytes.size() != sizeof s) {
        problem = "clean-shutdown seal has the wrong size";
        return std::nullopt;
    }
    std::memcpy(&s, bytes.data(), sizeof s);
    if (s.magic != format::clean_magic || s.version != format::version ||
        header_checksum(s, nullptr, 0) != s.checksum) {
        problem = "clean-shutdown seal fails its checksum";
        return std::nullopt;
    }
    return clean_state{s.generation, s.epoch, {s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns}};
}

void remove_clean(const fs::path& dir)
{
    remove_file(dir, "clean");
}

}  // namespace rct::tracking
