// The live-upgrade state blob as a new rctd reads it (upgrade/handover.hh):
// the first input byte is how many descriptors came with it, the rest the
// memfd's content. Either a state whose every descriptor index is in
// range and that encodes back to a blob decoding to the same state, or
// rct::error (corrupt, unsupported); nothing else may escape.
#include "check.hh"

#include "upgrade/handover.hh"

#include <rct/error.hh>

using namespace rct;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size == 0) {
        return 0;
    }
    const std::size_t fds = data[0];
    try {
        const daemon::upgrade::state s = daemon::upgrade::decode({data + 1, size - 1}, fds);
        RCT_FUZZ_CHECK(s.lock_fd < fds);
        for (const auto& c : s.connections) {
            RCT_FUZZ_CHECK(c.fd < fds);
        }
        const auto again = daemon::upgrade::encode(s);
        RCT_FUZZ_CHECK(daemon::upgrade::encode(daemon::upgrade::decode(again, fds)) == again);
    } catch (const error& e) {
        RCT_FUZZ_CHECK(e.code() == errc::corrupt || e.code() == errc::unsupported);
    }
    return 0;
}
