#include <rct/log.hh>

#include <atomic>
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
