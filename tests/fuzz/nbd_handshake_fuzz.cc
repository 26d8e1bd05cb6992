// The NBD handshake as a client sends it after the server's greeting: the
// client flags, then options (header and data), each through the parser
// handshake.cc uses for it. Checks that an accepted option accounts for
// exactly the bytes it was given, and what META_CONTEXT queries select.
#include "check.hh"

#include "nbd/options.hh"
#include "nbd/wire.hh"

#include <algorithm>

using namespace rct::nbd;

namespace {

void check_info(std::span<const std::byte> data)
{
    if (const auto r = parse_info_request(data)) {
        RCT_FUZZ_CHECK(data.size() >= 6 + r->name.size());
        const std::size_t types = load_be<std::uint16_t>(data.data() + 4 + r->name.size());
        RCT_FUZZ_CHECK(data.size() == 6 + r->name.size() + 2 * types);
        RCT_FUZZ_CHECK(types >= std::size_t{r->want_name} + std::size_t{r->want_description});
    }
}

rct::checkpoint_info checkpoint(std::string name, std::uint64_t epoch)
{
    rct::checkpoint_info c;
    c.name = std::move(name);
    c.epoch = epoch;
    c.generation = 3;
    return c;
}

// The contexts a META_CONTEXT option may select among.
const std::vector<rct::checkpoint_info> checkpoints = {checkpoint("c1", 4), checkpoint("mon", 7),
                                                       checkpoint("mon2", 9)};

// Each context once, under its own id; SET selects only what a query names.
void check_matched(const std::vector<meta_context>& matched, const std::vector<std::string>& queries, bool list)
{
    for (std::size_t i = 0; i < matched.size(); ++i) {
        const meta_context& m = matched[i];
        for (std::size_t k = 0; k < i; ++k) {
            RCT_FUZZ_CHECK(matched[k].id != m.id);
        }
        if (m.kind == meta_kind::base_allocation) {
            RCT_FUZZ_CHECK(m.id == 1 && m.name == "base:allocation");
        } else {
            RCT_FUZZ_CHECK(m.id >= 2 && m.id - 2 < checkpoints.size());
            const auto& cp = checkpoints[m.id - 2];
            RCT_FUZZ_CHECK(m.epoch == cp.epoch && m.generation == cp.generation);
            RCT_FUZZ_CHECK(m.name == "qemu:dirty-bitmap:" + cp.name);
        }
        RCT_FUZZ_CHECK(list || std::find(queries.begin(), queries.end(), m.name) != queries.end());
    }
}

void check_meta(std::span<const std::byte> data, bool list)
{
    if (const auto r = parse_meta_context_request(data)) {
        std::size_t used = 4 + r->name.size() + 4;
        for (const auto& q : r->queries) {
            used += 4 + q.size();
        }
        RCT_FUZZ_CHECK(used == data.size());
        RCT_FUZZ_CHECK(load_be<std::uint32_t>(data.data() + 4 + r->name.size()) == r->queries.size());
        const auto matched = match_contexts(checkpoints, r->queries, list);
        // Only too many queries are refused here: three checkpoints never
        // make too many contexts.
        RCT_FUZZ_CHECK(!matched == (r->queries.size() > max_meta_queries));
        if (matched) {
            check_matched(*matched, r->queries, list);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    auto in = rct::fuzz::bytes(data, size);
    if (in.size() < 4 || !valid_client_flags(load_be<std::uint32_t>(in.data()))) {
        return 0;
    }
    in = in.subspan(4);
    while (in.size() >= option_header_size) {
        const auto h = decode_option_header(in.data());
        if (!h) {
            return 0;
        }
        in = in.subspan(option_header_size);
        // A short last option stands for one whose data never arrives.
        const auto option = in.first(std::min<std::size_t>(h->len, in.size()));
        in = in.subspan(option.size());
        switch (h->opt) {
        case opt_info:
        case opt_go: check_info(option); break;
        case opt_list_meta_context: check_meta(option, true); break;
        case opt_set_meta_context: check_meta(option, false); break;
        default: break;
        }
    }
    return 0;
}
