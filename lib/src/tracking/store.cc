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

// SEAL: consecutive epochs, valid names, runs inside the size at the cut.
void replay_seal(log_state& st, payload_reader& r)
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
    if (s.epoch != st.next_epoch) {
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

}  // namespace

epoch_log::epoch_log(const fs::path& path) : log_(path, format::record_magic) {}

fs::path epoch_log::set_aside(const std::string& suffix)
{
    return log_.set_aside(suffix);
}

log_state epoch_log::replay()
{
    log_state st;
    const auto res = log_.replay([&](std::uint16_t type, payload_reader& r) {
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
            replay_seal(st, r);
            break;
        case format::rec_delete:
            replay_delete(st, r.get<std::uint64_t>());
            break;
        case format::rec_reset:
            st.generation = r.get<std::uint32_t>();
            st.next_epoch = r.get<std::uint64_t>();
            st.reset_reason = r.get_string();
            st.sealed.clear();
            st.advanced_from = 0;
            break;
        case format::rec_advance: {
            const auto next = r.get<std::uint64_t>();
            if (next < st.next_epoch) {
                throw error(errc::corrupt, "epoch advance goes backwards");
            }
            if (st.advanced_from == 0) {
                st.advanced_from = st.next_epoch;
            }
            st.next_epoch = next;
            break;
        }
        default:
            throw error(errc::corrupt, "unknown record type " + std::to_string(type));
        }
    });
    if (!res.damage.empty()) {
        throw error(errc::corrupt, log_.path().string() + ": " + res.damage);
    }
    st.valid_bytes = res.valid_bytes;
    st.torn_tail = res.torn_tail;
    return st;
}

void epoch_log::append_init(std::uint32_t generation, std::uint32_t granularity, std::uint64_t region_size,
                            const std::string& disk_id)
{
    payload_writer w;
    w.put(generation).put(granularity).put(region_size).put<std::int64_t>(::time(nullptr)).put_string(disk_id);
    log_.append(format::rec_init, w.buf);
}

void epoch_log::append_seal(const sealed_epoch& s)
{
    payload_writer w;
    w.put(s.epoch).put(s.created_at).put(s.size).put_string(s.name);
    put_runs(w, s.runs);
    log_.append(format::rec_seal, w.buf);
}

void epoch_log::append_delete(std::uint64_t epoch)
{
    payload_writer w;
    w.put(epoch);
    log_.append(format::rec_delete, w.buf);
}

void epoch_log::append_reset(std::uint32_t generation, std::uint64_t next_epoch, const std::string& reason)
{
    payload_writer w;
    w.put(generation).put(next_epoch).put_string(reason.substr(0, 1000));
    log_.append(format::rec_reset, w.buf);
}

void epoch_log::append_advance(std::uint64_t next_epoch)
{
    payload_writer w;
    w.put(next_epoch);
    log_.append(format::rec_advance, w.buf);
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
    std::vector<std::uint8_t> bytes(sizeof h);
    std::memcpy(bytes.data(), &h, sizeof h);
    bytes.insert(bytes.end(), body.buf.begin(), body.buf.end());
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

std::optional<std::vector<std::uint64_t>> intent_file::load()
{
    std::optional<std::vector<std::uint64_t>> best;
    std::uint64_t best_seq = 0;
    const std::size_t nwords = (regions_ + 63) / 64;
    for (int slot = 0; slot < 2; ++slot) {
        std::vector<std::uint8_t> buf(slot_size_);
        const ssize_t r = env::get().read_at(fd_.get(), buf.data(), buf.size(), slot * slot_size_);
        if (r < static_cast<ssize_t>(sizeof(format::intent_header))) {
            continue;
        }
        format::intent_header h;
        std::memcpy(&h, buf.data(), sizeof h);
        const std::size_t bm = (h.regions + 63) / 64 * 8;
        if (h.magic != format::intent_magic || h.version != format::version || h.regions > regions_ * 64 + 64 ||
            sizeof h + bm > static_cast<std::size_t>(r) ||
            header_checksum(h, buf.data() + sizeof h, bm) != h.checksum) {
            continue;
        }
        if (!best || h.sequence > best_seq) {
            // A different region size means the bits mean other ranges; the
            // caller treats a mismatch as "everything may be dirty".
            if (h.region_size != region_size_) {
                std::vector<std::uint64_t> all(nwords, ~std::uint64_t{0});
                best = all;
            } else {
                std::vector<std::uint64_t> words(nwords, 0);
                std::memcpy(words.data(), buf.data() + sizeof h, std::min(bm, nwords * 8));
                best = words;
            }
            best_seq = h.sequence;
        }
    }
    sequence_ = best_seq;
    return best;
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
