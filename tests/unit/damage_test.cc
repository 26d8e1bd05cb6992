// Damaged and crafted metadata: a torn tail is told from damage, damage is
// reported and contained (snapshots invalid with the reason, checkpoints
// asking for a full backup, a quarantined disk), decoders validate what a
// checksum cannot, and answers are never taken from another generation.
// Each case here failed on the code before the fix it covers.
#define BOOST_TEST_MODULE damage
#include <boost/test/unit_test.hpp>

#include "engine.hh"

#include "persist/record_log.hh"
#include "tracking/store.hh"

#include "persist/durable_file.hh"

#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/sync_io.hh>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace rct;
using rct::test::code_of;
using persist::payload_reader;
using persist::record_log;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t g = 64 * KiB;
constexpr std::uint32_t magic = 0x54534554;


std::vector<std::uint8_t> read_bytes(const fs::path& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void write_bytes(const fs::path& p, const std::vector<std::uint8_t>& b)
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Byte offset of record i of a record log.
std::size_t record_offset(const std::vector<std::uint8_t>& b, int i)
{
    std::size_t pos = 0;
    for (int k = 0; k < i; ++k) {
        std::uint32_t len;
        std::memcpy(&len, b.data() + pos + 8, 4);
        pos += 24 + len;
    }
    BOOST_REQUIRE(pos < b.size());
    return pos;
}

int count_records(const std::vector<std::uint8_t>& b)
{
    int n = 0;
    for (std::size_t pos = 0; pos < b.size(); ++n) {
        std::uint32_t len;
        std::memcpy(&len, b.data() + pos + 8, 4);
        pos += 24 + len;
    }
    return n;
}

// Makes a record claim 64 KiB more payload than it has: what a flipped
// bit in its length field does.
void flip_length(const fs::path& p, int record)
{
    auto b = read_bytes(p);
    b[record_offset(b, record) + 10] ^= 0x01;
    write_bytes(p, b);
}

record_log::replay_result parse(const std::vector<std::uint8_t>& b)
{
    return record_log::parse(b.data(), b.size(), magic, [](std::uint16_t, payload_reader&) {});
}

// Three records of 100, 200 and 300 bytes written through the real log.
std::vector<std::uint8_t> three_records(const test::temp_dir& t)
{
    {
        record_log l(t.path / "x.log", magic);
        for (int i = 1; i <= 3; ++i) {
            l.append(1, std::vector<std::uint8_t>(100 * i, static_cast<std::uint8_t>(i)));
        }
    }
    return read_bytes(t.path / "x.log");
}


std::vector<std::byte> pattern(std::uint8_t seed, std::uint64_t len)
{
    std::vector<std::byte> v(len);
    for (std::uint64_t i = 0; i < len; ++i) {
        v[i] = static_cast<std::byte>(seed + i * 7 + (i >> 12));
    }
    return v;
}

struct engine : test::engine {
    engine() : test::engine("damage", [](disk_options& o) { o.tracker.persist_interval = std::chrono::milliseconds(50); })
    {
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(torn_tails_are_cut_off)
{
    test::temp_dir t{"damage"};
    const auto b = three_records(t);
    const std::size_t last = record_offset(b, 2);
    for (std::size_t keep : {last + 5, last + 24, last + 200, b.size() - 1}) {
        const auto r = parse({b.begin(), b.begin() + static_cast<long>(keep)});
        BOOST_TEST(r.damage.empty());
        BOOST_TEST(r.torn_tail);
        BOOST_TEST(r.records == 2u);
        BOOST_TEST(r.valid_bytes == last);
    }
    auto zeros = b;
    zeros.resize(b.size() + 4096, 0);
    const auto r = parse(zeros);
    BOOST_TEST(r.damage.empty());
    BOOST_TEST(r.records == 3u);
}

BOOST_AUTO_TEST_CASE(damage_is_never_taken_for_a_torn_tail)
{
    test::temp_dir t{"damage"};
    const auto b = three_records(t);
    // The length of a middle record, and of the last one (which the header
    // check catches), claims more than the file has.
    for (int rec : {1, 2}) {
        auto d = b;
        d[record_offset(b, rec) + 10] ^= 0x01;
        const auto r = parse(d);
        BOOST_TEST(!r.damage.empty());
        BOOST_TEST(!r.torn_tail);
        BOOST_TEST(r.records == static_cast<std::uint64_t>(rec));
    }
    // A payload byte of the last, complete record.
    auto d = b;
    d[b.size() - 7] ^= 0x20;
    BOOST_TEST(!parse(d).damage.empty());
    // A record whose header predates the header check (hcheck 0) is still
    // caught in the middle: valid records follow it.
    d = b;
    const std::size_t mid = record_offset(b, 1);
    std::memset(d.data() + mid + 12, 0, 4);
    persist::record_header h;
    std::memcpy(&h, d.data() + mid, sizeof h);
    h.checksum = persist::header_checksum(h, d.data() + mid + 24, h.length);
    std::memcpy(d.data() + mid, &h, sizeof h);
    BOOST_TEST(parse(d).damage.empty());  // a valid old-style record
    d[mid + 10] ^= 0x01;
    BOOST_TEST(!parse(d).damage.empty());
}

BOOST_AUTO_TEST_CASE(a_damaged_snapshot_index_invalidates_its_snapshots_and_keeps_the_evidence)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    e.write(0, pattern(1, 2 * MiB));
    e.d().snapshots()->snapshot("s1");
    e.write(0, pattern(2, MiB));  // copies for s1
    e.d().snapshots()->snapshot("s2");
    e.write(MiB, pattern(3, MiB));  // copies for s2
    e.restart();
    const fs::path index = e.file("snapshots/index.log");
    const auto before = read_bytes(index);
    // INIT, SNAP s1, COPIES, SNAP s2, COPIES: damage the first COPIES.
    BOOST_REQUIRE(count_records(before) >= 5);
    flip_length(index, 2);
    e.restart();

    const auto snaps = e.d().snapshots()->snapshots();
    BOOST_REQUIRE_EQUAL(snaps.size(), 2u);
    for (const auto& s : snaps) {
        BOOST_TEST(!s.valid);
        BOOST_TEST(s.invalid_reason.find("damaged") != std::string::npos);
    }
    BOOST_TEST(code_of([&] { e.d().snapshots()->view("s1"); }) == errc::invalid_argument);
    BOOST_TEST(e.d().snapshots()->status().index_damaged);
    BOOST_TEST(e.exists_with_prefix(e.file("snapshots"), "index.log.damaged-"));
    BOOST_TEST(e.exists_with_prefix(e.file("snapshots"), "chunks.dat.damaged-"));
    // The disk and new snapshots work on.
    const auto live = pattern(4, 8 * MiB);
    e.write(0, live);
    e.d().snapshots()->snapshot("s3");
    e.write(0, pattern(5, MiB));
    auto v = e.d().snapshots()->view("s3");
    BOOST_TEST((e.read(*v, 0, 8 * MiB) == live));
    // Listed invalid across a further restart too.
    v.reset();
    e.restart();
    BOOST_TEST(!e.d().snapshots()->snapshots().at(0).valid);
}

BOOST_AUTO_TEST_CASE(crafted_index_records_are_damage_not_trusted)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    e.write(0, pattern(1, MiB));
    e.d().snapshots()->snapshot("s1");
    e.restart();
    {
        // A well-framed COPIES record with label 0: checksums pass, the
        // content is impossible.
        e.reg->close_all();
        e.reg.reset();
        record_log l(e.file("snapshots/index.log"), 0x504e5352);
        persist::payload_writer w;
        w.put<std::uint32_t>(1).put<std::uint64_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(0).put<std::uint64_t>(0);
        l.append(5, w.buf);
    }
    e.reg = std::make_unique<disk_registry>(e.dir.path, e.opts);
    const auto snaps = e.d().snapshots()->snapshots();
    BOOST_REQUIRE_EQUAL(snaps.size(), 1u);
    BOOST_TEST(!snaps[0].valid);
}

BOOST_AUTO_TEST_CASE(a_damaged_change_log_resets_tracking_with_the_reason)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    tracker* t = e.d().tracking();
    const auto a = t->checkpoint("a");
    e.write(0, pattern(1, g));
    t->checkpoint("b");
    e.write(g, pattern(2, g));
    t->checkpoint("c");
    e.restart();
    const fs::path log = e.file("tracking/epochs.log");
    flip_length(log, 2);  // the SEAL of b
    e.restart();
    t = e.d().tracking();
    BOOST_TEST(t->status().reason.find("damaged") != std::string::npos);
    BOOST_TEST(t->checkpoints().empty());
    BOOST_TEST(code_of([&] { t->changes(a.token, std::nullopt, 0, 100); }) == errc::full_backup_required);
    BOOST_TEST(e.exists_with_prefix(e.file("tracking"), "epochs.log.damaged"));
    // Tracking goes on in the new generation.
    const auto d = t->checkpoint("d");
    e.write(5 * g, pattern(3, g));
    const auto page = t->changes(d.token, std::nullopt, 0, 100);
    BOOST_REQUIRE_EQUAL(page.extents.size(), 1u);
    BOOST_TEST(page.extents[0].offset == 5 * g);
}

// Flips one payload byte of record i: its header still passes its check.
void flip_payload(const fs::path& p, int record)
{
    auto b = read_bytes(p);
    b[record_offset(b, record) + 24 + 9] ^= 0x01;
    write_bytes(p, b);
}

BOOST_AUTO_TEST_CASE(damage_to_a_seal_drops_only_the_checkpoints_before_it)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    tracker* t = e.d().tracking();
    const auto a = t->checkpoint("a");
    e.write(0, pattern(1, g));
    const auto b = t->checkpoint("b");
    e.write(g, pattern(2, g));
    const auto c = t->checkpoint("c");
    e.write(2 * g, pattern(3, g));
    const auto gen = t->status().generation;
    e.restart();
    // INIT, SEAL a, SEAL b, SEAL c: b's payload is damaged, its header is
    // intact. a may lack b's changes (it is dropped); c does not need them.
    flip_payload(e.file("tracking/epochs.log"), 2);
    e.restart();
    t = e.d().tracking();
    BOOST_TEST(t->status().generation == gen);
    BOOST_TEST(t->status().reason.find("damaged") != std::string::npos);
    BOOST_REQUIRE_EQUAL(t->checkpoints().size(), 1u);
    BOOST_TEST(t->checkpoints()[0].name == "c");
    BOOST_TEST(e.exists_with_prefix(e.file("tracking"), "epochs.log.damaged"));
    for (const auto& lost : {a.token, b.token}) {
        try {
            t->changes(lost, std::nullopt, 0, 100);
            BOOST_FAIL("a dropped checkpoint's token was answered");
        } catch (const error& x) {
            BOOST_TEST(x.code() == errc::full_backup_required);
            BOOST_TEST(std::string(x.what()).find("damaged") != std::string::npos);
        }
    }
    // c still answers exactly, across a further restart of the rewritten log.
    const auto exact = [&] {
        const auto page = e.d().tracking()->changes(c.token, std::nullopt, 0, 100);
        BOOST_REQUIRE_EQUAL(page.extents.size(), 1u);
        BOOST_TEST(page.extents[0].offset == 2 * g);
        BOOST_TEST(page.extents[0].length == g);
    };
    exact();
    e.restart();
    exact();
    BOOST_TEST(e.d().tracking()->checkpoints().size() == 1u);
    // No epoch number is reused: the next checkpoint is newer than every
    // one the damaged log could have held.
    const auto d = e.d().tracking()->checkpoint("d");
    BOOST_TEST(d.epoch > c.epoch);
}

// A damaged INIT or RESET may have named another generation: nothing after
// it can be trusted.
BOOST_AUTO_TEST_CASE(damage_to_a_reset_or_an_init_still_resets_everything)
{
    for (const int record : {0, 2}) {
        engine e;
        e.reg->create("d", 8 * MiB);
        e.d().tracking()->checkpoint("a");
        e.reg->resize("d", 4 * MiB, true);  // a shrink resets tracking
        const auto b = e.d().tracking()->checkpoint("b");
        const auto gen = e.d().tracking()->status().generation;
        e.restart();
        // INIT, SEAL a, RESET, SEAL b.
        flip_payload(e.file("tracking/epochs.log"), record);
        e.restart();
        tracker* t = e.d().tracking();
        BOOST_TEST(t->status().generation != gen);
        BOOST_TEST(t->checkpoints().empty());
        BOOST_TEST(code_of([&] { t->changes(b.token, std::nullopt, 0, 100); }) == errc::full_backup_required);
    }
}

// The log rewritten after damage keeps a deleted newest checkpoint's changes
// in the live epoch.
BOOST_AUTO_TEST_CASE(a_log_rewritten_after_damage_keeps_a_deleted_newest_checkpoints_changes)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    tracker* t = e.d().tracking();
    t->checkpoint("a");
    const auto b = t->checkpoint("b");
    e.write(3 * g, pattern(1, g));
    const auto c = t->checkpoint("c");
    t->delete_checkpoint("c");  // c's changes (3g) go back to the live epoch
    e.restart();
    // INIT, SEAL a, SEAL b, SEAL c, DELETE c: damage a.
    flip_payload(e.file("tracking/epochs.log"), 1);
    e.restart();
    e.restart();  // and once more over the rewritten log
    t = e.d().tracking();
    BOOST_REQUIRE_EQUAL(t->checkpoints().size(), 1u);
    const auto page = t->changes(b.token, std::nullopt, 0, 100);
    BOOST_REQUIRE_EQUAL(page.extents.size(), 1u);
    BOOST_TEST(page.extents[0].offset == 3 * g);
    BOOST_TEST(c.epoch > b.epoch);
}

BOOST_AUTO_TEST_CASE(a_checksummed_live_map_with_impossible_runs_is_rejected)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    tracker* t = e.d().tracking();
    const auto a = t->checkpoint("a");
    e.write(3 * g, pattern(1, g));
    const auto gen = t->status().generation;
    const auto epoch = t->status().current_epoch;
    e.reg->close_all();
    e.reg.reset();
    // Valid checksum, runs far past the disk's 128 chunks (and one whose
    // end overflows): the old reader marked them and crashed.
    tracking::write_current(e.file("tracking"), gen, epoch, 128,
                            {{3, 1}, {std::uint64_t{1} << 62, std::uint64_t{1} << 63}});
    BOOST_CHECK_THROW(tracking::read_current(e.file("tracking")), error);
    e.reg = std::make_unique<disk_registry>(e.dir.path, e.opts);
    t = e.d().tracking();
    // Recovery falls back to the intent regions: still a superset.
    const auto page = t->changes(a.token, std::nullopt, 0, 1000);
    BOOST_REQUIRE(!page.extents.empty());
    BOOST_TEST(page.extents[0].offset <= 3 * g);
    BOOST_TEST(page.extents[0].offset + page.extents[0].length >= 4 * g);
}

BOOST_AUTO_TEST_CASE(runs_merged_by_a_delete_stay_ordered_after_a_restart)
{
    engine e;
    e.reg->create("d", 16 * MiB);
    tracker* t = e.d().tracking();
    const auto base = t->checkpoint("base");
    e.write(5 * g, pattern(1, g));
    t->checkpoint("a");
    e.write(100 * g, pattern(2, g));
    t->checkpoint("b");
    t->delete_checkpoint("a");  // a's chunk 5 merges into b, after b's 100
    e.restart();
    t = e.d().tracking();
    std::vector<extent> out;
    BOOST_REQUIRE_EQUAL(t->dirty_map(base.generation, base.epoch, std::nullopt, 4 * g, 2 * g, 10, out), 0);
    BOOST_REQUIRE_EQUAL(out.size(), 2u);
    BOOST_TEST(out[0].flags == 0u);
    BOOST_TEST(out[1].flags == 1u);  // chunk 5 changed since base
}

BOOST_AUTO_TEST_CASE(contexts_from_before_a_reset_answer_nothing)
{
    engine e;
    e.reg->create("d", 8 * MiB);
    tracker* t = e.d().tracking();
    const auto a = t->checkpoint("a");
    e.write(0, pattern(1, g));
    std::vector<extent> out;
    BOOST_TEST(t->dirty_map(a.generation, a.epoch, std::nullopt, 0, 4 * MiB, 10, out) == 0);
    e.reg->resize("d", 4 * MiB, true);  // a shrink resets tracking
    out.clear();
    BOOST_TEST(t->dirty_map(a.generation, a.epoch, std::nullopt, 0, 4 * MiB, 10, out) == -ESTALE);
    BOOST_TEST(out.empty());
    // A checkpoint of the same name in the new generation is another one.
    const auto a2 = t->checkpoint("a");
    BOOST_TEST(a2.generation != a.generation);
    BOOST_TEST(t->dirty_map(a.generation, a.epoch, std::nullopt, 0, 4 * MiB, 10, out) == -ESTALE);
    BOOST_TEST(t->dirty_map(a2.generation, a2.epoch, std::nullopt, 0, 4 * MiB, 10, out) == 0);
}

BOOST_AUTO_TEST_CASE(a_disk_with_untrustworthy_metadata_is_quarantined_alone)
{
    engine e;
    e.reg->create("good", 4 * MiB);
    e.reg->create("bad", 4 * MiB);
    e.reg->close_all();
    e.reg.reset();
    write_bytes(e.file("disk.json", "bad"), {'{', '"', 'x'});
    e.reg = std::make_unique<disk_registry>(e.dir.path, e.opts);
    BOOST_TEST(e.reg->find("good") != nullptr);
    BOOST_TEST(e.reg->find("bad") == nullptr);
    const auto q = e.reg->quarantined();
    BOOST_REQUIRE_EQUAL(q.count("bad"), 1u);
    BOOST_TEST(!q.at("bad").empty());
    BOOST_TEST(code_of([&] { e.reg->create("bad", MiB); }) == errc::exists);
    BOOST_TEST(fs::exists(e.file("data.raw", "bad")));  // left for the operator
}
