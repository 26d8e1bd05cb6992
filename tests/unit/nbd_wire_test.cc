// NBD wire encoding and request validation.
#define BOOST_TEST_MODULE nbd_wire
#include <boost/test/unit_test.hpp>

#include "nbd/wire.hh"

#include <array>

using namespace rct::nbd;

namespace {

std::array<std::byte, request_size> encode(std::uint16_t flags, std::uint16_t type, std::uint64_t cookie,
                                           std::uint64_t offset, std::uint32_t length,
                                           std::uint32_t magic = request_magic)
{
    std::array<std::byte, request_size> b{};
    std::byte* p = b.data();
    p = store_be(p, magic);
    p = store_be(p, flags);
    p = store_be(p, type);
    p = store_be(p, cookie);
    p = store_be(p, offset);
    store_be(p, length);
    return b;
}

const session_view plain{1 << 20, 32u << 20, false, false, false};
const session_view structured{1 << 20, 32u << 20, false, true, true};

request_header hdr(std::uint16_t type, std::uint64_t off, std::uint32_t len, std::uint16_t flags = 0)
{
    return {flags, type, 7, off, len};
}

}  // namespace

BOOST_AUTO_TEST_CASE(big_endian_round_trip)
{
    std::array<std::byte, 8> b{};
    store_be<std::uint64_t>(b.data(), 0x0102030405060708);
    BOOST_TEST(static_cast<int>(b[0]) == 1);
    BOOST_TEST(static_cast<int>(b[7]) == 8);
    BOOST_TEST(load_be<std::uint64_t>(b.data()) == 0x0102030405060708u);
    store_be<std::uint16_t>(b.data(), 0xabcd);
    BOOST_TEST(static_cast<int>(b[0]) == 0xab);
    BOOST_TEST(load_be<std::uint16_t>(b.data()) == 0xabcd);
}

BOOST_AUTO_TEST_CASE(decode_request_fields)
{
    auto b = encode(cmd_flag_fua, cmd_write, 0x1122334455667788, 4096, 512);
    request_header h{};
    BOOST_REQUIRE(decode_request(b.data(), h));
    BOOST_TEST(h.flags == cmd_flag_fua);
    BOOST_TEST(h.type == cmd_write);
    BOOST_TEST(h.cookie == 0x1122334455667788u);
    BOOST_TEST(h.offset == 4096u);
    BOOST_TEST(h.length == 512u);
}

BOOST_AUTO_TEST_CASE(decode_rejects_bad_magic)
{
    auto b = encode(0, cmd_read, 1, 0, 512, 0x25609514);
    request_header h{};
    BOOST_TEST(!decode_request(b.data(), h));
}

BOOST_AUTO_TEST_CASE(in_range_requests_pass)
{
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 4096), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_write, (1 << 20) - 512, 512), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_flush, 0, 0), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_trim, 0, 1 << 20), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_write_zeroes, 0, 4096, cmd_flag_no_hole | cmd_flag_fast_zero), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_cache, 0, 4096), plain) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_block_status, 0, 4096, cmd_flag_req_one), structured) == 0u);
}

BOOST_AUTO_TEST_CASE(past_end_errors_follow_the_spec)
{
    BOOST_TEST(validate_request(hdr(cmd_read, 1 << 20, 1), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_write, 1 << 20, 1), plain) == err_nospc);
    BOOST_TEST(validate_request(hdr(cmd_write_zeroes, (1 << 20) - 1, 2), plain) == err_nospc);
    BOOST_TEST(validate_request(hdr(cmd_trim, 1 << 21, 1), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_cache, 0, (1 << 20) + 1), plain) == err_inval);
    // offset + length wrapping around 2^64 must not look in range.
    BOOST_TEST(validate_request(hdr(cmd_read, ~0ull - 10, 4096), plain) == err_inval);
}

BOOST_AUTO_TEST_CASE(flags_are_checked_per_command)
{
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 512, cmd_flag_fua), plain) == 0u);  // FUA ignored
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 512, cmd_flag_df), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 512, cmd_flag_df), structured) == 0u);
    BOOST_TEST(validate_request(hdr(cmd_write, 0, 512, cmd_flag_no_hole), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_write, 0, 512, 1 << 9), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_trim, 0, 512, cmd_flag_fast_zero), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 512, cmd_flag_req_one), plain) == err_inval);
}

BOOST_AUTO_TEST_CASE(unknown_commands_and_missing_context)
{
    BOOST_TEST(validate_request(hdr(99, 0, 0), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_block_status, 0, 512), plain) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_flush, 512, 0), plain) == err_inval);
}

BOOST_AUTO_TEST_CASE(read_only_and_payload_limits)
{
    session_view ro = plain;
    ro.read_only = true;
    BOOST_TEST(validate_request(hdr(cmd_write, 0, 512), ro) == err_perm);
    BOOST_TEST(validate_request(hdr(cmd_trim, 0, 512), ro) == err_perm);
    BOOST_TEST(validate_request(hdr(cmd_write_zeroes, 0, 512), ro) == err_perm);
    BOOST_TEST(validate_request(hdr(cmd_read, 0, 512), ro) == 0u);
    session_view big = plain;
    big.size = 1ull << 40;
    BOOST_TEST(validate_request(hdr(cmd_read, 0, (32u << 20) + 1), big) == err_inval);
    BOOST_TEST(validate_request(hdr(cmd_write_zeroes, 0, 0xffffffffu), big) == 0u);  // no payload, no cap
}

BOOST_AUTO_TEST_CASE(errno_mapping)
{
    BOOST_TEST(error_from_errno(-EPERM) == err_perm);
    BOOST_TEST(error_from_errno(-ENOSPC) == err_nospc);
    BOOST_TEST(error_from_errno(-EDQUOT) == err_nospc);
    BOOST_TEST(error_from_errno(-EFBIG) == err_nospc);
    BOOST_TEST(error_from_errno(-EINVAL) == err_inval);
    BOOST_TEST(error_from_errno(-ENOTSUP) == err_notsup);
    BOOST_TEST(error_from_errno(-EROFS) == err_perm);
    BOOST_TEST(error_from_errno(-EIO) == err_io);
    BOOST_TEST(error_from_errno(-EBADF) == err_io);
}
