// Management calls under load and racing each other: a shrink with writes
// in flight, a refused grow, lookups while a call does I/O, a deleted disk
// that outlives its name, calls racing a restore. Each case here failed on
// the code before the fix it covers, except shrink_ends_under_steady_writes,
// which guards the fix's own liveness.
#define BOOST_TEST_MODULE mgmt_races
#include <boost/test/unit_test.hpp>

#include "engine.hh"

#include "persist/env.hh"
#include "tracking/store.hh"

#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/sync_io.hh>

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

namespace fs = std::filesystem;
using namespace rct;
using rct::test::code_of;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;



std::string read_text(const fs::path& p)
{
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A state dir with disks served through the engine.
struct engine : test::engine {
    explicit engine(bool tracking = true)
        : test::engine("mgmt", [&](disk_options& o) {
              o.tracking = tracking;
              o.tracker.persist_interval = std::chrono::milliseconds(50);
              o.tracker.region_size = MiB;
          })
    {
    }
    void write(std::uint64_t off, std::uint64_t len, const std::string& name = "d")
    {
        test::engine::write(off, std::vector<std::byte>(len, std::byte{0x5a}), name);
    }
};

// A write submitted on a ring nobody runs yet: in flight until run_to_end().
struct parked_write final : io_request {
    explicit parked_write(std::uint64_t off, std::uint64_t len) : data(len, std::byte{0x77})
    {
        ring.enable();
        op = io_op::write;
        offset = off;
        length = len;
        buf = data.data();
    }
    void done(int res) noexcept override
    {
        result = res;
        finished = true;
    }
    void run_to_end()
    {
        while (!finished) {
            BOOST_REQUIRE(ring.run(true) >= 0);
        }
    }
    io_ring ring{8};
    std::vector<std::byte> data;
    int result = 0;
    bool finished = false;
};

std::uint64_t size_of(const fs::path& p)
{
    struct stat st {};
    BOOST_REQUIRE(::stat(p.c_str(), &st) == 0);
    return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace

// Defect a: the write past the new end was admitted before the shrink; it
// must complete before the truncate, not extend the file after it.
BOOST_AUTO_TEST_CASE(shrink_waits_for_writes_in_flight)
{
    engine e(false);
    e.reg->create("d", 4 * MiB);
    parked_write w(3 * MiB, 4 * KiB);
    e.d().store().submit(w.ring, w);
    auto shrink = std::async(std::launch::async, [&] { e.reg->resize("d", MiB, true); });
    BOOST_TEST((shrink.wait_for(300ms) == std::future_status::timeout));  // it waits for the write
    w.run_to_end();
    BOOST_TEST(w.result == 0);
    shrink.get();
    BOOST_TEST(size_of(e.file("data.raw")) == MiB);

    // Admitted from now on: only writes within the new size.
    parked_write late(2 * MiB, 4 * KiB);
    e.d().store().submit(late.ring, late);
    late.run_to_end();
    BOOST_TEST(late.result == -ENOSPC);
    BOOST_TEST(size_of(e.file("data.raw")) == MiB);

    e.restart();
    BOOST_REQUIRE(e.reg->find("d"));
    BOOST_TEST(e.d().size() == MiB);
    BOOST_TEST(e.reg->quarantined().empty());
}

// A shrink under a steady stream of writes below the new end still ends:
// only writes admitted before it are waited for.
BOOST_AUTO_TEST_CASE(shrink_ends_under_steady_writes)
{
    engine e(false);
    e.reg->create("d", 4 * MiB);
    std::atomic<bool> stop{false};
    std::atomic<int> failed{0};
    std::thread writer([&] {
        sync_io io;
        std::vector<std::byte> buf(4 * KiB, std::byte{1});
        while (!stop) {
            if (io.run(e.d().store(), io_op::write, 0, buf.size(), buf.data()) != 0) {
                ++failed;
            }
        }
    });
    e.reg->resize("d", 2 * MiB, true);
    stop = true;
    writer.join();
    BOOST_TEST(failed == 0);
    BOOST_TEST(size_of(e.file("data.raw")) == 2 * MiB);
}

// Defect b: the tracker refuses a grow of more than 4x while it runs; that
// refusal must come before any file changes.
BOOST_AUTO_TEST_CASE(refused_grow_changes_nothing)
{
    engine e;
    e.reg->create("d", 16 * MiB);
    const std::string before = read_text(e.file("disk.json"));
    BOOST_TEST(code_of([&] { e.reg->resize("d", 80 * GiB, false); }) == errc::invalid_argument);
    BOOST_TEST(size_of(e.file("data.raw")) == 16 * MiB);
    BOOST_TEST(read_text(e.file("disk.json")) == before);
    BOOST_TEST(e.d().size() == 16 * MiB);
    e.restart();
    BOOST_TEST(e.d().size() == 16 * MiB);
}

namespace {

// What a resize had done when the daemon died between the truncate and the
// final disk.json: resize_to recorded, the file resized and synced.
void die_mid_resize(engine& e, std::uint64_t to)
{
    e.reg.reset();
    auto meta = nlohmann::ordered_json::parse(read_text(e.file("disk.json")));
    meta["resize_to"] = to;
    std::ofstream(e.file("disk.json"), std::ios::trunc) << meta.dump(4) << "\n";
    fs::resize_file(e.file("data.raw"), to);
}

}  // namespace

// Defect b: a grow the next start completes from its resize_to record
// counts the new space as changed since every checkpoint, whether the
// tracker learns its old size from current.map or (that file lost) from the
// newest checkpoint.
BOOST_AUTO_TEST_CASE(grow_completed_at_start_counts_as_changed)
{
    for (const bool lose_current_map : {false, true}) {
        engine e;
        e.reg->create("d", 16 * MiB);
        e.d().tracking()->checkpoint(std::string("c1"));
        std::this_thread::sleep_for(200ms);  // the live map after the cut is persisted
        die_mid_resize(e, 32 * MiB);
        if (lose_current_map) {
            fs::remove(e.file("tracking/current.map"));
        }
        e.crash_and_restart();
        BOOST_REQUIRE(e.reg->find("d"));
        BOOST_TEST(e.d().size() == 32 * MiB);
        const auto page = e.d().tracking()->changes("c1", std::nullopt, 0, 1000);
        std::uint64_t covered = 0;
        for (const auto& x : page.extents) {
            const std::uint64_t a = std::max(x.offset, 16 * MiB);
            const std::uint64_t b = x.offset + x.length;
            covered += b > a ? b - a : 0;
        }
        BOOST_TEST(covered == 16 * MiB, "current.map lost: " << lose_current_map);
    }
}

// A shrink the next start completes resets tracking like one at run time:
// the cut-off content is gone, so older tokens must ask for a full backup.
BOOST_AUTO_TEST_CASE(shrink_completed_at_start_resets_tracking)
{
    engine e;
    e.reg->create("d", 32 * MiB);
    const std::string token = e.d().tracking()->checkpoint(std::string("c1")).token;
    std::this_thread::sleep_for(200ms);
    die_mid_resize(e, 16 * MiB);
    e.crash_and_restart();
    BOOST_REQUIRE(e.reg->find("d"));
    BOOST_TEST(e.d().size() == 16 * MiB);
    BOOST_TEST(code_of([&] { e.d().tracking()->changes(token, std::nullopt, 0, 1000); }) ==
               errc::full_backup_required);
}

// The real env, except that opening disk d's disk.json.tmp waits until
// released: a management call stuck in file I/O.
class stalling_env final : public persist::env {
public:
    void release()
    {
        std::lock_guard l(mu_);
        released_ = true;
        cv_.notify_all();
    }
    int open(const std::filesystem::path& p, int flags, mode_t mode) override
    {
        if (p.filename() == "disk.json.tmp" && p.parent_path().filename() == "d") {
            std::unique_lock l(mu_);
            cv_.wait(l, [&] { return released_; });
        }
        return real().open(p, flags, mode);
    }
    int write_at(int fd, const void* d, std::size_t n, std::uint64_t off) override
    {
        return real().write_at(fd, d, n, off);
    }
    ssize_t read_at(int fd, void* d, std::size_t n, std::uint64_t off) override
    {
        return real().read_at(fd, d, n, off);
    }
    int datasync(int fd) override { return real().datasync(fd); }
    int truncate(int fd, std::uint64_t size) override { return real().truncate(fd, size); }
    int punch_hole(int fd, std::uint64_t off, std::uint64_t len) override { return real().punch_hole(fd, off, len); }
    int rename(const fs::path& from, const fs::path& to) override { return real().rename(from, to); }
    int rename_at(int fd, const fs::path& from, int td, const fs::path& to) override
    {
        return real().rename_at(fd, from, td, to);
    }
    int remove(const fs::path& p) override { return real().remove(p); }
    int sync_dir(const fs::path& dir) override { return real().sync_dir(dir); }
    int mkdir(const fs::path& dir, mode_t mode) override { return real().mkdir(dir, mode); }
    void synced(int fd, std::uint64_t off, std::uint64_t len) noexcept override { real().synced(fd, off, len); }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool released_ = false;
};

// Defect c: a lookup, a listing and another disk's creation never wait for
// a management call's file I/O (here an open that blocks until released).
BOOST_AUTO_TEST_CASE(lookups_do_not_wait_for_management_io)
{
    engine e;
    e.reg->create("d", 16 * MiB);
    stalling_env stall;
    persist::env::install(&stall);
    auto resize = std::async(std::launch::async, [&] { e.reg->resize("d", 32 * MiB, false); });
    std::this_thread::sleep_for(100ms);
    auto lookups = std::async(std::launch::async, [&] {
        BOOST_TEST(e.reg->find("d") != nullptr);
        BOOST_TEST(e.reg->list().size() == 1u);
        e.reg->create("other", MiB);
    });
    const bool prompt = lookups.wait_for(3s) == std::future_status::ready;
    // Unblock the resize whatever happened.
    stall.release();
    resize.get();
    lookups.get();
    persist::env::install(nullptr);
    BOOST_TEST(prompt);
    BOOST_TEST(e.reg->find("other") != nullptr);
}

// Defect d: a deleted disk still referenced (a client not yet gone) keeps
// its tracker running; it must never write into a disk created under the
// same name.
BOOST_AUTO_TEST_CASE(deleted_disk_never_writes_into_its_successor)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    e.write(0, 64 * KiB);
    const std::shared_ptr<disk> old = e.reg->find("d");
    e.reg->remove("d", true);
    e.reg->create("d", 4 * MiB);
    const std::uint64_t new_chunks = 4 * MiB / (64 * KiB);
    std::vector<std::byte> buf(4 * KiB, std::byte{3});
    for (int i = 0; i < 20; ++i) {
        BOOST_REQUIRE_EQUAL(e.io.run(old->store(), io_op::write, 0, buf.size(), buf.data()), 0);
        std::this_thread::sleep_for(25ms);
        const auto cur = tracking::read_current(e.file("tracking"));
        BOOST_REQUIRE(cur);
        BOOST_TEST(cur->chunks == new_chunks);
    }
    old->close_clean();
    BOOST_TEST(!fs::exists(e.file("tracking/clean")));
    e.restart();
    BOOST_TEST(e.d().size() == 4 * MiB);
    BOOST_TEST(e.d().tracking()->status().reason.empty());
}

// Defect e: while a restore runs (here: waiting for a client to go), other
// management calls on the disk fail busy instead of interleaving with it.
BOOST_AUTO_TEST_CASE(calls_racing_a_restore_fail_busy)
{
    engine e;
    e.reg->create("d", 4 * MiB);
    e.write(0, 64 * KiB);
    e.d().snapshots()->snapshot(std::string("s1"));
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    e.d().attach_client(sv[0]);
    auto restore = std::async(std::launch::async, [&] { e.reg->restore("d", "s1", true); });
    for (int i = 0; i < 200 && !e.d().restoring(); ++i) {
        std::this_thread::sleep_for(5ms);
    }
    BOOST_REQUIRE(e.d().restoring());
    BOOST_TEST(code_of([&] { e.reg->restore("d", "s1", true); }) == errc::busy);
    BOOST_TEST(code_of([&] { e.reg->resize("d", 8 * MiB, false); }) == errc::busy);
    BOOST_TEST(code_of([&] { e.reg->remove("d", true); }) == errc::busy);
    BOOST_TEST(code_of([&] { e.d().manage(); }) == errc::busy);
    e.d().detach_client(sv[0]);
    restore.get();
    ::close(sv[0]);
    ::close(sv[1]);
    BOOST_TEST(e.d().size() == 4 * MiB);
    BOOST_TEST(!e.d().restoring());
    e.reg->resize("d", 8 * MiB, false);
    e.reg->remove("d", false);
    BOOST_TEST(code_of([&] { e.reg->resize("d", 16 * MiB, false); }) == errc::not_found);
}
