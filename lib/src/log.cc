#include <rct/log.hh>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace rct::log {
namespace {

std::atomic<int> threshold{static_cast<int>(level::info)};
std::mutex write_mutex;

const bool to_journal = std::getenv("JOURNAL_STREAM") != nullptr;

const char* name_of(level l)
{
    switch (l) {
    case level::err: return "error";
    case level::warning: return "warning";
    case level::notice: return "notice";
    case level::info: return "info";
    case level::debug: return "debug";
    }
    return "?";
}

}  // namespace

bool limiter::admit(std::uint64_t& suppressed) noexcept
{
    const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count();
    std::int64_t next = next_ms_.load(std::memory_order_relaxed);
    if (now < next || !next_ms_.compare_exchange_strong(next, now + window_ms_, std::memory_order_relaxed)) {
        suppressed_.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
}

void set_level(level l) noexcept { threshold.store(static_cast<int>(l), std::memory_order_relaxed); }

bool enabled(level l) noexcept
{
    return static_cast<int>(l) <= threshold.load(std::memory_order_relaxed);
}

void write(level l, std::string_view line) noexcept
{
    std::lock_guard lock(write_mutex);
    if (to_journal) {
        std::fprintf(stderr, "<%d>%.*s\n", static_cast<int>(l), static_cast<int>(line.size()), line.data());
    } else {
        std::fprintf(stderr, "rctd: %s: %.*s\n", name_of(l), static_cast<int>(line.size()), line.data());
    }
}

}  // namespace rct::log
