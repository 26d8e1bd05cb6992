// io_ring and the file backend: real io_uring against a temporary file.
#define BOOST_TEST_MODULE io_ring
#include <boost/test/unit_test.hpp>

#include <rct/buffer_pool.hh>
#include <rct/file_backend.hh>
#include <rct/io_ring.hh>

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct counting final : rct::completion {
    int calls = 0;
    int last = 0;
    void complete(int res, std::uint32_t) noexcept override
    {
        ++calls;
        last = res;
    }
};

struct test_request final : rct::io_request {
    bool finished = false;
    int result = 1;
    void done(int res) noexcept override
    {
        finished = true;
        result = res;
    }
};

struct temp_file {
    std::string path;
    int fd;
    temp_file()
    {
        char tmpl[] = "/var/tmp/rct-io-ring-XXXXXX";
        fd = ::mkstemp(tmpl);
        BOOST_REQUIRE(fd >= 0);
        path = tmpl;
        BOOST_REQUIRE(::ftruncate(fd, 4 << 20) == 0);
    }
    ~temp_file() { ::unlink(path.c_str()); }
};

int run_until(rct::io_ring& ring, test_request& r)
{
    while (!r.finished) {
        BOOST_REQUIRE(ring.run(true) >= 0);
    }
    return r.result;
}

}  // namespace

BOOST_AUTO_TEST_CASE(nop_completes_with_its_completion)
{
    rct::io_ring ring(8);
    ring.enable();
    counting c;
    io_uring_prep_nop(ring.sqe(&c));
    io_uring_prep_nop(ring.sqe(&c));
    io_uring_prep_nop(ring.sqe(nullptr));  // ignored CQE
    int seen = 0;
    while (c.calls < 2) {
        const int n = ring.run(true);
        BOOST_REQUIRE(n >= 0);
        seen += n;
    }
    BOOST_TEST(c.calls == 2);
    BOOST_TEST(c.last == 0);
}

BOOST_AUTO_TEST_CASE(sqe_never_fails_when_the_queue_is_full)
{
    rct::io_ring ring(4);
    ring.enable();
    counting c;
    for (int i = 0; i < 40; ++i) {
        io_uring_prep_nop(ring.sqe(&c));
    }
    while (c.calls < 40) {
        BOOST_REQUIRE(ring.run(true) >= 0);
    }
    BOOST_TEST(c.calls == 40);
}

BOOST_AUTO_TEST_CASE(errors_arrive_as_negative_errno)
{
    rct::io_ring ring(4);
    ring.enable();
    counting c;
    char b[16];
    io_uring_prep_read(ring.sqe(&c), 1 << 20, b, sizeof b, 0);  // no such fd
    while (c.calls < 1) {
        BOOST_REQUIRE(ring.run(true) >= 0);
    }
    BOOST_TEST(c.last == -EBADF);
}

BOOST_AUTO_TEST_CASE(file_backend_round_trip)
{
    temp_file f;
    auto store = rct::make_file_backend(rct::unique_fd(::dup(f.fd)));
    rct::io_ring ring(16);
    ring.enable();
    rct::buffer_pool pool(1 << 20);

    std::byte* w = pool.get(65536);
    BOOST_REQUIRE(w);
    for (int i = 0; i < 65536; ++i) {
        w[i] = static_cast<std::byte>(i * 7);
    }
    test_request wr;
    wr.op = rct::io_op::write;
    wr.flags = rct::io_fua;
    wr.offset = 1 << 20;
    wr.length = 65536;
    wr.buf = w;
    store->submit(ring, wr);
    BOOST_TEST(run_until(ring, wr) == 0);

    std::byte* r = pool.get(65536);
    test_request rd;
    rd.op = rct::io_op::read;
    rd.offset = 1 << 20;
    rd.length = 65536;
    rd.buf = r;
    store->submit(ring, rd);
    BOOST_TEST(run_until(ring, rd) == 0);
    BOOST_TEST(std::memcmp(w, r, 65536) == 0);

    test_request fl;
    fl.op = rct::io_op::flush;
    store->submit(ring, fl);
    BOOST_TEST(run_until(ring, fl) == 0);

    // Allocation: data only where written.
    std::vector<rct::extent> ext;
    BOOST_TEST(store->allocation(0, 4 << 20, 100, ext) == 0);
    std::uint64_t data = 0;
    std::uint64_t total = 0;
    for (auto& e : ext) {
        total += e.length;
        if (!(e.flags & rct::extent_hole)) {
            data += e.length;
        }
    }
    BOOST_TEST(total == (4u << 20));
    BOOST_TEST(data >= 65536u);
    BOOST_TEST(store->is_hole(0, 65536));
    BOOST_TEST(!store->is_hole(1 << 20, 4096));

    // Zeroing with holes allowed, then without.
    for (std::uint16_t flags : {std::uint16_t(rct::io_may_trim), std::uint16_t(0)}) {
        store->submit(ring, wr);
        BOOST_REQUIRE(run_until(ring, wr) == 0);
        wr.finished = false;
        test_request z;
        z.op = rct::io_op::write_zeroes;
        z.flags = flags;
        z.offset = 1 << 20;
        z.length = 65536;
        store->submit(ring, z);
        BOOST_TEST(run_until(ring, z) == 0);
        rd.finished = false;
        store->submit(ring, rd);
        BOOST_TEST(run_until(ring, rd) == 0);
        bool zero = true;
        for (int i = 0; i < 65536; ++i) {
            zero &= r[i] == std::byte{0};
        }
        BOOST_TEST(zero);
    }
    pool.put(w, 65536);
    pool.put(r, 65536);
}

BOOST_AUTO_TEST_CASE(buffer_pool_recycles)
{
    rct::buffer_pool pool(1 << 20);
    std::byte* a = pool.get(5000);
    BOOST_REQUIRE(a);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(a) % 4096 == 0u);
    pool.put(a, 5000);
    std::byte* b = pool.get(8192);  // same size class
    BOOST_TEST(a == b);
    pool.put(b, 8192);
    BOOST_TEST(pool.get((32u << 20) + 1) == nullptr);
}
