#include "../bytes.hh"
#include "record_log.hh"

#include "durable_file.hh"

#include <rct/error.hh>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

namespace rct::persist {

namespace fs = std::filesystem;

record_log::record_log(fs::path path, std::uint32_t magic) : path_(std::move(path)), magic_(magic)
{
    fd_.reset(open_or_create(path_, O_RDWR | O_NOFOLLOW, 0600));
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw_errno("fstat " + path_.string(), errno);
    }
    end_ = synced_end_ = static_cast<std::uint64_t>(st.st_size);
}

namespace {

std::uint32_t header_check(const record_header& h)
{
    // Over magic, type, flags and length: a torn record can be told from a
    // damaged one only if its length can be trusted. Never 0, which marks
    // the records of older versions, written without it.
    const auto v = static_cast<std::uint32_t>(checksum(&h, offsetof(record_header, hcheck), nullptr, 0));
    return v == 0 ? 1 : v;
}


// Whether a record starts at pos and passes every check.
bool valid_at(const std::uint8_t* p, std::size_t n, std::size_t pos, std::uint32_t magic, record_header& h)
{
    if (n - pos < sizeof h) {
        return false;
    }
    std::memcpy(&h, p + pos, sizeof h);
    return h.magic == magic && (h.hcheck == 0 || h.hcheck == header_check(h)) &&
           n - pos - sizeof h >= h.length && header_checksum(h, p + pos + sizeof h, h.length) == h.checksum;
}

bool any_valid_after(const std::uint8_t* p, std::size_t n, std::size_t from, std::uint32_t magic)
{
    record_header h;
    for (std::size_t pos = from; pos + sizeof h <= n; ++pos) {
        if (valid_at(p, n, pos, magic, h)) {
            return true;
        }
    }
    return false;
}

// Why the record at pos is not a torn tail, or "" if it is one.
std::string classify(const std::uint8_t* p, std::size_t n, std::size_t pos, std::uint32_t magic)
{
    if (all_zero(p + pos, n - pos)) {
        return {};  // an append whose data never reached the disk
    }
    if (any_valid_after(p, n, pos + 1, magic)) {
        return "a record that valid records follow fails its checks";
    }
    if (n - pos < sizeof(record_header)) {
        return {};  // the file ends inside a header
    }
    record_header h;
    std::memcpy(&h, p + pos, sizeof h);
    if (h.magic != magic) {
        return "bad record magic";
    }
    if (h.hcheck != 0 && h.hcheck != header_check(h)) {
        return "the record header fails its check";
    }
    if (n - pos - sizeof h < h.length) {
        return {};  // runs past the end: the append was cut short
    }
    return "a complete record fails its checksum";
}

// Whether the header at pos passed its own check, so its type and length
// are as written even though the record fails its checksum.
bool header_trusted(const std::uint8_t* p, std::size_t n, std::size_t pos, std::uint32_t magic, record_header& h)
{
    if (n - pos < sizeof h) {
        return false;
    }
    std::memcpy(&h, p + pos, sizeof h);
    return h.magic == magic && h.hcheck != 0 && h.hcheck == header_check(h) && h.flags == 0 &&
           n - pos - sizeof h >= h.length;
}

// Hands the record at pos to fn; what fn refuses as corrupt comes back as
// the reason ("" when it took the record).
std::string offer(const std::uint8_t* p, std::size_t pos, const record_header& h, const record_log::record_fn& fn)
{
    payload_reader r(p + pos + sizeof h, h.length);
    try {
        fn(h.type, r);
    } catch (const error& e) {
        if (e.code() != errc::corrupt) {
            throw;
        }
        return e.what();
    }
    return {};
}

}  // namespace

record_log::replay_result record_log::parse(const std::uint8_t* p, std::size_t n, std::uint32_t magic,
                                            const record_fn& fn, std::size_t from)
{
    replay_result res;
    std::size_t pos = std::min(from, n);
    record_header h;
    while (pos < n) {
        if (!valid_at(p, n, pos, magic, h)) {
            res.damage = classify(p, n, pos, magic);
            res.torn_tail = res.damage.empty();
            res.damaged_type_known = !res.torn_tail && header_trusted(p, n, pos, magic, h);
            if (res.damaged_type_known) {
                res.damaged_type = h.type;
                res.resume_at = pos + sizeof h + h.length;
            }
            break;
        }
        if (h.flags != 0) {
            res.damage = "a record with unknown feature flags";
            break;
        }
        res.damage = offer(p, pos, h, fn);
        if (!res.damage.empty()) {
            res.damaged_type_known = true;  // its checksum held
            res.damaged_type = h.type;
            res.resume_at = pos + sizeof h + h.length;
            break;
        }
        ++res.records;
        pos += sizeof h + h.length;
    }
    res.valid_bytes = pos;
    if (!res.damage.empty()) {
        res.damage = "record at byte " + std::to_string(pos) + ": " + res.damage;
    }
    return res;
}

void record_log::salvage(const std::uint8_t* p, std::size_t n, std::size_t from, std::uint32_t magic,
                         const record_fn& fn)
{
    record_header h;
    for (std::size_t pos = from; pos + sizeof h <= n;) {
        if (!valid_at(p, n, pos, magic, h) || h.flags != 0) {
            ++pos;
            continue;
        }
        offer(p, pos, h, fn);  // a record it refuses is skipped
        pos += sizeof h + h.length;
    }
}

std::vector<std::uint8_t> record_log::read_all() const
{
    bool exists = true;
    return read_file(path_, exists);
}

record_log::replay_result record_log::replay(const record_fn& fn)
{
    const auto bytes = read_all();
    const auto res = parse(bytes.data(), bytes.size(), magic_, fn);
    if (res.torn_tail) {
        if (const int rc = env::get().truncate(fd_.get(), res.valid_bytes); rc < 0) {
            throw_errno("truncate " + path_.string(), -rc);
        }
    }
    end_ = res.damage.empty() ? res.valid_bytes : bytes.size();
    synced_end_ = end_;
    return res;
}

std::vector<std::uint8_t> record_log::frame(std::uint16_t type, const std::vector<std::uint8_t>& payload) const
{
    record_header h{magic_, type, 0, static_cast<std::uint32_t>(payload.size()), 0, 0};
    h.hcheck = header_check(h);
    h.checksum = header_checksum(h, payload.data(), payload.size());
    std::vector<std::uint8_t> rec(sizeof h + payload.size());
    std::memcpy(rec.data(), &h, sizeof h);
    std::memcpy(rec.data() + sizeof h, payload.data(), payload.size());
    return rec;
}

void record_log::append(std::uint16_t type, const std::vector<std::uint8_t>& payload)
{
    write(type, payload);
    sync();
}

void record_log::write(std::uint16_t type, const std::vector<std::uint8_t>& payload)
{
    if (broken_) {
        throw error(errc::io_error, path_.string() + ": a failed append could not be undone; restart rctd");
    }
    const auto rec = frame(type, payload);
    try {
        write_all(fd_.get(), rec.data(), rec.size(), end_, path_);
    } catch (...) {
        cut_back(end_);
        throw;
    }
    end_ += rec.size();
}

void record_log::sync()
{
    if (broken_) {
        throw error(errc::io_error, path_.string() + ": a failed append could not be undone; restart rctd");
    }
    try {
        sync_fd(fd_.get(), path_);
    } catch (...) {
        // The caller is told the records failed: they must not turn up at
        // replay (a seal retried under the same epoch, copies whose slots
        // never became durable).
        cut_back(synced_end_);
        throw;
    }
    synced_end_ = end_;
}

void record_log::cut_back(std::uint64_t to) noexcept
{
    // The cut must itself be durable: the failed record may already be on
    // disk, and must not come back at replay.
    if (env::get().truncate(fd_.get(), to) == 0 && env::get().datasync(fd_.get()) == 0) {
        end_ = to;
    } else {
        broken_ = true;  // what lies past `to` is unknown: append nothing after it
    }
}

fs::path record_log::set_aside(const std::string& suffix)
{
    // Evidence of earlier damage is never overwritten.
    fs::path aside = path_.string() + suffix;
    for (int i = 1; ::access(aside.c_str(), F_OK) == 0; ++i) {
        aside = path_.string() + suffix + "." + std::to_string(i);
    }
    rename_file(path_, aside);
    fd_.reset(open_file(path_, O_RDWR | O_CREAT | O_EXCL, 0600));
    end_ = synced_end_ = 0;
    broken_ = false;
    fsync_dir(path_.parent_path());
    return aside;
}

void record_log::rewrite(const std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>>& records)
{
    std::vector<std::uint8_t> all;
    for (const auto& [type, payload] : records) {
        const auto rec = frame(type, payload);
        all.insert(all.end(), rec.begin(), rec.end());
    }
    replace_file(path_.parent_path(), path_.filename().string(), all);
    fd_.reset(open_file(path_, O_RDWR | O_NOFOLLOW, 0));
    end_ = synced_end_ = all.size();
    broken_ = false;
}

}  // namespace rct::persist
