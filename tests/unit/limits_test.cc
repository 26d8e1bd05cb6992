#define BOOST_TEST_MODULE limits
// The log limiter (one line per window, with the count of those left out)
// and NBD admission (per-peer and total slots, given back by the ticket).
#include "admission.hh"

#include <rct/log.hh>

#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(limiter_writes_one_line_per_window_and_counts_the_rest)
{
    rct::log::limiter lim(200ms);
    std::uint64_t left_out = 99;
    BOOST_TEST(lim.admit(left_out));
    BOOST_TEST(left_out == 0u);
    for (int i = 0; i < 1000; ++i) {
        BOOST_TEST(!lim.admit(left_out));
    }
    std::this_thread::sleep_for(250ms);
    BOOST_TEST(lim.admit(left_out));
    BOOST_TEST(left_out == 1000u);
    BOOST_TEST(!lim.admit(left_out));
}

BOOST_AUTO_TEST_CASE(limiter_admits_one_of_many_racing_threads)
{
    rct::log::limiter lim(std::chrono::hours(1));
    std::atomic<int> admitted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&] {
            std::uint64_t n = 0;
            for (int i = 0; i < 10000; ++i) {
                admitted += lim.admit(n) ? 1 : 0;
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    BOOST_TEST(admitted.load() == 1);
}

BOOST_AUTO_TEST_CASE(admission_caps_each_peer_and_the_total)
{
    rct::daemon::admission slots(5, 2);
    std::string why;
    std::vector<rct::daemon::admission::ticket> held;
    for (int i = 0; i < 2; ++i) {
        auto t = slots.admit("uid 1000", &why);
        BOOST_REQUIRE(t);
        held.push_back(std::move(*t));
    }
    BOOST_TEST(!slots.admit("uid 1000", &why));
    BOOST_TEST(why.find("--max-connections-per-peer") != std::string::npos);
    for (const char* peer : {"uid 0", "uid 0", "127.0.0.2"}) {
        auto t = slots.admit(peer, &why);
        BOOST_REQUIRE(t);
        held.push_back(std::move(*t));
    }
    BOOST_TEST(!slots.admit("127.0.0.3", &why));
    BOOST_TEST(why.find("--max-connections") != std::string::npos);

    // A destroyed ticket gives its slot back; a moved-from one gives nothing.
    rct::daemon::admission::ticket moved = std::move(held.front());
    held.erase(held.begin());
    BOOST_TEST(!slots.admit("uid 1000", &why));
    moved.reset();
    BOOST_TEST(static_cast<bool>(slots.admit("uid 1000", &why)));  // its ticket ends at once
    held.clear();
    for (int i = 0; i < 2; ++i) {
        BOOST_TEST(static_cast<bool>(slots.admit("uid 1000", &why)));
    }
}
