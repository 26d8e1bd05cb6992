#include "read_ahead.hh"

#include <algorithm>

namespace rct::backup {

using tools::failure;

read_ahead::read_ahead(connection& in, std::vector<byte_range> ranges, std::size_t block_size, std::size_t depth)
    : in_(in), ranges_(std::move(ranges)), block_size_(block_size), depth_(depth), thread_([this] { run(); })
{
}

read_ahead::~read_ahead()
{
    {
        rct::lock_guard l(m_);
        stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

bool read_ahead::push(block b)
{
    rct::unique_lock l(m_);
    cv_.wait(l, [&]() REQUIRES(m_) { return stop_ || ready_.size() < depth_; });
    if (stop_) {
        return false;
    }
    ready_.push_back(std::move(b));
    cv_.notify_all();
    return true;
}

void read_ahead::run()
{
    constexpr std::size_t max_reads = 16;
    constexpr std::uint64_t max_read_bytes = 16 << 20;
    struct started {
        std::int64_t cookie;
        block b;
    };
    std::deque<started> reads;
    std::uint64_t reading = 0;
    // Hands the oldest read on once it is done; false when told to stop.
    const auto deliver = [&] {
        in_.wait(reads.front().cookie);
        reading -= reads.front().b.data.size();
        block b = std::move(reads.front().b);
        reads.pop_front();
        return push(std::move(b));
    };
    // libnbd writes into a started read's buffer until it completes: none
    // may be freed before that, whatever ends the stream.
    const auto drain = [&] {
        for (const started& r : reads) {
            try {
                in_.wait(r.cookie);
            } catch (const failure&) {
            }
        }
        reads.clear();
    };
    std::exception_ptr error;
    try {
        for (const auto& [offset, length] : ranges_) {
            for (std::uint64_t at = offset; at < offset + length;) {
                const std::uint64_t n = std::min<std::uint64_t>(offset + length - at, block_size_);
                while (!reads.empty() && (reads.size() >= max_reads || reading + n > max_read_bytes)) {
                    if (!deliver()) {
                        drain();
                        return;
                    }
                }
                block b{at, buffer(n)};
                const std::int64_t cookie = in_.start_read(b.data.data(), n, at);
                reads.push_back({cookie, std::move(b)});
                reading += n;
                at += n;
            }
        }
        while (!reads.empty()) {
            if (!deliver()) {
                drain();
                return;
            }
        }
    } catch (...) {
        error = std::current_exception();
        drain();
    }
    rct::lock_guard l(m_);
    done_ = true;
    error_ = error;
    cv_.notify_all();
}

std::optional<read_ahead::block> read_ahead::next()
{
    rct::unique_lock l(m_);
    cv_.wait(l, [&]() REQUIRES(m_) { return !ready_.empty() || done_; });
    if (!ready_.empty()) {
        block b = std::move(ready_.front());
        ready_.pop_front();
        cv_.notify_all();
        return b;
    }
    if (error_) {
        std::rethrow_exception(error_);
    }
    return std::nullopt;
}

}  // namespace rct::backup
