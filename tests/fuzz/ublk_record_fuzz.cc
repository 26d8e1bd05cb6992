// A ublk attachment record (STATE/ublk/NAME.json) as recovery and the
// watchdog read it: the input is "FILENAME\nTEXT". parse_record must never
// throw, and a record it accepts must name its own file and a device id
// the kernel can have.
#include "check.hh"

#include "ublk/record.hh"

#include <algorithm>

using namespace rct::daemon::ublk;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string_view in = rct::fuzz::text(data, size);
    const auto filename = in.substr(0, in.find('\n'));
    in.remove_prefix(std::min(in.size(), filename.size() + 1));
    if (const auto r = parse_record(in, filename)) {
        RCT_FUZZ_CHECK(r->disk + ".json" == filename);
        RCT_FUZZ_CHECK(r->dev_id <= 0xfffffffe);
    }
    return 0;
}
