// Logging: one line per event on stderr.
//
// When stderr is the journal (JOURNAL_STREAM is set, as systemd does), each
// line starts with an sd-daemon "<N>" priority prefix so journald files it at
// the right level; on a terminal the level is spelled out instead. The level
// threshold is global and may be changed at any time; writers from any thread
// are serialised so lines never interleave.
#pragma once

#include <fmt/format.h>

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

}  // namespace rct::log
