#include "progress.hh"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

namespace rct::tools {

progress::progress(std::string what, std::uint64_t total, bool json, std::chrono::seconds plain_every)
    : what_(std::move(what)), total_(total), json_(json), tty_(!json && ::isatty(STDERR_FILENO) == 1),
      plain_every_(plain_every)
{
    report(false);
}

progress::~progress()
{
    if (tty_ && !finished_) {
        std::fputs("\n", stderr);
    }
}

void progress::advance(std::uint64_t bytes)
{
    done_ += bytes;
    maybe_report();
}

void progress::update(std::uint64_t done, std::uint64_t total)
{
    done_ = done;
    total_ = total;
    maybe_report();
}

void progress::maybe_report()
{
    const auto since = std::chrono::steady_clock::now() - last_;
    if (since >= (tty_ || json_ ? std::chrono::milliseconds(250) : std::chrono::milliseconds(plain_every_))) {
        report(false);
    }
}

void progress::done()
{
    report(true);
    finished_ = true;
}

void progress::report(bool final)
{
    const bool plain = !json_ && !tty_;
    // Nothing known yet (a job that has not sized its copy): nothing to show.
    if ((plain && plain_every_.count() == 0) || (total_ == 0 && !final)) {
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    last_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0;
    const double eta = rate > 0 && total_ > done_ ? static_cast<double>(total_ - done_) / rate : 0;
    if (json_) {
        std::cout << fmt::format(
                         R"({{"event": "progress", "operation": "{}", "done_bytes": {}, "total_bytes": {}, )"
                         R"("elapsed_s": {:.3f}, "rate_bytes_per_s": {:.0f}, "eta_s": {:.1f}, "final": {}}})",
                         what_, done_, total_, seconds, rate, eta, final)
                  << std::endl;
        return;
    }
    const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 100.0;
    std::fputs(fmt::format("{}{}: {:.1f} of {:.1f} MiB ({:.0f}%), {:.1f} MiB/s, ETA {:.0f} s{}", plain ? "" : "\r",
                           what_, static_cast<double>(done_) / 1048576, static_cast<double>(total_) / 1048576, pct,
                           rate / 1048576, eta, plain ? "\n" : "   ")
                   .c_str(),
               stderr);
    if (final && !plain) {
        std::fputs("\n", stderr);
    }
}

}  // namespace rct::tools
