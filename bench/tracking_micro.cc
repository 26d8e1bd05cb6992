// Micro-benchmarks of the tracker itself, without NBD or fio in the way:
//   - the data-path cost of begin_write/end_write on an already-marked
//     region (the steady state), single-threaded, in ns per write;
//   - the cut (epoch switch) under a concurrent writer thread;
//   - `changes` on a 1 TiB sparse disk with 0.1% of its 64 KiB chunks
//     changed (bar: < 100 ms), and on a dense pattern for extents per
//     second (bar: >= 1 M/s).
// Usage: tracking_micro [DIR]   (default: a temp dir under /var/tmp)
#include <rct/tracker.hh>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

struct write_req final : rct::io_request {
    void done(int) noexcept override {}
};

double ms_since(clk::time_point t)
{
    return std::chrono::duration<double, std::milli>(clk::now() - t).count();
}

// Marks one write; the regions are made durable up front so this never waits.
void mark(rct::tracker& t, std::uint64_t off, std::uint64_t len)
{
    write_req w;
    w.op = rct::io_op::write;
    w.offset = off;
    w.length = len;
    std::atomic<bool> resumed{false};
    if (!t.begin_write(w, [&](rct::io_request&, int) { resumed = true; })) {
        while (!resumed) {
            std::this_thread::yield();
        }
    }
    t.end_write(w);
}

}  // namespace

int main(int argc, char** argv)
{
    namespace fs = std::filesystem;
    char tmpl[] = "/var/tmp/rct-micro-XXXXXX";
    const fs::path dir = argc > 1 ? fs::path(argv[1]) : fs::path(::mkdtemp(tmpl));
    const std::uint64_t tib = std::uint64_t{1} << 40;
    const std::uint64_t g = 64 * 1024;
    rct::tracker_options opts;
    opts.persist_interval = std::chrono::hours(1);
    auto t = rct::tracker::open(dir / "t", "0f8e5a3c-1b2d-4e6f-8a9b-0c1d2e3f4a5b", tib, {1, 2, tib, 3, 4}, opts);

    // Steady-state write cost: same 64 MiB region, chunks already marked.
    std::mt19937_64 rng(1);
    for (int i = 0; i < 1024; ++i) {
        mark(*t, static_cast<std::uint64_t>(i) * g, 4096);
    }
    const int n = 5'000'000;
    auto t0 = clk::now();
    for (int i = 0; i < n; ++i) {
        mark(*t, (rng() % 1024) * g, 4096);
    }
    std::printf("write path (marked chunk, durable region): %.1f ns per write\n", ms_since(t0) * 1e6 / n);

    // Cuts under a concurrent writer.
    std::atomic<bool> stop{false};
    std::thread writer([&] {
        std::mt19937_64 r(2);
        while (!stop) {
            mark(*t, (r() % 1024) * g, 4096);
        }
    });
    double max_cut = 0, sum_cut = 0, max_call = 0;
    const int cuts = 200;
    for (int i = 0; i < cuts; ++i) {
        auto c0 = clk::now();
        auto info = t->checkpoint(std::nullopt);
        max_call = std::max(max_call, ms_since(c0));
        max_cut = std::max(max_cut, info.cut_ns / 1e6);
        sum_cut += info.cut_ns / 1e6;
    }
    stop = true;
    writer.join();
    std::printf("checkpoint under a writer: cut mean %.4f ms, max %.4f ms; whole call (incl. seal fdatasync) max "
                "%.2f ms\n",
                sum_cut / cuts, max_cut, max_call);

    // 1 TiB disk, 0.1% of chunks changed at random.
    const auto base = t->checkpoint("base");
    const std::uint64_t chunks = tib / g;
    const std::uint64_t changed = chunks / 1000;
    for (std::uint64_t i = 0; i < changed; ++i) {
        mark(*t, (rng() % chunks) * g, 4096);
    }
    t0 = clk::now();
    std::size_t extents = 0;
    std::optional<std::uint64_t> cursor = 0;
    while (cursor) {
        auto page = t->changes(base.token, std::nullopt, *cursor, 1000000);
        extents += page.extents.size();
        cursor = page.next_cursor;
    }
    const double sparse_ms = ms_since(t0);
    std::printf("changes on 1 TiB, 0.1%% of 64K chunks changed: %zu extents in %.1f ms\n", extents, sparse_ms);

    // Dense: every other chunk of the first 128 GiB -> 1 M extents.
    const auto dense = t->checkpoint("dense");
    for (std::uint64_t c = 0; c < 2 * 1024 * 1024; c += 2) {
        mark(*t, c * g, 4096);
    }
    t0 = clk::now();
    extents = 0;
    cursor = 0;
    while (cursor) {
        auto page = t->changes(dense.token, std::nullopt, *cursor, 1000000);
        extents += page.extents.size();
        cursor = page.next_cursor;
    }
    const double dense_ms = ms_since(t0);
    std::printf("changes, dense: %zu extents in %.1f ms = %.2f M extents/s\n", extents, dense_ms,
                extents / dense_ms / 1000.0);
    t.reset();
    if (argc <= 1) {
        fs::remove_all(dir);
    }
    return 0;
}
