// The snapshot store's index.log as open replays it
// (docs/format/snapshots.md): either damage, reported and never thrown, or
// an index whose copies obey the model — labels > 0 and strictly
// increasing per chunk, no slot used twice — so that reads and frees can
// trust it.
#include "check.hh"
#include "scratch.hh"

#include "snapshots/index.hh"

#include <rct/error.hh>

#include <algorithm>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    fuzz::put_file("index.log", data, size);
    snapshots::store_index idx(fuzz::scratch_dir());
    if (!idx.damage().empty()) {
        return 0;
    }
    const auto used = idx.used_slots();
    RCT_FUZZ_CHECK(std::adjacent_find(used.begin(), used.end()) == used.end());
    for (const auto& [epoch, s] : idx.snaps()) {
        RCT_FUZZ_CHECK(epoch != 0 && epoch <= idx.max_epoch());
        (void)idx.lookup(0, epoch);
    }
    RCT_FUZZ_CHECK(idx.snaps().empty() || idx.initialized());
    return 0;
}
