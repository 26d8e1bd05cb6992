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

bool read_ahead::deliver_oldest()
{
    in_.wait(reads_.front().cookie);
    reading_ -= reads_.front().b.data.size();
    block b = std::move(reads_.front().b);
    reads_.pop_front();
    return push(std::move(b));
}

void read_ahead::drain() noexcept
{
    for (started& r : reads_) {
        try {
            in_.wait(r.cookie);
        } catch (...) {
            // The connection failed with the read perhaps still libnbd's:
            // its buffer is left to it (leaked) rather than freed under it.
            new buffer(std::move(r.b.data));
        }
    }
    reads_.clear();
}

bool read_ahead::read_all()
{
    constexpr std::size_t max_reads = 16;
    constexpr std::uint64_t max_read_bytes = 16 << 20;
    for (const auto& [offset, length] : ranges_) {
        for (std::uint64_t at = offset; at < offset + length;) {
            const std::uint64_t n = std::min<std::uint64_t>(offset + length - at, block_size_);
            while (!reads_.empty() && (reads_.size() >= max_reads || reading_ + n > max_read_bytes)) {
                if (!deliver_oldest()) {
                    return false;
                }
            }
            block b{at, buffer(n)};
            const std::int64_t cookie = in_.start_read(b.data.data(), n, at);
            reads_.push_back({cookie, std::move(b)});
            reading_ += n;
            at += n;
        }
    }
    while (!reads_.empty()) {
        if (!deliver_oldest()) {
            return false;
        }
    }
    return true;
}

void read_ahead::run()
{
    std::exception_ptr error;
    try {
        if (!read_all()) {
            drain();
            return;  // told to stop
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
