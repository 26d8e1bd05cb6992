// Power loss and failing syncs, which kill -9 cannot show: a backend that
// keeps only what was made durable drops every unsynced write at a simulated
// power cut (LevelDB's fault-injection idea, at the block layer). Above it
// runs the real stack: the tracking layer over this backend over the file
// backend, on a real io_uring.
#define BOOST_TEST_MODULE fault_injection
#include <boost/test/unit_test.hpp>

#include <rct/buffer_pool.hh>
#include <rct/error.hh>
#include <rct/file_backend.hh>
#include <rct/io_ring.hh>
#include <rct/write_gate.hh>
#include <rct/tracker.hh>

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <vector>

namespace fs = std::filesystem;
using namespace rct;

namespace {

constexpr std::uint64_t disk_size = 32 << 20;

// Passes requests down; remembers the durable image (content as of the last
// successful sync, plus FUA writes) and can fail syncs on demand.
class fault_backend final : public backend, private io_layer {
public:
    fault_backend(std::unique_ptr<backend> inner, int fd) : inner_(std::move(inner)), fd_(fd), durable_(disk_size) {}

    void submit(io_ring& ring, io_request& r) noexcept override
    {
        if (r.op == io_op::flush && fail_syncs) {
            r.finish(-EIO);
            return;
        }
        r.push_layer(this);
        inner_->submit(ring, r);
    }
    int allocation(std::uint64_t o, std::uint64_t l, std::size_t m, std::vector<extent>& out) noexcept override
    {
        return inner_->allocation(o, l, m, out);
    }
    bool is_hole(std::uint64_t o, std::uint64_t l) noexcept override { return inner_->is_hole(o, l); }

    // Power cut: the file reverts to the durable image.
    void power_cut()
    {
        BOOST_REQUIRE(::pwrite(fd_, durable_.data(), durable_.size(), 0) == static_cast<ssize_t>(durable_.size()));
    }

    bool fail_syncs = false;

private:
    void finished(io_request& r, int res) noexcept override
    {
        if (res == 0 && r.op == io_op::write && (r.flags & io_fua)) {
            std::memcpy(durable_.data() + r.offset, r.buf, r.length);
        } else if (res == 0 && r.op == io_op::flush) {
            BOOST_REQUIRE(::pread(fd_, durable_.data(), durable_.size(), 0) ==
                          static_cast<ssize_t>(durable_.size()));
        }
        r.finish(res);
    }

    std::unique_ptr<backend> inner_;
    int fd_;
    std::vector<std::byte> durable_;
};

struct request final : io_request {
    bool finished = false;
    int result = 1;
    void done(int res) noexcept override
    {
        finished = true;
        result = res;
    }
};

// Runs tasks posted by the tracker on the test thread, like a worker.
struct inline_executor final : executor {
    std::vector<std::function<void()>> tasks;
    std::mutex m;
    void post(std::function<void()> t) override
    {
        std::lock_guard l(m);
        tasks.push_back(std::move(t));
    }
    void drain()
    {
        std::vector<std::function<void()>> batch;
        {
            std::lock_guard l(m);
            batch.swap(tasks);
        }
        for (auto& t : batch) {
            t();
        }
    }
};

int run(io_ring& ring, inline_executor& ex, backend& b, request& r)
{
    b.submit(ring, r);
    while (!r.finished) {
        ex.drain();
        ring.run(false);
    }
    return r.result;
}

struct stack {
    fs::path dir;
    int fd = -1;
    file_identity ident{};
    std::unique_ptr<tracker> t;
    fault_backend* faults = nullptr;
    std::unique_ptr<backend> top;

    void open()
    {
        tracker_options opts;
        opts.region_size = 1 << 20;
        opts.persist_interval = std::chrono::milliseconds(20);
        t = tracker::open(dir / "tracking", "0f8e5a3c-1b2d-4e6f-8a9b-0c1d2e3f4a5b", disk_size, ident, opts);
        auto f = std::make_unique<fault_backend>(make_file_backend(unique_fd(::dup(fd))), fd);
        faults = f.get();
        top = make_gated_backend(std::move(f), *t);
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(power_cut_keeps_durable_writes_and_tracks_every_write)
{
    char tmpl[] = "/var/tmp/rct-fault-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    stack s;
    s.dir = tmpl;
    s.fd = ::open((s.dir / "data.raw").c_str(), O_RDWR | O_CREAT, 0600);
    BOOST_REQUIRE(s.fd >= 0);
    BOOST_REQUIRE(::ftruncate(s.fd, disk_size) == 0);

    io_ring ring(64);
    ring.enable();
    inline_executor ex;
    ring.set_executor(&ex);
    buffer_pool pool(8 << 20);
    std::mt19937_64 rng(42);

    for (int cycle = 0; cycle < 20; ++cycle) {
        s.open();
        const std::string token = s.t->checkpoint(std::nullopt).token;
        std::map<std::uint64_t, std::uint8_t> durable;  // 4 KiB block -> pattern
        std::vector<std::uint64_t> written;
        std::map<std::uint64_t, std::uint8_t> pending;
        for (int i = 0; i < 200; ++i) {
            const std::uint64_t block = rng() % (disk_size / 4096);
            const auto pat = static_cast<std::uint8_t>(rng() | 1);
            const bool fua = rng() % 5 == 0;
            std::byte* b = pool.get(4096);
            std::memset(b, pat, 4096);
            request w;
            w.op = io_op::write;
            w.offset = block * 4096;
            w.length = 4096;
            w.buf = b;
            w.flags = fua ? io_fua : 0;
            BOOST_REQUIRE(run(ring, ex, *s.top, w) == 0);
            pool.put(b, 4096);
            written.push_back(block);
            if (fua) {
                durable[block] = pat;
                pending.erase(block);
            } else {
                pending[block] = pat;
            }
            if (rng() % 25 == 0) {
                request f;
                f.op = io_op::flush;
                const bool fail = rng() % 3 == 0;
                s.faults->fail_syncs = fail;
                const int res = run(ring, ex, *s.top, f);
                s.faults->fail_syncs = false;
                if (fail) {
                    BOOST_TEST(res == -EIO);  // a failed sync is reported, never swallowed
                } else {
                    BOOST_REQUIRE(res == 0);
                    for (auto& [k, v] : pending) {
                        durable[k] = v;
                    }
                    pending.clear();
                }
            }
        }
        // Power cut: unsynced data vanishes, the tracker dies without its
        // clean-shutdown seal.
        s.faults->power_cut();
        s.top.reset();
        s.t.reset();

        s.open();
        for (auto& [block, pat] : durable) {
            std::uint8_t got[4096];
            BOOST_REQUIRE(::pread(s.fd, got, 4096, static_cast<off_t>(block * 4096)) == 4096);
            BOOST_TEST((got[0] == pat && got[4095] == pat), "durable block " << block << " lost at cycle " << cycle);
        }
        std::vector<byte_extent> changed;
        std::optional<std::uint64_t> cursor = 0;
        while (cursor) {
            auto page = s.t->changes(token, std::nullopt, *cursor, 1000);
            changed.insert(changed.end(), page.extents.begin(), page.extents.end());
            cursor = page.next_cursor;
        }
        for (std::uint64_t block : written) {
            const std::uint64_t off = block * 4096;
            const bool covered = std::any_of(changed.begin(), changed.end(), [&](const byte_extent& e) {
                return off >= e.offset && off < e.offset + e.length;
            });
            BOOST_TEST(covered, "write at " << off << " missing from changes after power cut, cycle " << cycle);
        }
        s.top.reset();
        s.t.reset();
    }
    ::close(s.fd);
    fs::remove_all(s.dir);
}
