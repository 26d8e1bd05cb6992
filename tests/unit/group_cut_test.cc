// Consistency groups (group_cut.hh) through the whole engine, against a
// causal writer on its own ring: write k goes to disk k % 3, into a block of
// its own (block k / 3: each disk's writes are in consecutive blocks), each
// issued once the previous one, to another disk, completed. Checkpoints do
// not hold writes the way a snapshot's copy-on-write does, and a write here
// takes a few microseconds, less than the time between two members' cuts:
// a group cut without its write barriers is caught breaking the rule.
#define BOOST_TEST_MODULE group_cut
#include <boost/test/unit_test.hpp>

#include "engine.hh"

#include <rct/error.hh>
#include <rct/group_cut.hh>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

using namespace rct;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

std::vector<std::shared_ptr<disk>> three_disks(test::engine& e)
{
    std::vector<std::shared_ptr<disk>> disks;
    for (const char* n : {"a", "b", "c"}) {
        disks.push_back(e.reg->create(n, 4 * MiB));
    }
    return disks;
}

std::uint64_t block0(test::engine& e, disk& d, const std::string& snap)
{
    const auto b = e.read(*d.snapshots()->view(snap), 0, 8);
    std::uint64_t k;
    std::memcpy(&k, b.data(), 8);
    return k;
}

errc code_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const error& e) {
        return e.code();
    }
    return errc::io_error;
}

}  // namespace

// Every group checkpoint splits the writes into a causally closed prefix:
// every write before the cut (not changed since the checkpoint) comes before
// every write after it, whatever disk each went to.
BOOST_AUTO_TEST_CASE(every_group_cut_is_a_causally_closed_prefix)
{
    test::engine e("group");
    std::vector<std::shared_ptr<disk>> disks;
    for (const char* n : {"a", "b", "c"}) {
        disks.push_back(e.reg->create(n, 256 * MiB, 4096));
    }
    const std::uint64_t capacity = 3 * (256 * MiB / 4096);
    std::atomic<bool> stop{false};
    std::atomic<bool> write_failed{false};
    std::atomic<std::uint64_t> acked{0};
    std::thread writer([&] {
        sync_io io;
        std::vector<std::byte> buf(4096);
        for (std::uint64_t k = 1; !stop.load() && k < capacity; ++k) {
            if (io.run(disks[k % 3]->store(), io_op::write, k / 3 * 4096, buf.size(), buf.data()) != 0) {
                write_failed = true;
                return;
            }
            acked.store(k);
        }
    });
    // The last write to disk d up to x (0: none; write 0 does not exist).
    const auto last_upto = [](std::uint64_t x, std::uint64_t d) -> std::uint64_t { return x < d ? 0 : x - (x - d) % 3; };
    std::string broken;
    int cuts = 0;
    for (int i = 0; i < 100 && broken.empty() && acked.load() + 1000 < capacity; ++i, ++cuts) {
        const std::uint64_t start = acked.load();
        while (acked.load() < start + 3 && !write_failed.load()) {
            std::this_thread::yield();
        }
        const std::uint64_t before = acked.load();
        const std::string name = "g" + std::to_string(i);
        checkpoint_group(disks, name);
        const std::uint64_t known = acked.load();  // every write up to here is on one side
        std::uint64_t last_before = 0;
        std::uint64_t first_after = capacity;
        for (std::uint64_t d = 0; d < 3; ++d) {
            const auto page = disks[d]->tracking()->changes(name, std::nullopt, 0, 1);
            // Disk d's first write after the cut: the first block changed since.
            const std::uint64_t a = page.extents.empty() ? capacity : page.extents[0].offset / 4096 * 3 + d;
            if (a <= known) {
                first_after = std::min(first_after, a);
            }
            const std::uint64_t below = a == capacity ? known : (a >= 3 ? std::min(a - 3, known) : 0);
            last_before = std::max(last_before, last_upto(below, d));
        }
        if (last_before >= first_after) {
            broken = name + " holds write " + std::to_string(last_before) + " but not write " +
                     std::to_string(first_after) + ", which completed before it was issued";
        } else if (first_after <= before) {
            broken = name + " misses write " + std::to_string(first_after) + ", acknowledged before the call";
        }
    }
    stop = true;
    writer.join();
    BOOST_TEST(!write_failed.load());
    BOOST_TEST(broken.empty(), broken);
    BOOST_TEST(cuts >= 50);
    BOOST_TEST_MESSAGE(cuts << " group cuts over " << acked.load() << " causal writes");
}

// The same instant for snapshots: each member's snapshot reads what its
// checkpoint says it holds.
BOOST_AUTO_TEST_CASE(group_snapshots_hold_a_closed_prefix)
{
    test::engine e("group");
    const auto disks = three_disks(e);
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> acked{0};
    std::thread writer([&] {
        sync_io io;
        std::vector<std::byte> buf(4096);
        for (std::uint64_t k = 1; !stop.load(); ++k) {
            std::memcpy(buf.data(), &k, 8);
            if (io.run(disks[k % 3]->store(), io_op::write, 0, buf.size(), buf.data()) != 0) {
                return;
            }
            acked.store(k);
        }
    });
    std::string broken;
    for (int i = 0; i < 20 && broken.empty(); ++i) {
        const std::uint64_t before = acked.load();
        const std::string name = "s" + std::to_string(i);
        snapshot_group(disks, name);
        std::uint64_t v[3];
        for (int d = 0; d < 3; ++d) {
            v[d] = block0(e, *disks[d], name);
        }
        const std::uint64_t m = std::max({v[0], v[1], v[2]});
        for (std::uint64_t d = 0; d < 3 && broken.empty(); ++d) {
            const std::uint64_t want = m >= d ? m - (m - d) % 3 : 0;  // disk d's last write up to m
            if (v[d] != want || m < before) {
                broken = name + ": blocks " + std::to_string(v[0]) + " " + std::to_string(v[1]) + " " +
                         std::to_string(v[2]) + ", acknowledged before the call " + std::to_string(before);
            }
        }
    }
    stop = true;
    writer.join();
    BOOST_TEST(broken.empty(), broken);
}

BOOST_AUTO_TEST_CASE(a_group_is_cut_whole_or_not_at_all)
{
    test::engine e("group");
    const auto disks = three_disks(e);
    disks[1]->tracking()->checkpoint(std::string("taken"));
    BOOST_TEST(code_of([&] { snapshot_group(disks, "taken"); }) == errc::exists);
    BOOST_TEST(!disks[0]->tracking()->checkpoint_epoch("taken"));
    BOOST_TEST(!disks[2]->tracking()->checkpoint_epoch("taken"));
    BOOST_TEST(code_of([&] { snapshot_group({disks[0], disks[0]}, "x"); }) == errc::invalid_argument);
    BOOST_TEST(code_of([&] { checkpoint_group({disks[0]}, "x"); }) == errc::invalid_argument);
    // An invalid name fails in every member: nothing is left behind.
    BOOST_TEST(code_of([&] { checkpoint_group(disks, "-bad name"); }) == errc::invalid_argument);
    for (const auto& d : disks) {
        BOOST_TEST(d->tracking()->checkpoints().size() == (d == disks[1] ? 1u : 0u));
    }

    const group_result g = checkpoint_group(disks, "k");
    BOOST_REQUIRE(g.members.size() == 3u);
    for (std::size_t i = 0; i < 3; ++i) {
        BOOST_TEST(g.members[i].checkpoint.name == "k");
        BOOST_TEST(!g.members[i].checkpoint.token.empty());
        BOOST_TEST(disks[i]->tracking()->checkpoint_epoch("k").has_value());
        BOOST_TEST(disks[i]->snapshots()->snapshots().empty());  // checkpoints only
    }
}
