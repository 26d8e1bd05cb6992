// progress: how far a copy is, for people (a line on a terminal's stderr,
// redrawn at most 4 times a second, with rate and ETA) or programs (--json:
// one JSON object per line on stdout, at most 4 a second, plus the first and
// the last).
//
// Owned by the command that copies; one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rct::backup {

class progress {
public:
    // what: "backup", "restore", "verify"; total: bytes to process.
    progress(std::string what, std::uint64_t total, bool json);
    ~progress();
    progress(const progress&) = delete;
    progress& operator=(const progress&) = delete;

    void advance(std::uint64_t bytes);
    // The final event (JSON) or clears the terminal line.
    void done();

private:
    void report(bool final);

    std::string what_;
    std::uint64_t total_;
    std::uint64_t done_ = 0;
    bool json_;
    bool tty_;
    bool finished_ = false;
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point last_{};
};

}  // namespace rct::backup
