#include "record_log.hh"

#include <rct/durable_file.hh>

#include <rct/error.hh>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace rct::persist {

namespace fs = std::filesystem;

record_log::record_log(fs::path path, std::uint32_t magic) : path_(std::move(path)), magic_(magic)
{
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd_) {
        throw_errno("open " + path_.string(), errno);
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) {
        throw_errno("fstat " + path_.string(), errno);
    }
    end_ = static_cast<std::uint64_t>(st.st_size);
}

record_log::replay_result record_log::replay(const std::function<void(std::uint16_t, payload_reader&)>& fn)
{
    bool exists = true;
    const auto bytes = read_file(path_, exists);
    replay_result res;
    std::size_t pos = 0;
    while (pos < bytes.size()) {
        if (bytes.size() - pos < sizeof(record_header)) {
            res.torn_tail = true;
            break;
        }
        record_header h;
        std::memcpy(&h, bytes.data() + pos, sizeof h);
        const std::size_t body = pos + sizeof h;
        const bool complete = bytes.size() - body >= h.length;
        if (h.magic != magic_ || !complete || header_checksum(h, bytes.data() + body, h.length) != h.checksum) {
            // An append cut short by a crash leaves a short record or a
            // zero-filled tail (never acknowledged); anything else is damage.
            const bool zero_tail = std::all_of(bytes.begin() + static_cast<long>(pos), bytes.end(),
                                               [](std::uint8_t b) { return b == 0; });
            if (!(zero_tail || (h.magic == magic_ && !complete))) {
                throw error(errc::corrupt, path_.string() + ": record at byte " + std::to_string(pos) +
                                               " fails its checksum");
            }
            res.torn_tail = true;
            break;
        }
        if (h.flags != 0) {
            throw error(errc::corrupt, path_.string() + ": record with unknown feature flags");
        }
        payload_reader r(bytes.data() + body, h.length);
        fn(h.type, r);
        ++res.records;
        pos = body + h.length;
    }
    res.valid_bytes = pos;
    if (res.torn_tail && ::ftruncate(fd_.get(), static_cast<off_t>(pos)) != 0) {
        throw_errno("truncate " + path_.string(), errno);
    }
    end_ = pos;
    return res;
}

std::vector<std::uint8_t> record_log::frame(std::uint16_t type, const std::vector<std::uint8_t>& payload) const
{
    record_header h{magic_, type, 0, static_cast<std::uint32_t>(payload.size()), 0, 0};
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
    const auto rec = frame(type, payload);
    try {
        write_all(fd_.get(), rec.data(), rec.size(), end_, path_);
    } catch (...) {
        // Cut off a partial record so that the next append does not follow
        // it; should even that fail, replay sees a torn tail.
        [[maybe_unused]] const int rc = ::ftruncate(fd_.get(), static_cast<off_t>(end_));
        throw;
    }
    end_ += rec.size();
}

void record_log::sync()
{
    sync_fd(fd_.get(), path_);
}

void record_log::set_aside(const std::string& suffix)
{
    const fs::path aside = path_.string() + suffix;
    if (::rename(path_.c_str(), aside.c_str()) != 0) {
        throw_errno("rename " + path_.string(), errno);
    }
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd_) {
        throw_errno("open " + path_.string(), errno);
    }
    end_ = 0;
    fsync_dir(path_.parent_path());
}

void record_log::rewrite(const std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>>& records)
{
    std::vector<std::uint8_t> all;
    for (const auto& [type, payload] : records) {
        const auto rec = frame(type, payload);
        all.insert(all.end(), rec.begin(), rec.end());
    }
    replace_file(path_.parent_path(), path_.filename().string(), all);
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd_) {
        throw_errno("open " + path_.string(), errno);
    }
    end_ = all.size();
}

}  // namespace rct::persist
