// Logging: one line per event on stderr.
//
// When stderr is the journal (JOURNAL_STREAM is set, as systemd does), each
// line starts with an sd-daemon "<N>" priority prefix so journald files it at
// the right level; on a terminal the level is spelled out instead. The level
// threshold is global and may be changed at any time; writers from any thread
// are serialised so lines never interleave.
//
// An error that repeats per event (a failed accept, a refused client, a
// persist that keeps failing) goes through a limiter: the first occurrence in
// a window is written, later ones are only counted, and the next line written
// says how many were left out. RCT_LOG_LIMITED gives each call site its own.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace rct::log {

// Values are syslog priorities.
enum class level { err = 3, warning = 4, notice = 5, info = 6, debug = 7 };

void set_level(level l) noexcept;
bool enabled(level l) noexcept;
void write(level l, std::string_view line) noexcept;

template <typename... A>
void at(level l, fmt::format_string<A...> f, A&&... a)
{
    if (enabled(l)) {
        write(l, fmt::format(f, std::forward<A>(a)...));
    }
}
template <typename... A>
void error(fmt::format_string<A...> f, A&&... a) { at(level::err, f, std::forward<A>(a)...); }
template <typename... A>
void warn(fmt::format_string<A...> f, A&&... a) { at(level::warning, f, std::forward<A>(a)...); }
template <typename... A>
void notice(fmt::format_string<A...> f, A&&... a) { at(level::notice, f, std::forward<A>(a)...); }
template <typename... A>
void info(fmt::format_string<A...> f, A&&... a) { at(level::info, f, std::forward<A>(a)...); }
template <typename... A>
void debug(fmt::format_string<A...> f, A&&... a) { at(level::debug, f, std::forward<A>(a)...); }

// At most one line per window; thread-safe (a lost race only moves a line
// into the count). Usable as a member (one limiter per disk) or through
// RCT_LOG_LIMITED (one per call site).
class limiter {
public:
    explicit constexpr limiter(std::chrono::milliseconds window = std::chrono::seconds(10)) noexcept
        : window_ms_(window.count())
    {
    }
    // True when a line may be written now; *suppressed is then the number
    // of events left out since the last written line.
    bool admit(std::uint64_t& suppressed) noexcept;

private:
    const std::int64_t window_ms_;
    std::atomic<std::int64_t> next_ms_{0};  // steady-clock ms before which lines are only counted
    std::atomic<std::uint64_t> suppressed_{0};
};

template <typename... A>
void limited(limiter& lim, level l, fmt::format_string<A...> f, A&&... a)
{
    std::uint64_t left_out = 0;
    if (!enabled(l) || !lim.admit(left_out)) {
        return;
    }
    std::string line = fmt::format(f, std::forward<A>(a)...);
    if (left_out != 0) {
        line += fmt::format(" ({} more like this since the last such line)", left_out);
    }
    write(l, line);
}

}  // namespace rct::log

// One limiter per call site: RCT_LOG_LIMITED(rct::log::level::warning, "x {}", y).
#define RCT_LOG_LIMITED(lvl, ...)                                    \
    do {                                                             \
        static ::rct::log::limiter rct_log_limiter_;                 \
        ::rct::log::limited(rct_log_limiter_, (lvl), __VA_ARGS__);   \
    } while (0)
