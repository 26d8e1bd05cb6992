// The worker's memory budget (daemon/memory_budget.hh) and the buffer
// pool's size classes: admission in arrival order, cancellation, and bytes
// always coming back.
#define BOOST_TEST_MODULE memory_budget
#include <boost/test/unit_test.hpp>

#include "memory_budget.hh"

#include <rct/buffer_pool.hh>

#include <vector>

using rct::daemon::memory_budget;

namespace {

struct recorder final : memory_budget::waiter {
    recorder(std::vector<int>& log, int id) : log_(log), id_(id) {}
    void admitted() noexcept override { log_.push_back(id_); }

    std::vector<int>& log_;
    int id_;
};

constexpr std::size_t MiB = std::size_t{1} << 20;

}  // namespace

BOOST_AUTO_TEST_CASE(takes_within_the_limit)
{
    memory_budget b(64 * MiB);
    BOOST_TEST(b.try_take(32 * MiB));
    BOOST_TEST(b.try_take(32 * MiB));
    BOOST_TEST(!b.try_take(4096));
    b.give(32 * MiB);
    BOOST_TEST(b.try_take(4096));
    BOOST_TEST(b.used() == 32 * MiB + 4096);
}

BOOST_AUTO_TEST_CASE(waiters_are_admitted_in_order)
{
    memory_budget b(64 * MiB);
    std::vector<int> log;
    recorder big(log, 1), small(log, 2);
    BOOST_REQUIRE(b.try_take(48 * MiB));
    b.enqueue(big, 32 * MiB);
    // A small take that would fit must not pass the queued large one, or
    // the large one could wait for ever.
    BOOST_TEST(!b.try_take(4096));
    b.enqueue(small, 4096);
    BOOST_TEST(log.empty());
    b.give(16 * MiB);  // 32 MiB free: the large one, not yet the small one
    BOOST_TEST(log == std::vector<int>({1}));
    BOOST_TEST(small.queued());
    b.give(4096);
    BOOST_TEST(log == std::vector<int>({1, 2}));
    BOOST_TEST(b.used() == 64 * MiB);
    BOOST_TEST(b.queued() == 0u);
}

BOOST_AUTO_TEST_CASE(cancel_lets_the_next_one_in)
{
    memory_budget b(64 * MiB);
    std::vector<int> log;
    recorder head(log, 1), next(log, 2);
    BOOST_REQUIRE(b.try_take(40 * MiB));
    b.enqueue(head, 32 * MiB);
    b.enqueue(next, 16 * MiB);
    BOOST_TEST(b.cancel(head));
    BOOST_TEST(!b.cancel(head));
    BOOST_TEST(log == std::vector<int>({2}));
    BOOST_TEST(b.used() == 56 * MiB);
    b.give(40 * MiB);
    b.give(16 * MiB);
    BOOST_TEST(b.used() == 0u);
}

BOOST_AUTO_TEST_CASE(pool_size_classes)
{
    using rct::buffer_pool;
    BOOST_TEST(buffer_pool::rounded(1) == 4096u);
    BOOST_TEST(buffer_pool::rounded(4097) == 8192u);
    BOOST_TEST(buffer_pool::rounded(32 * MiB) == 32 * MiB);
    BOOST_TEST(buffer_pool::rounded(32 * MiB + 1) == 0u);
    // Mapped buffers (map_min and up) come back page-aligned and usable;
    // the cache keeps no more than it is allowed.
    buffer_pool pool(8 * MiB);
    std::byte* a = pool.get(4 * MiB);
    std::byte* c = pool.get(8 * MiB);
    BOOST_REQUIRE(a != nullptr && c != nullptr);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(a) % 4096 == 0u);
    a[4 * MiB - 1] = std::byte{1};
    pool.put(a, 4 * MiB);
    pool.put(c, 8 * MiB);
    BOOST_TEST(pool.cached() == 4 * MiB);
    BOOST_TEST(pool.get(3 * MiB) == a);
    pool.put(a, 3 * MiB);
}
