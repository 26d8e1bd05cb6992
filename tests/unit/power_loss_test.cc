// Power loss through the persistence seam: the whole engine (registry,
// disk, tracking, snapshots, on real files and io_uring) runs over
// power_env, which keeps only what was made durable. A random workload of
// writes (some FUA), flushes, checkpoints, snapshots and deletions is cut
// at a random point; then the tree is rebuilt from its durable image alone
// and checked against a model:
//   - the disk opens (nothing quarantined);
//   - every block reads back a value at least as new as its last durable
//     write (flushed or FUA), never older, never foreign;
//   - every acknowledged checkpoint exists, and its changes cover every
//     block written after it;
//   - every snapshot exists, is valid, and reads back its cut (a block
//     unflushed at the cut may read as its last durable value before it).
// RCT_POWER_CYCLES sets the number of cuts (default 30; docs/reliability.md
// records a long run).
#define BOOST_TEST_MODULE power_loss
#include <boost/test/unit_test.hpp>

#include "power_env.hh"

#include <rct/disk_registry.hh>
#include <rct/error.hh>
#include <rct/log.hh>
#include <rct/sync_io.hh>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

namespace fs = std::filesystem;
using namespace rct;

namespace {

constexpr std::uint64_t block = 4096;
constexpr std::uint64_t disk_size = 4 << 20;
constexpr std::uint64_t blocks = disk_size / block;

// Block content: (seq, block number) then a pattern of both; seq 0 = zeroes.
void fill(std::byte* p, std::uint64_t seq, std::uint64_t b)
{
    std::memcpy(p, &seq, 8);
    std::memcpy(p + 8, &b, 8);
    for (std::uint64_t i = 16; i < block; ++i) {
        p[i] = static_cast<std::byte>(seq * 31 + b + i);
    }
}

// The seq a block holds, or ~0 if it is neither zero nor a block we wrote.
std::uint64_t decode(const std::byte* p, std::uint64_t b)
{
    std::uint64_t seq;
    std::memcpy(&seq, p, 8);
    std::vector<std::byte> want(block);
    if (seq == 0) {
        return std::all_of(p, p + block, [](std::byte x) { return x == std::byte{0}; }) ? 0 : ~std::uint64_t{0};
    }
    fill(want.data(), seq, b);
    return std::memcmp(want.data(), p, block) == 0 ? seq : ~std::uint64_t{0};
}

// Per block: the values written, in order, and which one is durable.
struct block_model {
    std::vector<std::uint64_t> hist{0};
    std::size_t durable = 0;
    std::vector<std::uint64_t> acceptable() const { return {hist.begin() + static_cast<long>(durable), hist.end()}; }
};

struct checkpoint_model {
    std::string token;
    std::set<std::uint64_t> written_after;
};

struct world {
    fs::path root;
    std::unique_ptr<test::power_env> env;
    disk_options opts;
    std::unique_ptr<disk_registry> reg;
    std::vector<block_model> model = std::vector<block_model>(blocks);
    std::map<std::string, checkpoint_model> cps;
    std::map<std::string, std::vector<std::vector<std::uint64_t>>> snaps;  // per block: acceptable at the cut
    std::uint64_t next_seq = 1;
    int names = 0;
    std::mt19937_64 rng;
    // Totals for the report.
    std::uint64_t blocks_checked = 0, checkpoints_checked = 0, snapshots_checked = 0, cuts = 0;

    explicit world(std::uint64_t seed) : rng(seed)
    {
        char tmpl[] = "/var/tmp/rct-power-XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
        root = tmpl;
        log::set_level(log::level::err);
        opts.tracker.persist_interval = std::chrono::milliseconds(5);
        opts.tracker.region_size = 1 << 20;
        env = std::make_unique<test::power_env>(root);
        persist::env::install(env.get());
        reg = std::make_unique<disk_registry>(root, opts);
        reg->create("d", disk_size);
    }
    ~world()
    {
        reg.reset();
        persist::env::install(nullptr);
        fs::remove_all(root);
    }

    disk& d() { return *reg->find("d"); }

    void write(sync_io& io)
    {
        const std::uint64_t b0 = rng() % blocks;
        const std::uint64_t n = std::min<std::uint64_t>(1 + rng() % 4, blocks - b0);
        const bool fua = rng() % 5 == 0;
        std::vector<std::byte> buf(n * block);
        std::vector<std::uint64_t> seqs;
        for (std::uint64_t i = 0; i < n; ++i) {
            seqs.push_back(next_seq++);
            fill(buf.data() + i * block, seqs.back(), b0 + i);
        }
        BOOST_REQUIRE_EQUAL(io.run(d().store(), io_op::write, b0 * block, n * block, buf.data(), fua ? io_fua : 0), 0);
        for (std::uint64_t i = 0; i < n; ++i) {
            auto& m = model[b0 + i];
            m.hist.push_back(seqs[i]);
            if (fua) {
                m.durable = m.hist.size() - 1;
            }
            for (auto& [name, cp] : cps) {
                cp.written_after.insert(b0 + i);
            }
        }
    }

    void flush(sync_io& io)
    {
        BOOST_REQUIRE_EQUAL(io.run(d().store(), io_op::flush, 0, 0, nullptr), 0);
        for (auto& m : model) {
            m.durable = m.hist.size() - 1;
        }
    }

    void checkpoint()
    {
        const std::string name = "c" + std::to_string(names++);
        cps[name] = {d().tracking()->checkpoint(name).token, {}};
    }

    void snapshot()
    {
        const std::string name = "s" + std::to_string(names++);
        const auto info = d().snapshots()->snapshot(name);
        cps[name] = {info.checkpoint.token, {}};
        auto& cut = snaps[name];
        for (const auto& m : model) {
            cut.push_back(m.acceptable());
        }
    }

    template <typename Map>
    std::string pick(const Map& m)
    {
        auto it = m.begin();
        std::advance(it, static_cast<long>(rng() % m.size()));
        return it->first;
    }

    void delete_one()
    {
        if (!snaps.empty() && rng() % 2 == 0) {
            const auto name = pick(snaps);
            d().snapshots()->delete_snapshot(name, false);
            snaps.erase(name);  // it stays a checkpoint
            return;
        }
        std::vector<std::string> plain;
        for (const auto& [name, cp] : cps) {
            if (snaps.count(name) == 0) {
                plain.push_back(name);
            }
        }
        if (!plain.empty()) {
            const auto name = plain[rng() % plain.size()];
            d().tracking()->delete_checkpoint(name);
            cps.erase(name);
        }
    }

    void step(sync_io& io)
    {
        const auto r = rng() % 100;
        if (r < 70) {
            write(io);
        } else if (r < 82) {
            flush(io);
        } else if (r < 88) {
            checkpoint();
        } else if (r < 94) {
            snapshot();
        } else {
            delete_one();
        }
    }

    void power_cut()
    {
        env->cut();
        reg.reset();  // no clean shutdown: the threads stop, nothing more reaches the disk
        env->restore();
        reg = std::make_unique<disk_registry>(root, opts);
        ++cuts;
    }

    void check_data(sync_io& io, int cycle)
    {
        std::vector<std::byte> buf(disk_size);
        BOOST_REQUIRE_EQUAL(io.run(d().store(), io_op::read, 0, disk_size, buf.data()), 0);
        for (std::uint64_t b = 0; b < blocks; ++b) {
            const std::uint64_t got = decode(buf.data() + b * block, b);
            const auto ok = model[b].acceptable();
            BOOST_TEST((std::find(ok.begin(), ok.end(), got) != ok.end()),
                       "cycle " << cycle << ": block " << b << " holds " << got << ", durable was "
                                << ok.front());
            model[b] = block_model{{got}, 0};
            ++blocks_checked;
        }
    }

    void check_checkpoints(int cycle)
    {
        tracker* t = d().tracking();
        for (const auto& [name, cp] : cps) {
            std::vector<byte_extent> changed;
            try {
                std::optional<std::uint64_t> cursor = 0;
                while (cursor) {
                    auto page = t->changes(cp.token, std::nullopt, *cursor, 1000);
                    changed.insert(changed.end(), page.extents.begin(), page.extents.end());
                    cursor = page.next_cursor;
                }
            } catch (const error& e) {
                BOOST_ERROR("cycle " << cycle << ": checkpoint " << name << " lost: " << e.what());
                continue;
            }
            for (std::uint64_t b : cp.written_after) {
                const std::uint64_t off = b * block;
                const bool covered = std::any_of(changed.begin(), changed.end(), [&](const byte_extent& e) {
                    return off >= e.offset && off < e.offset + e.length;
                });
                BOOST_TEST(covered, "cycle " << cycle << ": block " << b << " written after " << name
                                             << " is missing from its changes");
            }
            ++checkpoints_checked;
        }
    }

    void check_snapshots(sync_io& io, int cycle)
    {
        std::vector<std::byte> buf(disk_size);
        for (const auto& [name, cut] : snaps) {
            std::shared_ptr<snapshot_view> v;
            try {
                v = d().snapshots()->view(name);
            } catch (const error& e) {
                BOOST_ERROR("cycle " << cycle << ": snapshot " << name << " unreadable: " << e.what());
                continue;
            }
            BOOST_REQUIRE_EQUAL(io.run(*v, io_op::read, 0, disk_size, buf.data()), 0);
            for (std::uint64_t b = 0; b < blocks; ++b) {
                const std::uint64_t got = decode(buf.data() + b * block, b);
                BOOST_TEST((std::find(cut[b].begin(), cut[b].end(), got) != cut[b].end()),
                           "cycle " << cycle << ": snapshot " << name << " block " << b << " holds " << got);
            }
            ++snapshots_checked;
        }
    }
};

int cycles()
{
    const char* v = std::getenv("RCT_POWER_CYCLES");
    return v != nullptr ? std::atoi(v) : 30;
}

}  // namespace

BOOST_AUTO_TEST_CASE(power_cuts_lose_nothing_acknowledged)
{
    const char* seed_env = std::getenv("RCT_POWER_SEED");
    const std::uint64_t seed = seed_env != nullptr ? std::strtoull(seed_env, nullptr, 10) : 20261202;
    world w(seed);
    sync_io io;
    const int n = cycles();
    for (int cycle = 0; cycle < n; ++cycle) {
        const int ops = 5 + static_cast<int>(w.rng() % 60);
        for (int i = 0; i < ops; ++i) {
            w.step(io);
        }
        w.power_cut();
        BOOST_REQUIRE(w.reg->quarantined().empty());
        BOOST_REQUIRE(w.reg->find("d") != nullptr);
        w.check_data(io, cycle);
        w.check_checkpoints(cycle);
        w.check_snapshots(io, cycle);
    }
    BOOST_TEST_MESSAGE("power cuts " << w.cuts << ", blocks checked " << w.blocks_checked << ", checkpoints checked "
                                     << w.checkpoints_checked << ", snapshots checked " << w.snapshots_checked);
    std::printf("RESULT power cuts %llu, blocks checked %llu, checkpoints checked %llu, snapshots checked %llu\n",
                static_cast<unsigned long long>(w.cuts), static_cast<unsigned long long>(w.blocks_checked),
                static_cast<unsigned long long>(w.checkpoints_checked),
                static_cast<unsigned long long>(w.snapshots_checked));
}

// A failing sync or a full disk fails the call that needed it, cleanly;
// the disk carries on and nothing acknowledged is lost at the next cut.
BOOST_AUTO_TEST_CASE(failed_syncs_and_full_disks_fail_cleanly)
{
    world w(7);
    sync_io io;
    for (int i = 0; i < 20; ++i) {
        w.write(io);
    }
    w.flush(io);
    w.env->fail_next_sync("epochs.log", EIO);
    BOOST_CHECK_THROW(w.d().tracking()->checkpoint("failed"), error);
    w.checkpoint();  // the next one works
    w.env->fail_next_write("index.log", ENOSPC);
    BOOST_CHECK_THROW(w.d().snapshots()->snapshot("full"), error);
    w.snapshot();
    for (int i = 0; i < 20; ++i) {
        w.write(io);
    }
    w.flush(io);
    w.power_cut();
    BOOST_REQUIRE(w.reg->quarantined().empty());
    w.check_data(io, 0);
    w.check_checkpoints(0);
    w.check_snapshots(io, 0);
}
