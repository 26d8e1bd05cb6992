// NBD wire format: constants and big-endian field access.
//
// Values follow the upstream protocol document (doc/proto.md of the
// NetworkBlockDevice project; a copy is in the reference material). Every
// NBD field is big-endian on the wire. Header-only and allocation-free so the
// request parser can be unit-tested in isolation.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace rct::nbd {

// Handshake.
inline constexpr std::uint64_t nbdmagic = 0x4e42444d41474943;  // "NBDMAGIC"
inline constexpr std::uint64_t ihaveopt = 0x49484156454F5054;  // "IHAVEOPT"
inline constexpr std::uint64_t opt_reply_magic = 0x0003e889045565a9;
inline constexpr std::uint16_t flag_fixed_newstyle = 1 << 0;
inline constexpr std::uint16_t flag_no_zeroes = 1 << 1;
inline constexpr std::uint32_t client_flag_fixed_newstyle = 1 << 0;
inline constexpr std::uint32_t client_flag_no_zeroes = 1 << 1;

// Options.
enum opt : std::uint32_t {
    opt_export_name = 1,
    opt_abort = 2,
    opt_list = 3,
    opt_starttls = 5,
    opt_info = 6,
    opt_go = 7,
    opt_structured_reply = 8,
    opt_list_meta_context = 9,
    opt_set_meta_context = 10,
    opt_extended_headers = 11,
};

// Option replies.
inline constexpr std::uint32_t rep_ack = 1;
inline constexpr std::uint32_t rep_server = 2;
inline constexpr std::uint32_t rep_info = 3;
inline constexpr std::uint32_t rep_meta_context = 4;
inline constexpr std::uint32_t rep_err_unsup = 0x80000001;
inline constexpr std::uint32_t rep_err_policy = 0x80000002;
inline constexpr std::uint32_t rep_err_invalid = 0x80000003;
inline constexpr std::uint32_t rep_err_platform = 0x80000004;
inline constexpr std::uint32_t rep_err_tls_reqd = 0x80000005;
inline constexpr std::uint32_t rep_err_unknown = 0x80000006;
inline constexpr std::uint32_t rep_err_shutdown = 0x80000007;
inline constexpr std::uint32_t rep_err_too_big = 0x80000009;

// NBD_OPT_INFO / NBD_OPT_GO information types.
inline constexpr std::uint16_t info_export = 0;
inline constexpr std::uint16_t info_name = 1;
inline constexpr std::uint16_t info_description = 2;
inline constexpr std::uint16_t info_block_size = 3;

// Transmission flags.
inline constexpr std::uint16_t tf_has_flags = 1 << 0;
inline constexpr std::uint16_t tf_read_only = 1 << 1;
inline constexpr std::uint16_t tf_send_flush = 1 << 2;
inline constexpr std::uint16_t tf_send_fua = 1 << 3;
inline constexpr std::uint16_t tf_send_trim = 1 << 5;
inline constexpr std::uint16_t tf_send_write_zeroes = 1 << 6;
inline constexpr std::uint16_t tf_send_df = 1 << 7;
inline constexpr std::uint16_t tf_can_multi_conn = 1 << 8;
inline constexpr std::uint16_t tf_send_cache = 1 << 10;
inline constexpr std::uint16_t tf_send_fast_zero = 1 << 11;

// Commands and their flags.
enum cmd : std::uint16_t {
    cmd_read = 0,
    cmd_write = 1,
    cmd_disc = 2,
    cmd_flush = 3,
    cmd_trim = 4,
    cmd_cache = 5,
    cmd_write_zeroes = 6,
    cmd_block_status = 7,
};
inline constexpr std::uint16_t cmd_flag_fua = 1 << 0;
inline constexpr std::uint16_t cmd_flag_no_hole = 1 << 1;
inline constexpr std::uint16_t cmd_flag_df = 1 << 2;
inline constexpr std::uint16_t cmd_flag_req_one = 1 << 3;
inline constexpr std::uint16_t cmd_flag_fast_zero = 1 << 4;

inline constexpr std::uint32_t request_magic = 0x25609513;
inline constexpr std::uint32_t simple_reply_magic = 0x67446698;
inline constexpr std::uint32_t structured_reply_magic = 0x668e33ef;
inline constexpr std::size_t request_size = 28;
inline constexpr std::size_t simple_reply_size = 16;
inline constexpr std::size_t chunk_header_size = 20;

// Structured reply chunks.
inline constexpr std::uint16_t reply_flag_done = 1 << 0;
inline constexpr std::uint16_t chunk_none = 0;
inline constexpr std::uint16_t chunk_offset_data = 1;
inline constexpr std::uint16_t chunk_offset_hole = 2;
inline constexpr std::uint16_t chunk_block_status = 5;
inline constexpr std::uint16_t chunk_error = 0x8001;

// Errors on the wire (the spec's own numbering, equal to Linux errno).
inline constexpr std::uint32_t err_perm = 1;
inline constexpr std::uint32_t err_io = 5;
inline constexpr std::uint32_t err_nomem = 12;
inline constexpr std::uint32_t err_inval = 22;
inline constexpr std::uint32_t err_nospc = 28;
inline constexpr std::uint32_t err_overflow = 75;
inline constexpr std::uint32_t err_notsup = 95;
inline constexpr std::uint32_t err_shutdown = 108;

// Maps a negative errno from the engine to the closest NBD error.
constexpr std::uint32_t error_from_errno(int negerr) noexcept
{
    switch (-negerr) {
    case 1: return err_perm;          // EPERM
    case 30: return err_perm;         // EROFS
    case 12: return err_nomem;        // ENOMEM
    case 22: return err_inval;        // EINVAL
    case 28: return err_nospc;        // ENOSPC
    case 122: return err_nospc;       // EDQUOT
    case 27: return err_nospc;        // EFBIG
    case 75: return err_overflow;     // EOVERFLOW
    case 95: return err_notsup;       // EOPNOTSUPP / ENOTSUP
    case 108: return err_shutdown;    // ESHUTDOWN
    default: return err_io;
    }
}

// Big-endian loads and stores on unaligned bytes.
template <typename T>
constexpr T byteswap_if_little(T v) noexcept
{
    if constexpr (std::endian::native == std::endian::big || sizeof(T) == 1) {
        return v;
    } else if constexpr (sizeof(T) == 2) {
        return static_cast<T>(__builtin_bswap16(v));
    } else if constexpr (sizeof(T) == 4) {
        return static_cast<T>(__builtin_bswap32(v));
    } else {
        return static_cast<T>(__builtin_bswap64(v));
    }
}

template <typename T>
inline T load_be(const std::byte* p) noexcept
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return byteswap_if_little(v);
}

template <typename T>
inline std::byte* store_be(std::byte* p, T v) noexcept
{
    v = byteswap_if_little(v);
    std::memcpy(p, &v, sizeof v);
    return p + sizeof v;
}

// A transmission-phase request header, decoded.
struct request_header {
    std::uint16_t flags;
    std::uint16_t type;
    std::uint64_t cookie;
    std::uint64_t offset;
    std::uint32_t length;
};

// Decodes request_size bytes; false when the magic is wrong (the stream is
// then unparseable and the connection must end).
inline bool decode_request(const std::byte* p, request_header& out) noexcept
{
    if (load_be<std::uint32_t>(p) != request_magic) {
        return false;
    }
    out.flags = load_be<std::uint16_t>(p + 4);
    out.type = load_be<std::uint16_t>(p + 6);
    out.cookie = load_be<std::uint64_t>(p + 8);
    out.offset = load_be<std::uint64_t>(p + 16);
    out.length = load_be<std::uint32_t>(p + 24);
    return true;
}

// What the reader does with a decoded header before anything else.
// A WRITE longer than max_payload is not a framing error: its payload is
// drained through the receive buffer (no memory of its size is taken) and
// validate_request() answers it with EINVAL, so the client keeps its
// connection. The spec would allow a hard disconnect above 32 MiB; draining
// costs us no more than the client's sending the bytes does.
enum class framing {
    request,     // read its payload, if any, then validate it
    disconnect,  // NBD_CMD_DISC: the client is done
};

constexpr framing frame_request(const request_header& h) noexcept
{
    return h.type == cmd_disc ? framing::disconnect : framing::request;
}

// What validation needs to know about the export and the session.
struct session_view {
    std::uint64_t size;
    std::uint32_t max_payload;
    bool read_only;
    bool structured;    // structured replies negotiated
    bool meta_context;  // at least one metadata context selected
};

// Checks a request against the spec's rules. Returns 0 when it may proceed,
// otherwise the NBD error to reply with. A WRITE's payload must be consumed
// by the caller whatever this says.
constexpr std::uint32_t validate_request(const request_header& h, const session_view& s) noexcept
{
    std::uint16_t allowed = cmd_flag_fua;  // FUA is accepted on any command
    bool writes = false;
    bool ranged = true;
    switch (h.type) {
    case cmd_read:
        if (s.structured) {
            allowed |= cmd_flag_df;
        }
        break;
    case cmd_write:
        writes = true;
        break;
    case cmd_flush:
        ranged = false;
        break;
    case cmd_trim:
        writes = true;
        break;
    case cmd_cache:
        break;
    case cmd_write_zeroes:
        writes = true;
        allowed |= cmd_flag_no_hole | cmd_flag_fast_zero;
        break;
    case cmd_block_status:
        allowed |= cmd_flag_req_one;
        if (!s.meta_context) {
            return err_inval;
        }
        break;
    default:
        return err_inval;
    }
    if (h.flags & ~allowed) {
        return err_inval;
    }
    if (writes && s.read_only) {
        return err_perm;
    }
    if (!ranged) {
        return (h.offset != 0 || h.length != 0) ? err_inval : 0;
    }
    if ((h.type == cmd_read || h.type == cmd_write) && h.length > s.max_payload) {
        return err_inval;
    }
    const bool past_end = h.offset > s.size || h.length > s.size - h.offset;
    if (past_end) {
        return h.type == cmd_write || h.type == cmd_write_zeroes ? err_nospc : err_inval;
    }
    return 0;
}

}  // namespace rct::nbd
