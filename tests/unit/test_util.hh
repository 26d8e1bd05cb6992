// Helpers the unit tests share: a private temporary directory, the errc of
// the rct::error a call throws, and errc printable in Boost.Test messages.
#pragma once

#include <boost/test/unit_test.hpp>

#include <rct/error.hh>
#include <rct/log.hh>

#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace rct {
inline std::ostream& operator<<(std::ostream& os, errc e) { return os << static_cast<int>(e); }
}  // namespace rct

namespace rct::test {

// /var/tmp/rct-NAME-XXXXXX, removed with everything in it at the end; the
// engine's log is cut down to `quiet` and worse meanwhile.
struct temp_dir {
    explicit temp_dir(const std::string& name, log::level quiet = log::level::err)
    {
        std::string tmpl = "/var/tmp/rct-" + name + "-XXXXXX";
        BOOST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
        log::set_level(quiet);
    }
    ~temp_dir() { std::filesystem::remove_all(path); }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    std::filesystem::path path;
};

// The code of the rct::error f throws; fails the test if it throws none.
inline errc code_of(const std::function<void()>& f)
{
    try {
        f();
    } catch (const error& e) {
        BOOST_TEST_MESSAGE("rct::error: " << e.what());
        return e.code();
    }
    BOOST_FAIL("expected an rct::error");
    return errc::io_error;
}

}  // namespace rct::test
