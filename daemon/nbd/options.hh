// Handshake option parsing over byte buffers, and the matching of metadata
// context queries, apart from the socket and the registry so that they can
// be fuzzed and tested alone (handshake.cc does the I/O). Malformed input
// is a value (nullopt), never an exception or a read past the end.
#pragma once

#include <rct/tracker.hh>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace rct::nbd {

inline constexpr std::size_t option_header_size = 16;

// The client's flags after the greeting; false when it sets a bit we do
// not know (the handshake must then end).
bool valid_client_flags(std::uint32_t flags) noexcept;

struct option_header {
    std::uint32_t opt;
    std::uint32_t len;  // bytes of option data that follow
};

// Decodes option_header_size bytes; nullopt when the magic is wrong.
std::optional<option_header> decode_option_header(const std::byte* p) noexcept;

// NBD_OPT_INFO / NBD_OPT_GO data: the export and the information asked for.
struct info_request {
    std::string name;
    bool want_name = false;
    bool want_description = false;
};
std::optional<info_request> parse_info_request(std::span<const std::byte> data);

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data.
struct meta_context_request {
    std::string name;
    std::vector<std::string> queries;
};
std::optional<meta_context_request> parse_meta_context_request(std::span<const std::byte> data);

// Metadata contexts: base:allocation, and qemu:dirty-bitmap:CP for each
// checkpoint CP of a tracked disk (bit 0 = changed since CP).
enum class meta_kind : std::uint8_t { base_allocation, dirty_bitmap };
struct meta_context {
    std::uint32_t id;
    meta_kind kind;
    std::uint64_t epoch;       // dirty_bitmap: the checkpoint's epoch
    std::uint32_t generation;  // ... in this tracking generation (answers stop if it changes)
    std::string name;
};

// Bounds on one LIST_META_CONTEXT / SET_META_CONTEXT option, so that a
// hostile client cannot make one option, or the BLOCK_STATUS replies a SET
// leads to, cost a worker more than a legitimate client would.
// A SET selects at most one context per query (it takes no wildcards), so
// this caps the contexts a session carries, and each BLOCK_STATUS's work, too.
inline constexpr std::size_t max_meta_queries = 256;  // queries in one option

// The contexts that queries select, each once, among base:allocation and
// the bitmaps of `checkpoints` (those the export offers). LIST (`list`)
// also takes namespace wildcards, and no query as every context. nullopt
// (NBD_REP_ERR_TOO_BIG) above max_meta_queries queries. Costs
// O(queries + checkpoints).
std::optional<std::vector<meta_context>> match_contexts(const std::vector<checkpoint_info>& checkpoints,
                                                        const std::vector<std::string>& queries, bool list);

}  // namespace rct::nbd
