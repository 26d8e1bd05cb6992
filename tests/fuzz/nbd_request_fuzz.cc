// The NBD transmission phase as connection.cc's reader sees it: a session
// (export size, payload limit, read-only, structured replies, contexts)
// from the first 13 bytes, then a stream of 28-byte request headers, each
// WRITE followed by its payload. Checks the decoder against the wire bytes
// and that validate_request never lets through a request the export cannot
// take.
#include "check.hh"

#include "nbd/wire.hh"

#include <algorithm>
#include <array>
#include <cstring>

using namespace rct::nbd;

namespace {

void check_decoded(const std::byte* p, const request_header& h)
{
    std::array<std::byte, request_size> again{};
    std::byte* q = store_be(again.data(), request_magic);
    q = store_be(q, h.flags);
    q = store_be(q, h.type);
    q = store_be(q, h.cookie);
    q = store_be(q, h.offset);
    store_be(q, h.length);
    RCT_FUZZ_CHECK(std::memcmp(again.data(), p, request_size) == 0);
}

void check_accepted(const request_header& h, const session_view& s)
{
    const bool writes = h.type == cmd_write || h.type == cmd_trim || h.type == cmd_write_zeroes;
    RCT_FUZZ_CHECK(h.type <= cmd_block_status && h.type != cmd_disc);
    RCT_FUZZ_CHECK(!(writes && s.read_only));
    RCT_FUZZ_CHECK(h.type != cmd_block_status || s.meta_context);
    RCT_FUZZ_CHECK(h.offset <= s.size && h.length <= s.size - h.offset);
    RCT_FUZZ_CHECK((h.type != cmd_read && h.type != cmd_write) || h.length <= s.max_payload);
    RCT_FUZZ_CHECK(h.type != cmd_flush || (h.offset == 0 && h.length == 0));
    RCT_FUZZ_CHECK((h.flags & cmd_flag_df) == 0 || (h.type == cmd_read && s.structured));
    RCT_FUZZ_CHECK((h.flags & cmd_flag_req_one) == 0 || h.type == cmd_block_status);
    RCT_FUZZ_CHECK((h.flags & (cmd_flag_no_hole | cmd_flag_fast_zero)) == 0 || h.type == cmd_write_zeroes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    auto in = rct::fuzz::bytes(data, size);
    if (in.size() < 13) {
        return 0;
    }
    const auto bits = static_cast<unsigned>(in[12]);
    const session_view s{load_be<std::uint64_t>(in.data()), load_be<std::uint32_t>(in.data() + 8),
                         (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0};
    in = in.subspan(13);
    while (in.size() >= request_size) {
        request_header h{};
        if (!decode_request(in.data(), h)) {
            return 0;
        }
        check_decoded(in.data(), h);
        in = in.subspan(request_size);
        if (frame_request(h) != framing::request) {
            return 0;
        }
        if (h.type == cmd_write) {
            in = in.subspan(std::min<std::size_t>(h.length, in.size()));
        }
        if (validate_request(h, s) == 0) {
            check_accepted(h, s);
        }
    }
    return 0;
}
