// intent.map's two slots as recovery loads them: any bytes give either no
// valid slot or a bitmap of exactly the provisioned size — never a read
// past a slot, never a bitmap recovery would index out of range.
#include "check.hh"
#include "scratch.hh"

#include "tracking/store.hh"

#include <rct/error.hh>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    constexpr std::uint64_t regions = 65536;
    fuzz::put_file("intent.map", data, size);
    try {
        tracking::intent_file f(fuzz::scratch_dir() / "intent.map", std::uint64_t{64} << 20, regions);
        if (const auto words = f.load()) {
            RCT_FUZZ_CHECK(words->size() == (regions + 63) / 64);
        }
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt);
    }
    return 0;
}
