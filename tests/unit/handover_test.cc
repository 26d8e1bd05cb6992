#define BOOST_TEST_MODULE handover
#include "upgrade/handover.hh"

#include <rct/codec.hh>
#include <rct/error.hh>

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

namespace up = rct::daemon::upgrade;
using rct::errc;

namespace {

up::state sample(std::uint32_t fds)
{
    up::state s;
    s.old_pid = 4242;
    s.old_version = "0.1.0";
    s.frozen_at_ns = 123456789;
    s.lock_fd = 0;
    s.sockets = {{up::socket_kind::nbd, 1, "nbd"}, {up::socket_kind::control, 2, "control"}};
    for (std::uint32_t i = 3; i < fds; ++i) {
        up::frozen_nbd c;
        c.fd = i;
        c.state.at = i % 2 ? rct::nbd::phase::transmission : rct::nbd::phase::options;
        c.state.peer = "client " + std::to_string(i);
        c.state.neg.structured = true;
        if (c.state.at == rct::nbd::phase::transmission) {
            c.state.export_name = "disk@snap";
            c.state.neg.meta = {{1, rct::nbd::meta_kind::dirty_bitmap, 7, 3, "qemu:dirty-bitmap:c1"}};
            c.state.output = {std::byte{1}, std::byte{2}};
        } else {
            c.state.drain_opt = 3;
            c.state.drain_left = 1000;
        }
        c.state.input = {std::byte{0x25}, std::byte{0x60}};
        s.connections.push_back(std::move(c));
    }
    s.disks["0f5e3c1a"] = {7, 3, 16384, {{0, 4}, {100, 1}}};
    s.disks["9b2d4e7f"] = {1, 1, 16, {}};
    return s;
}

rct::errc decode_error(const std::vector<std::uint8_t>& blob, std::size_t fds)
{
    try {
        up::decode(blob, fds);
    } catch (const rct::error& e) {
        return e.code();
    }
    BOOST_FAIL("decoded a blob that must be refused");
    return errc::io_error;
}

// Re-seals a blob whose body was edited (so that validation after the
// checksum is what refuses it).
void reseal(std::vector<std::uint8_t>& blob)
{
    rct::persist::store_le<std::uint64_t>(blob.data() + 16, blob.size() - 32);
    rct::persist::store_le<std::uint64_t>(blob.data() + 24, up::body_checksum({blob.data() + 32, blob.size() - 32}));
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip)
{
    const up::state s = sample(10);
    const auto d = up::decode(up::encode(s), 10);
    BOOST_TEST(d.old_pid == 4242u);
    BOOST_TEST(d.old_version == "0.1.0");
    BOOST_REQUIRE(d.connections.size() == 7u);
    const auto& c = d.connections[0];
    BOOST_TEST(c.fd == 3u);
    BOOST_TEST(c.state.export_name == "disk@snap");
    BOOST_REQUIRE(c.state.neg.meta.size() == 1u);
    BOOST_TEST(c.state.neg.meta[0].epoch == 7u);
    BOOST_TEST(c.state.neg.meta[0].generation == 3u);
    BOOST_TEST(c.state.neg.meta[0].name == "qemu:dirty-bitmap:c1");
    BOOST_TEST(c.state.output.size() == 2u);
    BOOST_TEST(d.connections[1].state.drain_left == 1000u);
    BOOST_REQUIRE(d.disks.size() == 2u);
    const auto& h = d.disks.at("0f5e3c1a");
    BOOST_TEST(h.generation == 7u);
    BOOST_TEST(h.epoch == 3u);
    BOOST_TEST(h.chunks == 16384u);
    BOOST_REQUIRE(h.runs.size() == 2u);
    BOOST_TEST(h.runs[1].start == 100u);
    BOOST_TEST(h.runs[1].count == 1u);
    BOOST_TEST(d.disks.at("9b2d4e7f").runs.empty());
    BOOST_TEST(up::encode(d) == up::encode(s));
}

BOOST_AUTO_TEST_CASE(damage_and_lies_are_refused)
{
    const auto good = up::encode(sample(10));
    auto flipped = good;
    flipped[40] ^= 1;
    BOOST_TEST((decode_error(flipped, 10) == errc::corrupt));  // checksum

    auto version = good;
    version[8] = 9;
    BOOST_TEST((decode_error(version, 10) == errc::unsupported));

    auto truncated = good;
    truncated.pop_back();
    BOOST_TEST((decode_error(truncated, 10) == errc::corrupt));  // length

    // A descriptor index past the descriptors received.
    BOOST_TEST((decode_error(good, 9) == errc::corrupt));

    // A count that claims more than the blob holds: validated before any
    // allocation, after the checksum.
    auto huge = up::encode(up::state{});
    const std::size_t nconn_at = huge.size() - 8;  // then the disk count
    rct::persist::store_le<std::uint32_t>(huge.data() + nconn_at, 0x7fffffff);
    reseal(huge);
    BOOST_TEST((decode_error(huge, 1) == errc::corrupt));
    auto disks = up::encode(up::state{});
    rct::persist::store_le<std::uint32_t>(disks.data() + disks.size() - 4, 0x7fffffff);
    reseal(disks);
    BOOST_TEST((decode_error(disks, 1) == errc::corrupt));
    // A disk whose run count claims more than is left.
    up::state one;
    one.disks["x"] = {1, 1, 16, {}};
    auto runs = up::encode(one);
    rct::persist::store_le<std::uint64_t>(runs.data() + runs.size() - 8, std::uint64_t{1} << 60);
    reseal(runs);
    BOOST_TEST((decode_error(runs, 1) == errc::corrupt));

    auto trailing = up::encode(up::state{});
    trailing.push_back(0);
    reseal(trailing);
    BOOST_TEST((decode_error(trailing, 1) == errc::corrupt));
}

BOOST_AUTO_TEST_CASE(state_and_descriptors_over_a_socketpair)
{
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    rct::unique_fd a(sv[0]), b(sv[1]);
    // More descriptors than one message carries, each a file we can tell.
    const std::uint32_t n = 600;
    std::vector<rct::unique_fd> files;
    std::vector<int> raw;
    for (std::uint32_t i = 0; i < n; ++i) {
        files.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        raw.push_back(files.back().get());
    }
    const up::state s = sample(n);
    std::thread sender([&] { up::send_state(a.get(), s, raw); });
    auto [got, fds] = up::receive_state(b.get(), std::chrono::steady_clock::now() + std::chrono::seconds(10));
    sender.join();
    BOOST_REQUIRE(fds.size() == n);
    BOOST_TEST(got.connections.size() == s.connections.size());
    struct stat want {}, have {};
    ::fstat(raw[n - 1], &want);
    ::fstat(fds[n - 1].get(), &have);
    BOOST_TEST(want.st_rdev == have.st_rdev);
    BOOST_TEST((::fcntl(fds[0].get(), F_GETFD) & FD_CLOEXEC) != 0);
}

BOOST_AUTO_TEST_CASE(a_peer_of_another_version_is_refused)
{
    int sv[2];
    BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    rct::unique_fd a(sv[0]), b(sv[1]);
    std::uint8_t hdr[24] = {};
    rct::persist::store_le<std::uint32_t>(hdr, 0x55544352);
    rct::persist::store_le<std::uint16_t>(hdr + 4, 1);
    rct::persist::store_le<std::uint16_t>(hdr + 6, 99);
    BOOST_REQUIRE(::send(a.get(), hdr, sizeof hdr, 0) == 24);
    try {
        up::receive(b.get(), std::chrono::steady_clock::now() + std::chrono::seconds(5));
        BOOST_FAIL("a hello of hand-over version 99 was accepted");
    } catch (const rct::error& e) {
        BOOST_TEST((e.code() == errc::unsupported));
    }
    // The end of the channel is not a message.
    a.reset();
    BOOST_TEST(!up::receive(b.get(), std::chrono::steady_clock::now() + std::chrono::seconds(5)));
}
