// progress: how far a copy is, for people (a line on a terminal's stderr,
// redrawn at most 4 times a second, with rate and ETA; elsewhere, if asked,
// a plain line every few seconds) or programs (--json: one JSON object per
// line on stdout, at most 4 a second, plus the first and the last).
// rct-backup counts its own copies; rctctl shows rctd's jobs.
//
// Owned by the command that copies; one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rct::tools {

class progress {
public:
    // what: "backup", "restore", "import"; total: bytes to process.
    // plain_every: off a terminal, a line to stderr this often (0: none).
    progress(std::string what, std::uint64_t total, bool json,
             std::chrono::seconds plain_every = std::chrono::seconds(0));
    ~progress();
    progress(const progress&) = delete;
    progress& operator=(const progress&) = delete;

    void advance(std::uint64_t bytes);
    // Where a copy done elsewhere has got to (rctd's job), of total.
    void update(std::uint64_t done, std::uint64_t total);
    // The final event (JSON) or clears the terminal line.
    void done();

private:
    void report(bool final);
    void maybe_report();

    std::string what_;
    std::uint64_t total_;
    std::uint64_t done_ = 0;
    bool json_;
    bool tty_;
    std::chrono::seconds plain_every_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_{};
};

}  // namespace rct::tools
