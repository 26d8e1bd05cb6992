// disk.json as the registry reads it at start: either a record that holds
// what the registry relies on, or rct::error(corrupt); nothing else may
// escape (the registry would not know the disk is damaged, not gone).
#include "check.hh"

#include "disk_record.hh"

#include <rct/error.hh>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    try {
        const disk_record::stored_meta m = disk_record::parse(fuzz::text(data, size), "disk.json");
        RCT_FUZZ_CHECK(m.meta.size != 0 && m.meta.size % disk_record::sector == 0);
        RCT_FUZZ_CHECK(!m.meta.id.empty());
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt);
    }
    return 0;
}
