// Snapshots: the store index (lookup, garbage, persistence, damage), the
// copier's I/O (O_DIRECT and page cache), and the
// whole engine (disk data path, views, delete and reclaim, restart, the
// store limit, clone and restore), against real files through io_uring.
#define BOOST_TEST_MODULE snapshots
#include <boost/test/unit_test.hpp>

#include "engine.hh"

#include "snapshots/chunk_copier.hh"
#include "snapshots/index.hh"

#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/sync_io.hh>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace fs = std::filesystem;
using namespace rct;
using snapshots::new_copy;
using snapshots::snapshot_record;
using snapshots::source;
using snapshots::store_index;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;
constexpr std::uint64_t g = 64 * KiB;  // default granularity


snapshot_record snap(std::uint64_t epoch)
{
    return {epoch, 1, 0, 16 * MiB, "s" + std::to_string(epoch), {}};
}

void add_snap(store_index& x, std::uint64_t epoch)
{
    x.log_snapshot(snap(epoch));
    x.apply_snapshot(snap(epoch));
}

void add_copy(store_index& x, std::uint64_t chunk, std::uint64_t label, std::uint64_t slot)
{
    const std::vector<new_copy> c{{chunk, {label, slot}, 0}};
    x.write_copies(c);
    x.sync_log();
    x.apply_copies(c);
}

std::vector<std::uint64_t> collect(store_index& x)
{
    const auto dead = x.garbage();
    x.log_free(dead);
    return x.apply_free(dead);
}

// Bytes of a deterministic pattern for (seed, offset).
std::vector<std::byte> pattern(std::uint64_t seed, std::uint64_t len)
{
    std::vector<std::byte> v(len);
    std::mt19937_64 rng(seed);
    for (auto& b : v) {
        b = static_cast<std::byte>(rng());
    }
    return v;
}

// A disk in a fresh state dir, written and read through the engine.
struct engine : test::engine {
    explicit engine(std::uint64_t store_limit = 0)
        : test::engine("snapshots", [&](disk_options& o) { o.snapshots.store_limit = store_limit; },
                       log::level::warning)
    {
    }
};

void overlay(std::vector<std::byte>& img, std::uint64_t off, const std::vector<std::byte>& data)
{
    std::copy(data.begin(), data.end(), img.begin() + static_cast<long>(off));
}

}  // namespace

BOOST_AUTO_TEST_CASE(lookup_follows_labels)
{
    test::temp_dir t{"snapshots", log::level::warning};
    store_index x(t.path);
    x.init(g, "id");
    add_snap(x, 3);
    add_snap(x, 7);
    add_snap(x, 9);
    // Chunk 5 copied after snapshot 3 (label 3) and after 9 (label 9).
    add_copy(x, 5, 3, 10);
    add_copy(x, 5, 9, 11);
    BOOST_TEST(x.lookup(5, 3).kind == source::slot);
    BOOST_TEST(x.lookup(5, 3).slot_no == 10u);
    // Snapshot 7: the first copy labelled >= 7 is the one after 9.
    BOOST_TEST(x.lookup(5, 7).slot_no == 11u);
    BOOST_TEST(x.lookup(5, 9).slot_no == 11u);
    BOOST_TEST(x.lookup(5, 10).kind == source::live);
    BOOST_TEST(x.lookup(6, 3).kind == source::live);
    add_copy(x, 6, 7, snapshots::zero_slot);
    BOOST_TEST(x.lookup(6, 3).kind == source::zero);
    BOOST_TEST(x.preserved_since(5, 9));
    BOOST_TEST(!x.preserved_since(6, 9));
    BOOST_TEST(x.readers_of_live(6) == (std::vector<std::uint64_t>{9}));
    BOOST_TEST(x.max_epoch() == 9u);
}

BOOST_AUTO_TEST_CASE(delete_collects_only_unused_copies)
{
    test::temp_dir t{"snapshots", log::level::warning};
    store_index x(t.path);
    x.init(g, "id");
    add_snap(x, 3);
    add_snap(x, 7);
    add_copy(x, 1, 3, 20);  // serves 3
    add_copy(x, 1, 7, 21);  // serves 7
    add_copy(x, 2, 7, 22);  // serves 3 and 7 (chunk 2 unchanged between them)
    BOOST_TEST(collect(x).empty());
    x.log_drop(7);
    x.apply_drop(7);
    auto freed = collect(x);
    BOOST_TEST(freed == (std::vector<std::uint64_t>{21}));  // chunk 2's copy still serves 3
    BOOST_TEST(x.lookup(2, 3).slot_no == 22u);
    x.log_drop(3);
    x.apply_drop(3);
    freed = collect(x);
    std::sort(freed.begin(), freed.end());
    BOOST_TEST(freed == (std::vector<std::uint64_t>{20, 22}));
    BOOST_TEST(x.copy_count() == 0u);
}

BOOST_AUTO_TEST_CASE(index_survives_reopen_and_detects_damage)
{
    test::temp_dir t{"snapshots", log::level::warning};
    {
        store_index x(t.path);
        x.init(g, "id");
        add_snap(x, 4);
        add_copy(x, 8, 4, 1);
        x.log_invalid({4}, "because");
        x.apply_invalid({4}, "because");
    }
    {
        store_index y(t.path);
        BOOST_TEST(y.granularity() == g);
        BOOST_TEST(y.snaps().at(4).invalid_reason == "because");
        BOOST_TEST(y.lookup(8, 4).slot_no == 1u);
    }
    // A torn tail (an append cut short) is cut off; a flipped byte inside
    // acknowledged records is damage.
    const fs::path log = t.path / "index.log";
    const auto size = fs::file_size(log);
    {
        std::ofstream(log, std::ios::app) << std::string(10, '\0');
    }
    BOOST_CHECK_NO_THROW(store_index{t.path});
    BOOST_TEST(fs::file_size(log) == size);
    {
        std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(30);
        f.put('\x5a');
    }
    BOOST_TEST(!store_index{t.path}.damage().empty());
}

BOOST_AUTO_TEST_CASE(views_hold_point_in_time_content)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    auto img = pattern(1, 8 * MiB);
    e.write(0, img);
    const auto a = img;
    e.d().snapshots()->snapshot("s1");
    const auto b = pattern(2, 3 * MiB);
    e.write(MiB + 4096, b);  // not chunk-aligned: copies hold the rest of each chunk
    overlay(img, MiB + 4096, b);
    const auto ab = img;
    e.d().snapshots()->snapshot("s2");
    const auto c = pattern(3, 100 * KiB);
    e.write(2 * MiB, c);
    e.write(7 * MiB, c);
    overlay(img, 2 * MiB, c);
    overlay(img, 7 * MiB, c);

    BOOST_TEST((e.read_snap("s1", 0, 8 * MiB) == a));
    BOOST_TEST((e.read_snap("s2", 0, 8 * MiB) == ab));
    BOOST_TEST((e.read(e.d().store(), 0, 8 * MiB) == img));
    // Reads not aligned to chunks or spanning copies and live chunks.
    BOOST_TEST((e.read_snap("s1", MiB - 512, 70 * KiB) ==
                std::vector<std::byte>(a.begin() + MiB - 512, a.begin() + MiB - 512 + 70 * KiB)));
    // Views are read-only.
    auto v = e.d().snapshots()->view("s1");
    std::vector<std::byte> buf(4096);
    BOOST_TEST(e.io.run(*v, io_op::write, 0, 4096, buf.data()) == -EPERM);
    BOOST_TEST(e.io.run(*v, io_op::trim, 0, 4096, nullptr) == -EPERM);
    v.reset();

    // The same after a clean restart.
    e.restart();
    BOOST_TEST((e.read_snap("s1", 0, 8 * MiB) == a));
    BOOST_TEST((e.read_snap("s2", 0, 8 * MiB) == ab));

    // Deleting s1 frees what only it held; s2 is unharmed; s1 stays a checkpoint.
    const auto before = e.d().snapshots()->status().store_bytes;
    e.d().snapshots()->delete_snapshot("s1", false);
    BOOST_TEST(e.d().snapshots()->status().store_bytes < before);
    BOOST_TEST((e.read_snap("s2", 0, 8 * MiB) == ab));
    BOOST_TEST(e.d().tracking()->checkpoint_epoch("s1").has_value());
    BOOST_CHECK_THROW(e.d().snapshots()->view("s1"), error);
}

// Deletes compact index.log when it has grown well past its live records,
// so a daemon that cuts and deletes for months does not grow it until a
// restart. A trim after a cut records a (zero) copy per chunk: 262,144
// chunks of 4 KiB make 8 MiB of records, all dead once the snapshot goes.
BOOST_AUTO_TEST_CASE(deletes_compact_the_index_log)
{
    engine e;
    e.reg->create("d", GiB, 4 * KiB);
    e.d().snapshots()->snapshot("s1");
    BOOST_REQUIRE_EQUAL(e.io.run(e.d().store(), io_op::trim, 0, GiB, nullptr), 0);
    BOOST_TEST(e.d().snapshots()->status().copies == GiB / (4 * KiB));
    const fs::path log = e.d().dir() / "snapshots" / "index.log";
    const auto grown = fs::file_size(log);
    BOOST_TEST(grown > 8 * MiB);
    e.d().snapshots()->snapshot("s2");  // a live snapshot, to see it survive the rewrite
    e.d().snapshots()->delete_snapshot("s1", false);
    BOOST_TEST(e.d().snapshots()->status().copies == 0u);
    BOOST_TEST(fs::file_size(log) < MiB);
    e.restart();
    BOOST_TEST(e.d().snapshots()->snapshots().size() == 1u);
    BOOST_TEST(e.d().snapshots()->snapshots().front().checkpoint.name == "s2");
}

BOOST_AUTO_TEST_CASE(zero_chunks_cost_no_space)
{
    engine e;
    e.reg->create("d", 4 * MiB);  // sparse: all zeroes
    e.d().snapshots()->snapshot("s");
    e.write(0, pattern(4, 4 * MiB));
    BOOST_TEST(e.d().snapshots()->status().copies == 4 * MiB / g);
    BOOST_TEST(e.d().snapshots()->status().store_bytes == 0u);
    BOOST_TEST((e.read_snap("s", 0, 4 * MiB) == std::vector<std::byte>(4 * MiB)));
}

BOOST_AUTO_TEST_CASE(store_limit_invalidates_and_keeps_the_disk_working)
{
    engine e(256 * KiB);  // room for 4 copies
    e.reg->create("d", 4 * MiB);
    auto img = pattern(5, 4 * MiB);
    e.write(0, img);
    e.d().snapshots()->snapshot("s");
    const auto b = pattern(6, MiB);
    e.write(0, b);  // 16 chunks need copies
    overlay(img, 0, b);
    BOOST_TEST((e.read(e.d().store(), 0, 4 * MiB) == img));
    const auto list = e.d().snapshots()->snapshots();
    BOOST_REQUIRE(list.size() == 1u);
    BOOST_TEST(!list[0].valid);
    BOOST_TEST(list[0].invalid_reason.find("full") != std::string::npos);
    BOOST_CHECK_THROW(e.d().snapshots()->view("s"), error);
    // Invalid stays invalid across a restart, and its copies are reclaimed.
    e.restart();
    BOOST_TEST(!e.d().snapshots()->snapshots()[0].valid);
    BOOST_TEST(e.d().snapshots()->status().store_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(clone_and_restore_round_trip)
{
    engine e;
    e.reg->create("d", 4 * MiB);
    const auto a = pattern(7, 4 * MiB);
    e.write(0, a);
    e.d().snapshots()->snapshot("s1");
    auto img = a;
    const auto b = pattern(8, 512 * KiB);
    e.write(3 * MiB, b);
    overlay(img, 3 * MiB, b);
    e.d().snapshots()->snapshot("s2");
    e.write(0, pattern(9, MiB));

    e.reg->clone("d", "s1", "c");
    BOOST_TEST((e.read(e.d("c").store(), 0, 4 * MiB) == a));

    e.reg->restore("d", "s1", false);
    BOOST_TEST((e.read(e.d().store(), 0, 4 * MiB) == a));
    BOOST_TEST((e.read_snap("s2", 0, 4 * MiB) == img));  // the newer snapshot kept its content
    // The restore is a change like any other: tracked since s2.
    const auto page = e.d().tracking()->changes("s2", std::nullopt, 0, 1000);
    BOOST_TEST(!page.extents.empty());
}

BOOST_AUTO_TEST_CASE(shrinking_a_disk_with_snapshots_is_refused)
{
    engine e;
    e.reg->create("d", 4 * MiB);
    e.d().snapshots()->snapshot("s");
    BOOST_CHECK_EXCEPTION(e.reg->resize("d", 2 * MiB, true), error,
                          [](const error& x) { return x.code() == errc::invalid_argument; });
    e.reg->resize("d", 8 * MiB, false);
    e.write(6 * MiB, pattern(10, MiB));
    BOOST_TEST(e.d().snapshots()->view("s")->size() == 4 * MiB);
}

BOOST_AUTO_TEST_CASE(a_torn_last_batch_is_forgotten_at_open)
{
    engine e;
    e.reg->create("d", 4 * MiB);
    const auto a = pattern(11, 4 * MiB);
    e.write(0, a);
    e.d().snapshots()->snapshot("s");
    const fs::path store = e.d().dir() / "snapshots";
    e.reg->close_all();
    e.reg.reset();
    // As if rctd died after the COPIES record of chunk 3 reached the disk
    // but before its slot's data did (they are synced in parallel): the
    // write it held back was never issued.
    {
        store_index x(store);
        const std::vector<new_copy> c{{3, {x.newest(), 0}, 0x1234}};
        x.write_copies(c);
        x.sync_log();
    }
    {
        std::ofstream(store / "chunks.dat", std::ios::binary) << std::string(g, 'x');
    }
    e.reg = std::make_unique<disk_registry>(e.dir.path, e.opts);
    BOOST_TEST(e.d().snapshots()->status().copies == 0u);
    BOOST_TEST((e.read_snap("s", 0, 4 * MiB) == a));
}

// The copier's I/O on its own, both ways it writes slots: around the page
// cache, and through it (as where the filesystem refuses O_DIRECT; here the
// O_DIRECT open is made to fail). A chunk past the end of the data file
// reads as zeroes; slots land out of order and beyond the file's end.
BOOST_AUTO_TEST_CASE(chunk_copier_copies_with_and_without_o_direct)
{
    constexpr std::uint32_t gran = 4096;
    for (const bool direct : {true, false}) {
        BOOST_TEST_CONTEXT("direct " << direct)
        {
            test::temp_dir t{"snapshots", log::level::warning};
            const auto data = pattern(21, 10 * gran + 100);  // ends inside chunk 10
            {
                std::ofstream(t.path / "data.raw", std::ios::binary)
                    .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
            }
            const int dfd = ::open((t.path / "data.raw").c_str(), O_RDONLY | O_CLOEXEC);
            const int cfd = ::open((t.path / "chunks.dat").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            BOOST_REQUIRE(dfd >= 0 && cfd >= 0);
            snapshots::chunk_copier cp(dfd, cfd, direct ? t.path / "chunks.dat" : t.path / "absent" / "chunks.dat",
                                       gran);
            cp.enable();
            BOOST_REQUIRE_GE(cp.window(), 4u);
            const std::vector<std::uint64_t> chunks{10, 2, 7, 11};  // 11: wholly past the end
            std::vector<int> res(chunks.size(), 1);
            cp.read(chunks, res);
            for (int r : res) {
                BOOST_TEST(r == 0);
            }
            // Slots out of order, one far beyond the file's end.
            const std::vector<snapshots::chunk_copier::slot_write> ws{{0, 5}, {1, 0}, {2, 1}, {3, 40}};
            std::vector<int> wres(ws.size(), 1);
            cp.write(ws, wres);
            for (int r : wres) {
                BOOST_TEST(r == 0);
            }
            cp.start_sync();
            BOOST_TEST(cp.finish_sync() == 0);
            auto expect = [&](std::uint64_t chunk) {
                std::vector<std::byte> v(gran);
                const std::uint64_t off = chunk * gran;
                for (std::uint64_t i = 0; i < gran && off + i < data.size(); ++i) {
                    v[i] = data[off + i];
                }
                return v;
            };
            for (std::size_t k = 0; k < ws.size(); ++k) {
                std::vector<std::byte> got(gran);
                BOOST_REQUIRE_EQUAL(::pread(cfd, got.data(), gran, static_cast<off_t>(ws[k].slot * gran)),
                                    static_cast<ssize_t>(gran));
                BOOST_TEST((got == expect(chunks[ws[k].buffer])), "slot " << ws[k].slot);
            }
            ::close(dfd);
            ::close(cfd);
        }
    }
}

// The limits: at least 65,535 snapshots retained per disk; cutting
// them back to back is also far beyond one cut per second.
BOOST_AUTO_TEST_CASE(sixty_five_thousand_snapshots)
{
    if (!fs::is_directory("/dev/shm")) {
        BOOST_TEST_MESSAGE("skipped: no /dev/shm");
        return;
    }
    char tmpl[] = "/dev/shm/rct-snapshots-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
    struct remover {
        fs::path p;
        ~remover() { fs::remove_all(p); }
    } cleanup{tmpl};
    disk_options opts;
    auto reg = std::make_unique<disk_registry>(tmpl, opts);
    reg->create("d", MiB);
    sync_io io;
    auto put = [&](std::uint64_t seed) {
        auto data = pattern(seed, 4096);
        BOOST_REQUIRE_EQUAL(io.run(reg->find("d")->store(), io_op::write, (seed % 16) * g, 4096, data.data()), 0);
    };
    constexpr unsigned n = 65535;
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned i = 0; i < n; ++i) {
        if (i % 4096 == 0) {
            put(i);
        }
        reg->find("d")->snapshots()->snapshot("s" + std::to_string(i));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    BOOST_TEST_MESSAGE(n << " snapshots in " << secs << " s (" << n / secs << " cuts/s)");
    BOOST_TEST(reg->find("d")->snapshots()->snapshots().size() == n);
    reg->close_all();
    reg = std::make_unique<disk_registry>(tmpl, opts);
    auto* s = reg->find("d")->snapshots();
    BOOST_TEST(s->snapshots().size() == n);
    // The oldest snapshot still reads its content: chunk 0 as written before it.
    auto v = s->view("s0");
    std::vector<std::byte> got(4096);
    BOOST_REQUIRE_EQUAL(io.run(*v, io_op::read, 0, 4096, got.data()), 0);
    BOOST_TEST((got == pattern(0, 4096)));
}
