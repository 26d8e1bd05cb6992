// epochs.log as tracker::open replays it (docs/format/tracking.md): any
// byte sequence either replays into a history that obeys the format's rules
// (consecutive seals, sorted disjoint runs inside each seal's size) or is
// refused as damage (errc::corrupt) — never a crash, never a history that
// breaks the rules. The framing alone (record_log::parse) gets the same
// bytes in memory.
#include "check.hh"
#include "scratch.hh"

#include "persist/record_log.hh"
#include "tracking/rules.hh"
#include "tracking/store.hh"

#include <rct/error.hh>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const auto framing = persist::record_log::parse(data, size, tracking::format::record_magic,
                                                    [](std::uint16_t, persist::payload_reader&) {});
    RCT_FUZZ_CHECK(framing.valid_bytes <= size);
    RCT_FUZZ_CHECK(!(framing.torn_tail && !framing.damage.empty()));
    fuzz::put_file("epochs.log", data, size);
    try {
        tracking::epoch_log log(fuzz::scratch_dir() / "epochs.log");
        const auto st = log.replay();
        std::uint64_t prev = 0;
        for (const auto& s : st.sealed) {
            RCT_FUZZ_CHECK(s.epoch > prev);
            prev = s.epoch;
            RCT_FUZZ_CHECK(st.granularity != 0);
            tracking::check_runs(s.runs, (s.size + st.granularity - 1) / st.granularity, "fuzz");
        }
        RCT_FUZZ_CHECK(st.sealed.empty() || st.next_epoch > st.sealed.back().epoch);
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt);
    }
    return 0;
}
