// Metadata context matching (daemon/nbd/options.cc): each context once,
// the query cap, and a cost that does not grow with checkpoints squared.
#define BOOST_TEST_MODULE nbd_options
#include <boost/test/unit_test.hpp>

#include "nbd/options.hh"

#include <chrono>
#include <string>
#include <vector>

using namespace rct::nbd;

namespace {

std::vector<rct::checkpoint_info> checkpoints(std::size_t n)
{
    std::vector<rct::checkpoint_info> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        out[i].name = "cp" + std::to_string(i);
        out[i].epoch = 2 + i;
        out[i].generation = 1;
    }
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(duplicates_select_each_context_once)
{
    const auto cps = checkpoints(3);
    const std::vector<std::string> q = {"base:allocation", "qemu:dirty-bitmap:cp1", "base:allocation",
                                        "qemu:dirty-bitmap:cp1", "qemu:", "qemu:dirty-bitmap:", "base:"};
    const auto listed = match_contexts(cps, q, true);
    BOOST_REQUIRE(listed);
    BOOST_TEST(listed->size() == 4u);
    const auto set = match_contexts(cps, q, false);
    BOOST_REQUIRE(set);
    BOOST_TEST(set->size() == 2u);  // SET takes no wildcards
    BOOST_TEST((*set)[1].id == 3u);
    BOOST_TEST((*set)[1].name == "qemu:dirty-bitmap:cp1");
    BOOST_TEST((*set)[1].epoch == 3u);
}

BOOST_AUTO_TEST_CASE(too_many_queries_answer_too_big)
{
    const auto cps = checkpoints(max_meta_queries + 10);
    const std::vector<std::string> over(max_meta_queries + 1, "base:allocation");
    BOOST_TEST(!match_contexts(cps, over, true).has_value());
    BOOST_TEST(!match_contexts(cps, over, false).has_value());
    std::vector<std::string> most;
    for (std::size_t i = 0; i < max_meta_queries; ++i) {
        most.push_back("qemu:dirty-bitmap:cp" + std::to_string(i));
    }
    BOOST_TEST(match_contexts(cps, most, false)->size() == max_meta_queries);
    // LIST without queries lists every context whatever their number.
    BOOST_TEST(match_contexts(cps, {}, true)->size() == cps.size() + 1);
}

BOOST_AUTO_TEST_CASE(wildcards_cost_once)
{
    // 256 wildcards against 20000 checkpoints: quadratic matching would be
    // 10^11 steps; linear is done at once. The bound is loose on purpose.
    const auto cps = checkpoints(20000);
    const auto t = std::chrono::steady_clock::now();
    const auto m = match_contexts(cps, std::vector<std::string>(max_meta_queries, "qemu:"), true);
    const auto took = std::chrono::steady_clock::now() - t;
    BOOST_REQUIRE(m);
    BOOST_TEST(m->size() == cps.size());
    BOOST_TEST(took < std::chrono::seconds(5));
}
