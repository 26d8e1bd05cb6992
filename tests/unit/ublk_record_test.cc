#define BOOST_TEST_MODULE ublk_record
#include "ublk/record.hh"

#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
using rct::daemon::ublk::read_record;
using rct::daemon::ublk::record;
using rct::daemon::ublk::remove_record;
using rct::daemon::ublk::write_record;

namespace {

struct tmpdir {
    fs::path p;
    tmpdir()
    {
        char tmpl[] = "/tmp/rct-ublk-record-XXXXXX";
        p = ::mkdtemp(tmpl);
    }
    ~tmpdir() { fs::remove_all(p); }
    void put(const std::string& name, const std::string& text) const { std::ofstream(p / name) << text; }
};

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_and_remove)
{
    tmpdir t;
    write_record(t.p, record{"vm1", "3fc29006-2136-4c1e-95a3-a86642f9a3e4", 7});
    const auto r = read_record(t.p / "vm1.json");
    BOOST_REQUIRE(r);
    BOOST_TEST(r->disk == "vm1");
    BOOST_TEST(r->disk_id == "3fc29006-2136-4c1e-95a3-a86642f9a3e4");
    BOOST_TEST(r->dev_id == 7u);
    BOOST_TEST(!fs::exists(t.p / "vm1.json.tmp"));
    remove_record(t.p, "vm1");
    BOOST_TEST(!fs::exists(t.p / "vm1.json"));
    BOOST_TEST(!read_record(t.p / "vm1.json"));
}

// Every way a record can be wrong is refused: rctd must never act on a
// device number it cannot vouch for.
BOOST_AUTO_TEST_CASE(damaged_records_are_refused)
{
    tmpdir t;
    const std::string good = R"({"format": "rct-ublk", "version": 1, "disk": "d", "disk_id": "x", "dev_id": 3})";
    t.put("d.json", good);
    BOOST_TEST(read_record(t.p / "d.json").has_value());

    const char* bad[] = {
        "",
        "{",
        "[]",
        R"({"format": "rct-disk", "version": 1, "disk": "d", "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": 2, "disk": "d", "disk_id": "x", "dev_id": 3})",
        // Found by tests/fuzz/ublk_record: fields of the wrong type threw.
        R"({"format": 3, "version": 1, "disk": "d", "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": "1", "disk": "d", "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": true, "disk": "d", "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": 1, "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": 1, "disk": "d", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": 1, "disk": "d", "disk_id": "x"})",
        R"({"format": "rct-ublk", "version": 1, "disk": "d", "disk_id": "x", "dev_id": -1})",
        R"({"format": "rct-ublk", "version": 1, "disk": "d", "disk_id": "x", "dev_id": "3"})",
        R"({"format": "rct-ublk", "version": 1, "disk": "d", "disk_id": "x", "dev_id": 4294967295})",
        R"({"format": "rct-ublk", "version": 1, "disk": "other", "disk_id": "x", "dev_id": 3})",
        R"({"format": "rct-ublk", "version": 1, "disk": 5, "disk_id": "x", "dev_id": 3})",
    };
    for (const char* text : bad) {
        t.put("d.json", text);
        BOOST_TEST(!read_record(t.p / "d.json").has_value(), "accepted: " << text);
    }
    // A byte flipped in a good record: either still valid JSON naming the
    // same fields (then it is what it says), or refused — never a throw.
    for (std::size_t i = 0; i < good.size(); ++i) {
        std::string flipped = good;
        flipped[i] ^= 0x20;
        t.put("d.json", flipped);
        BOOST_CHECK_NO_THROW(read_record(t.p / "d.json"));
    }
}
