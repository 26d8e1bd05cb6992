#include "store.hh"

#include <rct/error.hh>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rct::tracking {
namespace {

namespace fs = std::filesystem;

// Little-endian payload builder and reader.
class writer {
public:
    template <typename T>
    writer& put(T v)
    {
        for (std::size_t i = 0; i < sizeof(T); ++i) {
            buf.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> (8 * i)));
        }
        return *this;
    }
    writer& put_string(const std::string& s)
    {
        put<std::uint16_t>(static_cast<std::uint16_t>(s.size()));
        buf.insert(buf.end(), s.begin(), s.end());
        return *this;
    }
    writer& put_runs(const std::vector<run>& runs)
    {
        put<std::uint64_t>(runs.size());
        for (const run& r : runs) {
            put<std::uint64_t>(r.start).put<std::uint64_t>(r.count);
        }
        return *this;
    }
    std::vector<std::uint8_t> buf;
};

class reader {
public:
    reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    template <typename T>
    T get()
    {
        need(sizeof(T));
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < sizeof(T); ++i) {
            v |= static_cast<std::uint64_t>(p_[pos_ + i]) << (8 * i);
        }
        pos_ += sizeof(T);
        return static_cast<T>(v);
    }
    std::string get_string()
    {
        const auto n = get<std::uint16_t>();
        need(n);
        std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
        pos_ += n;
        return s;
    }
    std::vector<run> get_runs()
    {
        const auto n = get<std::uint64_t>();
        if (n > (n_ - pos_) / 16) {
            throw error(errc::corrupt, "run count exceeds record");
        }
        std::vector<run> runs(n);
        for (auto& r : runs) {
            r.start = get<std::uint64_t>();
            r.count = get<std::uint64_t>();
        }
        return runs;
    }
    bool done() const { return pos_ == n_; }

private:
    void need(std::size_t k)
    {
        if (n_ - pos_ < k) {
            throw error(errc::corrupt, "record shorter than its fields");
        }
    }
    const std::uint8_t* p_;
    std::size_t n_;
    std::size_t pos_ = 0;
};

void write_all(int fd, const void* data, std::size_t n, std::uint64_t off, const fs::path& p)
{
    const auto* b = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
        const ssize_t w = ::pwrite(fd, b, n, static_cast<off_t>(off));
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("write " + p.string(), errno);
        }
        b += w;
        n -= static_cast<std::size_t>(w);
        off += static_cast<std::uint64_t>(w);
    }
}

void sync_fd(int fd, const fs::path& p)
{
    if (::fdatasync(fd) != 0) {
        throw_errno("fdatasync " + p.string(), errno);
    }
}

std::vector<std::uint8_t> read_file(const fs::path& p, bool& exists)
{
    unique_fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) {
            exists = false;
            return {};
        }
        throw_errno("open " + p.string(), errno);
    }
    exists = true;
    std::vector<std::uint8_t> out;
    std::uint8_t buf[1 << 16];
    for (;;) {
        const ssize_t r = ::read(fd.get(), buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("read " + p.string(), errno);
        }
        if (r == 0) {
            break;
        }
        out.insert(out.end(), buf, buf + r);
    }
    return out;
}

// temp + fsync + rename + directory fsync.
void replace_file(const fs::path& dir, const std::string& name, const std::vector<std::uint8_t>& bytes)
{
    const fs::path tmp = dir / (name + ".tmp");
    const fs::path dst = dir / name;
    unique_fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) {
        throw_errno("open " + tmp.string(), errno);
    }
    write_all(fd.get(), bytes.data(), bytes.size(), 0, tmp);
    sync_fd(fd.get(), tmp);
    fd.reset();
    if (::rename(tmp.c_str(), dst.c_str()) != 0) {
        throw_errno("rename " + tmp.string(), errno);
    }
    fsync_dir(dir);
}

template <typename H>
std::uint64_t header_checksum(H h, const void* tail, std::size_t tail_len)
{
    h.checksum = 0;
    XXH64_state_t* st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, &h, sizeof h);
    if (tail_len != 0) {
        XXH64_update(st, tail, tail_len);
    }
    const std::uint64_t v = XXH64_digest(st);
    XXH64_freeState(st);
    return v;
}

}  // namespace

void fsync_dir(const fs::path& dir)
{
    unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) {
        throw_errno("fsync " + dir.string(), errno);
    }
}

void epoch_log::set_aside(const std::string& suffix)
{
    const fs::path aside = path_.string() + suffix;
    if (::rename(path_.c_str(), aside.c_str()) != 0) {
        throw_errno("rename " + path_.string(), errno);
    }
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd_) {
        throw_errno("open " + path_.string(), errno);
    }
    fsync_dir(path_.parent_path());
}

epoch_log::epoch_log(const fs::path& path) : path_(path)
{
    fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_) {
        throw_errno("open " + path.string(), errno);
    }
}

log_state epoch_log::replay()
{
    bool exists = true;
    const auto bytes = read_file(path_, exists);
    log_state st;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
        if (bytes.size() - pos < sizeof(format::record_header)) {
            st.torn_tail = true;
            break;
        }
        format::record_header h;
        std::memcpy(&h, bytes.data() + pos, sizeof h);
        const std::size_t body = pos + sizeof h;
        if (h.magic != format::record_magic || bytes.size() - body < h.length ||
            header_checksum(h, bytes.data() + body, h.length) != h.checksum) {
            // Records are appended and synced one at a time, so an append cut
            // short by a crash leaves only a short or zero-filled tail (never
            // acknowledged). Anything else is damage to acknowledged records:
            // trusting what follows or precedes it could under-report.
            const bool short_tail = bytes.size() - body < h.length || h.magic != format::record_magic;
            const bool zero_tail = std::all_of(bytes.begin() + static_cast<long>(pos), bytes.end(),
                                               [](std::uint8_t b) { return b == 0; });
            if (!(zero_tail || (short_tail && h.magic == format::record_magic && bytes.size() - body < h.length))) {
                throw error(errc::corrupt, path_.string() + ": record at byte " + std::to_string(pos) +
                                               " fails its checksum");
            }
            st.torn_tail = true;
            break;
        }
        if (h.flags != 0) {
            throw error(errc::corrupt, path_.string() + ": record with unknown feature flags");
        }
        reader r(bytes.data() + body, h.length);
        switch (h.type) {
        case format::rec_init:
            st.initialized = true;
            st.generation = r.get<std::uint32_t>();
            st.granularity = r.get<std::uint32_t>();
            init_granularity_ = st.granularity;
            st.region_size = r.get<std::uint64_t>();
            r.get<std::int64_t>();
            st.disk_id = r.get_string();
            break;
        case format::rec_seal: {
            sealed_epoch s;
            s.epoch = r.get<std::uint64_t>();
            s.created_at = r.get<std::int64_t>();
            s.size = r.get<std::uint64_t>();
            s.name = r.get_string();
            s.runs = r.get_runs();
            if (s.epoch != st.next_epoch) {
                throw error(errc::corrupt, path_.string() + ": seal of epoch " + std::to_string(s.epoch) +
                                               " out of order (expected " + std::to_string(st.next_epoch) + ")");
            }
            st.next_epoch = s.epoch + 1;
            if (!st.sealed.empty() && st.sealed.back().name.empty()) {
                // The previous checkpoint was deleted while it was the
                // newest: its changes went into this epoch.
                s.runs.insert(s.runs.end(), st.sealed.back().runs.begin(), st.sealed.back().runs.end());
                st.sealed.pop_back();
            }
            st.sealed.push_back(std::move(s));
            break;
        }
        case format::rec_delete: {
            const auto e = r.get<std::uint64_t>();
            for (std::size_t i = 0; i < st.sealed.size(); ++i) {
                if (st.sealed[i].epoch != e) {
                    continue;
                }
                // Merge into the next sealed epoch; if it was the last, the
                // merge target is the live epoch (the caller handles it).
                if (i + 1 < st.sealed.size()) {
                    auto& next = st.sealed[i + 1].runs;
                    next.insert(next.end(), st.sealed[i].runs.begin(), st.sealed[i].runs.end());
                    st.sealed.erase(st.sealed.begin() + static_cast<long>(i));
                } else {
                    st.sealed[i].name.clear();  // marks "merged into live"
                }
                break;
            }
            break;
        }
        case format::rec_reset:
            st.generation = r.get<std::uint32_t>();
            st.next_epoch = r.get<std::uint64_t>();
            st.reset_reason = r.get_string();
            st.sealed.clear();
            break;
        default:
            throw error(errc::corrupt, path_.string() + ": unknown record type " + std::to_string(h.type));
        }
        pos = body + h.length;
    }
    st.valid_bytes = pos;
    if (st.torn_tail && ::ftruncate(fd_.get(), static_cast<off_t>(pos)) != 0) {
        throw_errno("truncate " + path_.string(), errno);
    }
    return st;
}

void epoch_log::append(std::uint16_t type, const std::vector<std::uint8_t>& payload)
{
    format::record_header h{format::record_magic, type, 0, static_cast<std::uint32_t>(payload.size()), 0, 0};
    h.checksum = header_checksum(h, payload.data(), payload.size());
    std::vector<std::uint8_t> rec(sizeof h + payload.size());
    std::memcpy(rec.data(), &h, sizeof h);
    std::memcpy(rec.data() + sizeof h, payload.data(), payload.size());
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw_errno("fstat " + path_.string(), errno);
    }
    write_all(fd_.get(), rec.data(), rec.size(), static_cast<std::uint64_t>(st.st_size), path_);
    sync_fd(fd_.get(), path_);
}

void epoch_log::append_init(std::uint32_t generation, std::uint32_t granularity, std::uint64_t region_size,
                            const std::string& disk_id)
{
    writer w;
    w.put(generation).put(granularity).put(region_size).put<std::int64_t>(::time(nullptr)).put_string(disk_id);
    append(format::rec_init, w.buf);
}

void epoch_log::append_seal(const sealed_epoch& s)
{
    writer w;
    w.put(s.epoch).put(s.created_at).put(s.size).put_string(s.name).put_runs(s.runs);
    append(format::rec_seal, w.buf);
}

void epoch_log::append_delete(std::uint64_t epoch)
{
    writer w;
    w.put(epoch);
    append(format::rec_delete, w.buf);
}

void epoch_log::append_reset(std::uint32_t generation, std::uint64_t next_epoch, const std::string& reason)
{
    writer w;
    w.put(generation).put(next_epoch).put_string(reason.substr(0, 1000));
    append(format::rec_reset, w.buf);
}

void write_current(const fs::path& dir, std::uint32_t generation, std::uint64_t epoch, std::uint64_t chunks,
                   const std::vector<run>& runs)
{
    writer body;
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
    reader r(bytes.data() + sizeof h, tail);
    st.runs.resize(h.nruns);
    for (auto& x : st.runs) {
        x.start = r.get<std::uint64_t>();
        x.count = r.get<std::uint64_t>();
    }
    return st;
}

intent_file::intent_file(const fs::path& path, std::uint64_t region_size, std::uint64_t regions)
    : region_size_(region_size), regions_(regions)
{
    const std::uint64_t bytes = sizeof(format::intent_header) + (regions + 63) / 64 * 8;
    slot_size_ = (bytes + 4095) / 4096 * 4096;
    fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_) {
        throw_errno("open " + path.string(), errno);
    }
}

std::optional<std::vector<std::uint64_t>> intent_file::load()
{
    std::optional<std::vector<std::uint64_t>> best;
    std::uint64_t best_seq = 0;
    const std::size_t nwords = (regions_ + 63) / 64;
    for (int slot = 0; slot < 2; ++slot) {
        std::vector<std::uint8_t> buf(slot_size_);
        const ssize_t r = ::pread(fd_.get(), buf.data(), buf.size(), static_cast<off_t>(slot * slot_size_));
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
    const auto bytes = read_file(dir / "clean", exists);
    if (!exists) {
        return std::nullopt;
    }
    format::clean_seal s;
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
    if (::unlink((dir / "clean").c_str()) != 0 && errno != ENOENT) {
        throw_errno("unlink " + (dir / "clean").string(), errno);
    }
    fsync_dir(dir);
}

}  // namespace rct::tracking
