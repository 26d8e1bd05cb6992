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

#include <filesystem>

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
        // What damage (passed over) or a RESET dropped stays dropped.
        RCT_FUZZ_CHECK(st.dropped_below <= st.next_epoch);
        RCT_FUZZ_CHECK(st.sealed.empty() || st.sealed.front().epoch >= st.dropped_below);
        if (!st.damage.empty()) {
            // The rewritten log replays to the same history.
            std::filesystem::remove(log.set_aside(".damaged"));
            log.rewrite_after_damage(st, "fuzz");
            const auto again = log.replay();
            RCT_FUZZ_CHECK(again.damage.empty() && again.generation == st.generation);
            RCT_FUZZ_CHECK(again.next_epoch == st.next_epoch && again.sealed.size() == st.sealed.size());
            for (std::size_t i = 0; i < st.sealed.size(); ++i) {
                RCT_FUZZ_CHECK(again.sealed[i].epoch == st.sealed[i].epoch);
                const auto& x = again.sealed[i].runs;
                const auto& y = st.sealed[i].runs;
                RCT_FUZZ_CHECK(x.size() == y.size());
                for (std::size_t k = 0; k < x.size(); ++k) {
                    RCT_FUZZ_CHECK(x[k].start == y[k].start && x[k].count == y[k].count);
                }
            }
        }
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt);
    }
    return 0;
}
