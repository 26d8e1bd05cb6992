// Change tracking: maps, epochs, tokens, persistence, crash recovery and
// damaged metadata, against real files in a temporary directory.
#define BOOST_TEST_MODULE tracking
#include <boost/test/unit_test.hpp>

#include "tracking/bitmap.hh"
#include "tracking/token.hh"

#include <rct/error.hh>
#include <rct/tracker.hh>

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <algorithm>
#include <mutex>

namespace fs = std::filesystem;
using namespace rct;

namespace rct {
std::ostream& operator<<(std::ostream& os, errc e) { return os << static_cast<int>(e); }
}  // namespace rct

namespace {

const std::string disk_id = "0f8e5a3c-1b2d-4e6f-8a9b-0c1d2e3f4a5b";
const std::string other_id = "11111111-2222-4333-8444-555555555555";
constexpr std::uint64_t mib = 1 << 20;

struct fake_write final : io_request {
    void done(int) noexcept override {}
};

struct fixture {
    fs::path dir;
    tracker_options opts;
    file_identity ident{1, 2, 16 * mib, 3, 4};
    fixture()
    {
        char tmpl[] = "/var/tmp/rct-tracking-XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl));
        dir = tmpl;
        opts.granularity = 64 * 1024;
        opts.region_size = mib;
        opts.persist_interval = std::chrono::milliseconds(50);
    }
    ~fixture() { fs::remove_all(dir); }

    std::unique_ptr<tracker> open(std::uint64_t size = 16 * mib, const std::string& id = disk_id)
    {
        return tracker::open(dir / "t", id, size, ident, opts);
    }
    // The next rctd's open after a live upgrade.
    std::unique_ptr<tracker> open_warm(const tracker_handoff& h, std::uint64_t size = 16 * mib)
    {
        return tracker::open(dir / "t", disk_id, size, ident, opts, 0, &h);
    }

    // A write as a frontend would do it: wait for the intent commit when
    // begin_write asks for it.
    static void write(tracker& t, std::uint64_t off, std::uint64_t len)
    {
        fake_write w;
        w.op = io_op::write;
        w.offset = off;
        w.length = len;
        std::mutex m;
        std::condition_variable cv;
        bool resumed = false;
        int error = 1;
        if (!t.begin_write(w, [&](io_request&, int err) {
                std::lock_guard l(m);
                resumed = true;
                error = err;
                cv.notify_one();
            })) {
            std::unique_lock l(m);
            cv.wait(l, [&] { return resumed; });
            BOOST_REQUIRE(error == 0);
        }
        t.end_write(w);
    }
};

std::vector<std::pair<std::uint64_t, std::uint64_t>> all_changes(const tracker& t, const std::string& since,
                                                                 std::optional<std::string> until = std::nullopt)
{
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    std::optional<std::uint64_t> cursor = 0;
    while (cursor) {
        auto page = t.changes(since, until, *cursor, 2);  // tiny pages exercise the cursor
        for (auto& e : page.extents) {
            out.emplace_back(e.offset, e.length);
        }
        cursor = page.next_cursor;
    }
    return out;
}

using extents = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

errc code_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const error& e) {
        return e.code();
    }
    BOOST_FAIL("expected an rct::error");
    return errc::io_error;
}

}  // namespace

BOOST_AUTO_TEST_CASE(bitmap_ranges_and_runs)
{
    tracking::atomic_bitmap b(200);
    b.set_range(3, 3);
    b.set_range(60, 130);
    b.set_range(199, 199);
    auto runs = b.runs();
    BOOST_REQUIRE(runs.size() == 3u);
    BOOST_TEST(runs[0].start == 3u);
    BOOST_TEST(runs[0].count == 1u);
    BOOST_TEST(runs[1].start == 60u);
    BOOST_TEST(runs[1].count == 71u);
    BOOST_TEST(runs[2].start == 199u);
    BOOST_TEST(b.test(64));
    BOOST_TEST(!b.test(131));
}

BOOST_AUTO_TEST_CASE(token_round_trip_and_rejection)
{
    tracking::token_fields t;
    t.disk_id = *tracking::parse_uuid(disk_id);
    t.generation = 7;
    t.epoch = 42;
    t.size = 16 * mib;
    t.granularity = 65536;
    const std::string s = tracking::encode_token(t);
    BOOST_TEST(s.rfind("rct1.", 0) == 0u);
    auto back = tracking::decode_token(s);
    BOOST_REQUIRE(back);
    BOOST_TEST(back->epoch == 42u);
    BOOST_TEST(back->generation == 7u);
    BOOST_TEST(back->size == 16 * mib);
    BOOST_TEST((back->disk_id == t.disk_id));
    for (std::size_t i = 5; i < s.size(); ++i) {
        std::string bad = s;
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        BOOST_TEST(!tracking::decode_token(bad));  // every single-character change is caught
    }
    BOOST_TEST(!tracking::decode_token("rct1.short"));
    BOOST_TEST(!tracking::decode_token(""));
    BOOST_TEST(!tracking::parse_uuid("not-a-uuid"));
}

BOOST_AUTO_TEST_CASE(epochs_seal_query_and_merge)
{
    fixture f;
    auto t = f.open();
    fixture::write(*t, 0, 4096);  // before any checkpoint: never reported
    const auto a = t->checkpoint("a");
    fixture::write(*t, 100 * 1024, 4096);           // chunk 1
    fixture::write(*t, 5 * mib + 10, 200 * 1024);   // chunks 80..83
    const auto b = t->checkpoint("b");
    fixture::write(*t, 15 * mib, 64 * 1024);        // chunk 240

    const extents since_a{{65536, 65536}, {80 * 65536, 4 * 65536}, {240 * 65536, 65536}};
    BOOST_TEST((all_changes(*t, "a") == since_a));
    BOOST_TEST((all_changes(*t, a.token) == since_a));
    BOOST_TEST((all_changes(*t, "a", "b") == extents{{65536, 65536}, {80 * 65536, 4 * 65536}}));
    BOOST_TEST((all_changes(*t, b.token) == extents{{240 * 65536, 65536}}));
    BOOST_TEST(code_of([&] { all_changes(*t, "b", std::string("a")); }) == errc::invalid_argument);
    BOOST_TEST(code_of([&] { t->checkpoint("a"); }) == errc::exists);

    // NBD view: dirty since a over the first 256 KiB.
    std::vector<extent> out;
    BOOST_TEST(t->dirty_map(a.generation, a.epoch, std::nullopt, 0, 256 * 1024, 100, out) == 0);
    BOOST_REQUIRE(out.size() == 3u);
    BOOST_TEST(out[0].flags == 0u);
    BOOST_TEST(out[1].flags == 1u);
    BOOST_TEST(out[1].length == 65536u);

    // Deleting a merges its epoch forward: diffs across it stay right.
    t->delete_checkpoint("a");
    out.clear();
    // A context opened on a now answers nothing rather than another history.
    BOOST_TEST(t->dirty_map(a.generation, a.epoch, std::nullopt, 0, 256 * 1024, 100, out) == -ESTALE);
    BOOST_TEST(out.empty());
    BOOST_TEST(code_of([&] { all_changes(*t, "a"); }) == errc::not_found);
    BOOST_TEST(code_of([&] { all_changes(*t, a.token); }) == errc::full_backup_required);
    BOOST_TEST((all_changes(*t, "b") == extents{{240 * 65536, 65536}}));
    // Deleting the newest merges it into the live epoch.
    const auto c = t->checkpoint("c");
    fixture::write(*t, 14 * mib, 4096);
    t->delete_checkpoint("c");
    BOOST_TEST((all_changes(*t, "b") == extents{{224 * 65536, 65536}, {240 * 65536, 65536}}));
    (void)c;
}

BOOST_AUTO_TEST_CASE(foreign_and_malformed_tokens_need_a_full_backup)
{
    fixture f;
    auto t = f.open();
    auto cp = t->checkpoint("x");
    fixture other;
    auto u = other.open(16 * mib, other_id);
    auto foreign = u->checkpoint("x");
    BOOST_TEST(code_of([&] { t->changes(foreign.token, std::nullopt, 0, 10); }) == errc::full_backup_required);
    std::string bad = cp.token;
    bad.back() = bad.back() == 'A' ? 'B' : 'A';
    BOOST_TEST(code_of([&] { t->changes(bad, std::nullopt, 0, 10); }) == errc::full_backup_required);
    BOOST_TEST(code_of([&] { t->changes("nope", std::nullopt, 0, 10); }) == errc::not_found);
}

BOOST_AUTO_TEST_CASE(clean_restart_is_exact)
{
    fixture f;
    std::string token;
    {
        auto t = f.open();
        token = t->checkpoint("a").token;
        fixture::write(*t, 3 * mib, 4096);
        t->close_clean(f.ident);
    }
    auto t = f.open();
    BOOST_TEST(!t->status().recovered_after_crash);
    BOOST_TEST((all_changes(*t, token) == extents{{48 * 65536, 65536}}));
}

BOOST_AUTO_TEST_CASE(crash_restart_is_a_bounded_superset)
{
    fixture f;
    std::string token;
    {
        auto t = f.open();
        token = t->checkpoint("a").token;
        fixture::write(*t, 3 * mib, 4096);
        fixture::write(*t, 9 * mib + 4096, 4096);
        // No close_clean: as after kill -9.
    }
    auto t = f.open();
    auto st = t->status();
    BOOST_TEST(st.recovered_after_crash);
    const auto got = all_changes(*t, token);
    auto covers = [&](std::uint64_t off) {
        for (auto& [o, l] : got) {
            if (off >= o && off < o + l) {
                return true;
            }
        }
        return false;
    };
    BOOST_TEST(covers(3 * mib));
    BOOST_TEST(covers(9 * mib + 4096));
    std::uint64_t total = 0;
    for (auto& e : got) {
        total += e.second;
    }
    BOOST_TEST(total <= 2 * mib);  // at most the two 1 MiB intent regions
}

namespace {

// Every file of a tracking directory with its bytes.
std::map<std::string, std::string> files_of(const fs::path& d)
{
    std::map<std::string, std::string> out;
    for (const auto& e : fs::directory_iterator(d)) {
        std::ifstream in(e.path(), std::ios::binary);
        out[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
    }
    return out;
}

bool covers(const extents& got, std::uint64_t off)
{
    return std::any_of(got.begin(), got.end(), [&](const auto& e) { return off >= e.first && off < e.first + e.second; });
}

}  // namespace

// A tracker with checkpoint "a" (its token) and a write at 3 MiB after it,
// handed off; the files lag the live map, as between two persists.
static tracker_handoff handed_off(fixture& f, std::string& token)
{
    f.opts.persist_interval = std::chrono::hours(1);
    auto t = f.open();
    token = t->checkpoint("a").token;
    fixture::write(*t, 3 * mib, 4096);
    return t->hand_off();
}

// A live upgrade: the old tracker hands its live map off, the new one goes
// on from it: exact (no crash excess), no file written on either side, and
// the intent bits stay durable, so a crash afterwards still recovers them.
BOOST_AUTO_TEST_CASE(a_hand_off_goes_on_exactly_and_writes_nothing)
{
    fixture f;
    f.opts.persist_interval = std::chrono::hours(1);  // the files lag the live map, as between persists
    std::string token;
    tracker_handoff h;
    std::map<std::string, std::string> before;
    {
        auto t = f.open();
        token = t->checkpoint("a").token;
        fixture::write(*t, 3 * mib, 4096);
        fixture::write(*t, 9 * mib + 4096, 4096);
        before = files_of(f.dir / "t");
        h = t->hand_off();
        BOOST_TEST((files_of(f.dir / "t") == before));
    }
    auto t = f.open_warm(h);
    BOOST_TEST((files_of(f.dir / "t") == before));
    BOOST_TEST(!t->status().recovered_after_crash);
    BOOST_TEST((all_changes(*t, token) == extents{{48 * 65536, 65536}, {144 * 65536, 65536}}));
    // Region 3's intent came along durable: no commit; region 5's did not.
    fake_write w;
    w.op = io_op::write;
    w.offset = 3 * mib + 8192;
    w.length = 4096;
    BOOST_TEST(t->begin_write(w, [](io_request&, int) {}));
    t->end_write(w);
    fixture::write(*t, 5 * mib, 4096);
    t.reset();  // kill -9
    auto c = f.open();
    BOOST_TEST(c->status().recovered_after_crash);
    const auto got = all_changes(*c, token);
    BOOST_TEST(covers(got, 3 * mib));
    BOOST_TEST(covers(got, 9 * mib + 4096));
    BOOST_TEST(covers(got, 5 * mib));
}

// A rolled-back upgrade: the new rctd opened from the hand-off, gave up and
// sealed the files; the old one takes its own hand-off back, exactly, and
// the seal no longer counts (a crash after is recovered, not trusted).
BOOST_AUTO_TEST_CASE(a_hand_off_taken_back_after_a_seal_drops_the_seal)
{
    fixture f;
    std::string token;
    tracker_handoff h = handed_off(f, token);
    f.open_warm(h)->close_clean(f.ident);
    BOOST_REQUIRE(fs::exists(f.dir / "t" / "clean"));
    {
        auto t = f.open_warm(h);
        BOOST_TEST(!t->status().recovered_after_crash);
        BOOST_TEST(!fs::exists(f.dir / "t" / "clean"));
        fixture::write(*t, 7 * mib, 4096);
    }
    auto c = f.open();
    BOOST_TEST(c->status().recovered_after_crash);
    BOOST_TEST(covers(all_changes(*c, token), 7 * mib));
}

// A hand-off from another epoch (or generation, or size) is not this
// history's live map: the files are recovered as after a crash instead.
BOOST_AUTO_TEST_CASE(a_hand_off_that_does_not_fit_is_recovered_from_the_files)
{
    fixture f;
    std::string token;
    tracker_handoff h = handed_off(f, token);
    h.epoch += 1;
    h.runs.clear();
    auto t = f.open_warm(h);
    BOOST_TEST(t->status().recovered_after_crash);
    BOOST_TEST(covers(all_changes(*t, token), 3 * mib));
}

// A disk grown while rctd ran has intent.map in its old size's layout until
// the next commit: a crash then must still find the newest slot, wherever
// the old layout put it (before: read where the new size puts it, missed,
// and the older slot taken, without the last commit's region). Both slot
// parities: one extra commit first flips which slot is the newest.
BOOST_AUTO_TEST_CASE(a_crash_after_a_grow_finds_the_newest_intent_slot)
{
    constexpr std::uint64_t gib = std::uint64_t{1} << 30;
    // warm: the grown tracker is handed off (live upgrade) and the next one
    // commits once in the new layout before the crash.
    for (int warm = 0; warm < 2; ++warm) {
        for (int extra = 0; extra < 2; ++extra) {
            fixture f;
            f.opts.persist_interval = std::chrono::hours(1);  // only intent bits record the writes
            std::string token;
            {
                // 1 MiB regions: 20 GiB is 20480 regions, a capacity of
                // 81920; 40 GiB opens with 163840, so a larger slot. The
                // writes go below 20 GiB: grown space counts as changed.
                auto t = f.open(20 * gib);
                token = t->checkpoint("a").token;
                t->resize(40 * gib);
                if (extra) {
                    fixture::write(*t, 10 * gib, 4096);
                }
                fixture::write(*t, 5 * gib, 4096);
                fixture::write(*t, 15 * gib, 4096);
                if (warm) {
                    const tracker_handoff h = t->hand_off();
                    t.reset();
                    auto next = f.open_warm(h, 40 * gib);
                    BOOST_TEST(!next->status().recovered_after_crash);
                    fixture::write(*next, 18 * gib, 4096);
                }
            }  // kill -9
            auto t = f.open(40 * gib);
            BOOST_TEST(t->status().recovered_after_crash);
            const auto got = all_changes(*t, token);
            for (const std::uint64_t at : {5 * gib, 15 * gib, warm ? 18 * gib : 5 * gib}) {
                BOOST_TEST(covers(got, at), "warm " << warm << " extra " << extra << " at " << at);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(data_changed_behind_our_back_invalidates)
{
    fixture f;
    std::string token;
    {
        auto t = f.open();
        token = t->checkpoint("a").token;
        t->close_clean(f.ident);
    }
    f.ident.mtime_ns += 1;
    auto t = f.open();
    BOOST_TEST(t->status().reason.find("modified while rctd was not running") != std::string::npos);
    BOOST_TEST(code_of([&] { t->changes(token, std::nullopt, 0, 10); }) == errc::full_backup_required);
}

BOOST_AUTO_TEST_CASE(damaged_log_is_detected_never_trusted)
{
    fixture f;
    std::string token;
    {
        auto t = f.open();
        token = t->checkpoint("a").token;
        t->checkpoint("b");
        t->close_clean(f.ident);
    }
    // Flip one byte inside the first seal record's payload.
    const auto log = f.dir / "t" / "epochs.log";
    std::fstream io(log, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(0, std::ios::end);
    const auto size = static_cast<long>(io.tellg());
    io.seekp(size / 2);
    char c;
    io.seekg(size / 2);
    io.get(c);
    io.seekp(size / 2);
    io.put(static_cast<char>(c ^ 0x40));
    io.close();

    // a's seal may have held changes: a is dropped; b sealed after it is
    // kept (tests/unit/damage_test.cc covers that in depth).
    auto t = f.open();
    BOOST_TEST(t->status().reason.find("damaged") != std::string::npos);
    BOOST_REQUIRE_EQUAL(t->checkpoints().size(), 1u);
    BOOST_TEST(t->checkpoints()[0].name == "b");
    BOOST_TEST(code_of([&] { t->changes(token, std::nullopt, 0, 10); }) == errc::full_backup_required);
    BOOST_TEST(fs::exists(f.dir / "t" / "epochs.log.damaged"));
}

// intent.map holds two slots written alternately; a torn write can only hit
// the slot being written, whose commit then never completed.
BOOST_AUTO_TEST_CASE(damaged_intent_slots)
{
    for (int damaged : {1, 2}) {
        fixture f;
        f.opts.persist_interval = std::chrono::hours(1);  // keep the intent bits set
        std::string token;
        {
            auto t = f.open();
            token = t->checkpoint("a").token;
            fixture::write(*t, 7 * mib, 4096);  // commit #2 goes to slot 0
        }
        {
            // Slot size: header + one bit per region of the capacity (65536).
            const off_t slot = (48 + 65536 / 8 + 4095) / 4096 * 4096;
            int fd = ::open((f.dir / "t" / "intent.map").c_str(), O_RDWR);
            BOOST_REQUIRE(fd >= 0);
            const char junk[16] = "garbage-garbage";
            BOOST_REQUIRE(::pwrite(fd, junk, sizeof junk, slot + 8) == static_cast<ssize_t>(sizeof junk));
            if (damaged == 2) {
                BOOST_REQUIRE(::pwrite(fd, junk, sizeof junk, 8) == static_cast<ssize_t>(sizeof junk));
            }
            ::close(fd);
        }
        auto t = f.open();
        const auto got = all_changes(*t, token);
        bool covered = false;
        std::uint64_t total = 0;
        for (auto& [o, l] : got) {
            covered |= 7 * mib >= o && 7 * mib < o + l;
            total += l;
        }
        BOOST_TEST(covered);
        if (damaged == 2) {
            BOOST_TEST(total == 16 * mib);  // nothing left to bound it: everything
        } else {
            BOOST_TEST(total == mib);  // just the written region
        }
    }
}

BOOST_AUTO_TEST_CASE(growing_keeps_tokens_shrinking_resets)
{
    fixture f;
    auto t = f.open();
    auto cp = t->checkpoint("a");
    t->resize(32 * mib);
    const auto got = all_changes(*t, cp.token);
    BOOST_REQUIRE(!got.empty());
    BOOST_TEST(got.front().first == 16 * mib);
    BOOST_TEST(got.back().first + got.back().second == 32 * mib);
    t->resize(8 * mib);
    BOOST_TEST(code_of([&] { t->changes(cp.token, std::nullopt, 0, 10); }) == errc::full_backup_required);
}

// The floor: at least 65,535 checkpoints per disk, each still
// usable, surviving a restart. On tmpfs where available, since every
// checkpoint is an fdatasync of the log.
BOOST_AUTO_TEST_CASE(sixty_five_thousand_checkpoints)
{
    fixture f;
    if (fs::is_directory("/dev/shm")) {
        fs::remove_all(f.dir);
        char tmpl[] = "/dev/shm/rct-tracking-XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl));
        f.dir = tmpl;
    }
    constexpr int n = 65535;
    {
        auto t = f.open();
        for (int i = 0; i < n; ++i) {
            if (i % 4096 == 0) {
                fixture::write(*t, static_cast<std::uint64_t>(i) * 256, 4096);
            }
            t->checkpoint(std::nullopt);
        }
        BOOST_TEST(t->checkpoints().size() == static_cast<std::size_t>(n));
        t->close_clean(f.ident);
    }
    auto t = f.open();
    const auto cps = t->checkpoints();
    BOOST_REQUIRE(cps.size() == static_cast<std::size_t>(n));
    BOOST_TEST(all_changes(*t, cps.front().token).size() >= 1u);
    BOOST_TEST(all_changes(*t, cps.back().token).empty());
}
