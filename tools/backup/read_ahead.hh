// read_ahead: reads byte ranges from one connection on a thread of its own,
// up to `depth` blocks ahead of the consumer, so that reading the snapshot
// overlaps writing (and hashing) into the sink. Several reads are in flight
// at once (up to 16, or 16 MiB), so that many small ranges are not read one
// round trip at a time.
//
// The reader thread owns the connection while the read_ahead lives; the
// consumer calls next() from one thread. The destructor stops the reader and
// joins it. A failed read ends the stream: next() rethrows it.
#pragma once

#include "nbd.hh"

#include <rct/thread_annotations.hh>

#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace rct::backup {

class read_ahead {
public:
    struct block {
        std::uint64_t offset = 0;
        buffer data;
    };

    // ranges: (offset, length), read in order in blocks of at most block_size.
    read_ahead(connection& in, std::vector<byte_range> ranges, std::size_t block_size, std::size_t depth);
    ~read_ahead();
    read_ahead(const read_ahead&) = delete;
    read_ahead& operator=(const read_ahead&) = delete;

    // The next block, in order; empty at the end.
    std::optional<block> next();

private:
    // A read handed to libnbd, which owns its buffer until it completes.
    struct started {
        std::int64_t cookie;
        block b;
    };

    void run();
    // Starts every read, at most 16 (or 16 MiB) ahead; false when told to stop.
    bool read_all();
    // The oldest read, once complete, to the consumer; false when told to stop.
    bool deliver_oldest();
    // Waits out the reads still in flight, whatever ended the stream.
    void drain() noexcept;
    // Waits for room; false when told to stop.
    bool push(block b);

    connection& in_;
    const std::vector<byte_range> ranges_;
    const std::size_t block_size_;
    const std::size_t depth_;
    rct::mutex m_;
    rct::cond_var cv_;
    std::deque<block> ready_ GUARDED_BY(m_);
    bool done_ GUARDED_BY(m_) = false;
    bool stop_ GUARDED_BY(m_) = false;
    std::exception_ptr error_ GUARDED_BY(m_);
    std::deque<started> reads_;  // the reader thread's alone
    std::uint64_t reading_ = 0;  // bytes in reads_
    std::thread thread_;  // last: starts once the rest is built
};

}  // namespace rct::backup
