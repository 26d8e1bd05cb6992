#define BOOST_TEST_MODULE size
#include <rct/size.hh>

#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

// Lets BOOST_TEST print parse_size results in failure messages.
namespace boost::test_tools::tt_detail {
template <>
struct print_log_value<std::optional<std::uint64_t>> {
    void operator()(std::ostream& os, const std::optional<std::uint64_t>& v)
    {
        if (v) {
            os << *v;
        } else {
            os << "nullopt";
        }
    }
};
}  // namespace boost::test_tools::tt_detail

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = KiB << 10;
constexpr std::uint64_t GiB = MiB << 10;
constexpr std::uint64_t TiB = GiB << 10;
constexpr std::uint64_t PiB = TiB << 10;

}  // namespace

BOOST_AUTO_TEST_CASE(plain_bytes)
{
    BOOST_TEST(rct::parse_size("0") == 0u);
    BOOST_TEST(rct::parse_size("4096") == 4096u);
    BOOST_TEST(rct::parse_size("512B") == 512u);
    BOOST_TEST(rct::parse_size("007") == 7u);
}

BOOST_AUTO_TEST_CASE(binary_suffixes_any_case)
{
    BOOST_TEST(rct::parse_size("1K") == KiB);
    BOOST_TEST(rct::parse_size("1k") == KiB);
    BOOST_TEST(rct::parse_size("512M") == 512 * MiB);
    BOOST_TEST(rct::parse_size("10G") == 10 * GiB);
    BOOST_TEST(rct::parse_size("10g") == 10 * GiB);
    BOOST_TEST(rct::parse_size("10GB") == 10 * GiB);
    BOOST_TEST(rct::parse_size("10GiB") == 10 * GiB);
    BOOST_TEST(rct::parse_size("10gib") == 10 * GiB);
    BOOST_TEST(rct::parse_size("2T") == 2 * TiB);
    BOOST_TEST(rct::parse_size("3P") == 3 * PiB);
}

BOOST_AUTO_TEST_CASE(exact_fractions)
{
    BOOST_TEST(rct::parse_size("1.5T") == TiB + TiB / 2);
    BOOST_TEST(rct::parse_size("1.5G") == 1536 * MiB);
    BOOST_TEST(rct::parse_size("0.5K") == 512);
    BOOST_TEST(rct::parse_size("0.25M") == 256 * KiB);
    BOOST_TEST(rct::parse_size("2.0") == 2);
    BOOST_TEST(rct::parse_size("1.50000G") == 1536 * MiB);
    BOOST_TEST(rct::parse_size("0.0009765625M") == 1024);  // 2^-10 M
}

BOOST_AUTO_TEST_CASE(inexact_fractions_are_refused)
{
    BOOST_TEST(!rct::parse_size("1.5"));
    BOOST_TEST(!rct::parse_size("0.3K"));  // 307.2 bytes
    BOOST_TEST(!rct::parse_size("0.1G"));
    BOOST_TEST(!rct::parse_size("0.0001K"));
}

BOOST_AUTO_TEST_CASE(malformed)
{
    for (const char* s : {"", " ", "-1", "-1G", "+1", "G", "10X", "10 G", " 10G", "10G ", "1..5G", ".5G", "10.",
                          "10.G", "1e3", "0x10", "10iB", "10GiBB", "10GG", "abc", "1,5G", "１"}) {
        BOOST_TEST(!rct::parse_size(s), "accepted '" << s << "'");
    }
}

BOOST_AUTO_TEST_CASE(limits)
{
    constexpr std::uint64_t max = std::uint64_t{1} << 63;
    BOOST_TEST(rct::parse_size("8192P") == max);
    BOOST_TEST(rct::parse_size("9223372036854775808") == max);
    BOOST_TEST(!rct::parse_size("9223372036854775809"));
    BOOST_TEST(!rct::parse_size("8193P"));
    BOOST_TEST(!rct::parse_size("8192.5P"));
    BOOST_TEST(!rct::parse_size("18446744073709551616"));
    BOOST_TEST(!rct::parse_size("99999999999999999999999999999999999999999999G"));
}

BOOST_AUTO_TEST_CASE(format_is_shortest_exact)
{
    BOOST_TEST(rct::format_size(0) == "0");
    BOOST_TEST(rct::format_size(512) == "512");
    BOOST_TEST(rct::format_size(KiB) == "1K");
    BOOST_TEST(rct::format_size(10 * GiB) == "10G");
    BOOST_TEST(rct::format_size(1536 * MiB) == "1536M");
    BOOST_TEST(rct::format_size(4097) == "4097");
    BOOST_TEST(rct::format_size(2048 * PiB) == "2048P");
}

BOOST_AUTO_TEST_CASE(round_trip)
{
    for (std::uint64_t v : {std::uint64_t{1}, std::uint64_t{511}, std::uint64_t{512}, KiB, 3 * MiB + 512,
                            10 * GiB, TiB + TiB / 2, PiB, std::uint64_t{1} << 63, std::uint64_t{123456789}}) {
        const std::string s = rct::format_size(v);
        BOOST_TEST(rct::parse_size(s) == v, s);
    }
}
