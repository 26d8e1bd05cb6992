// current.map as recovery reads it: refused (errc::corrupt) unless its
// checksum holds and its runs are non-empty, ascending, disjoint and inside
// its own chunk count, which is what lets open mark them without bounds
// checks of its own.
#include "check.hh"
#include "scratch.hh"

#include "tracking/rules.hh"
#include "tracking/store.hh"

#include <rct/error.hh>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    fuzz::put_file("current.map", data, size);
    try {
        const auto cur = tracking::read_current(fuzz::scratch_dir());
        RCT_FUZZ_CHECK(cur.has_value());
        std::uint64_t end = 0;
        for (const auto& r : cur->runs) {
            RCT_FUZZ_CHECK(r.count != 0 && r.start >= end && r.start + r.count <= cur->chunks);
            end = r.start + r.count;
        }
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt);
    }
    return 0;
}
