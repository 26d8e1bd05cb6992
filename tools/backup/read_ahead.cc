#include "read_ahead.hh"

#include <algorithm>

namespace rct::backup {

read_ahead::read_ahead(connection& in, std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges,
                       std::size_t block_size, std::size_t depth)
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
    std::exception_ptr error;
    try {
        for (const auto& [offset, length] : ranges_) {
            for (std::uint64_t at = offset; at < offset + length;) {
                const std::uint64_t n = std::min<std::uint64_t>(offset + length - at, block_size_);
                block b{at, std::vector<char>(n)};
                in_.read(b.data.data(), n, at);
                if (!push(std::move(b))) {
                    return;
                }
                at += n;
            }
        }
    } catch (...) {
        error = std::current_exception();
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
