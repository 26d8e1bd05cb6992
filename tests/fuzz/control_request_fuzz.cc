// A control API request as api_server hands it to the parsers: the input is
// "METHOD\nURL[?QUERY]\nBODY". The route is resolved and the endpoint's
// arguments parsed as its handler does. A refusal must be an api_error with
// a client-error status that renders as a JSON reply; any other exception
// escaping is a bug (the server would answer 500).
#include "check.hh"

#include "control/request.hh"

#include <algorithm>
#include <map>

using namespace rct::daemon::control;

namespace {

// "a=1&b&c=" as key -> value ("b" maps to the empty string, as in libmicrohttpd).
std::map<std::string, std::string, std::less<>> split_query(std::string_view q)
{
    std::map<std::string, std::string, std::less<>> out;
    while (!q.empty()) {
        const auto item = q.substr(0, q.find('&'));
        const auto eq = item.find('=');
        out.emplace(item.substr(0, eq), eq == std::string_view::npos ? "" : item.substr(eq + 1));
        q.remove_prefix(std::min(q.size(), item.size() + 1));
    }
    return out;
}

void parse_arguments(const route& r, const std::string& body, const query_lookup& query)
{
    switch (r.what) {
    case endpoint::create_disk: {
        const create_args a = parse_create(body);
        // Exactly one source: a size, or an import (a passed fd's ticket,
        // and/or an absolute path).
        const bool import = !a.import_fd.empty() || a.import_from.is_absolute();
        RCT_FUZZ_CHECK(a.size.has_value() != import);
        RCT_FUZZ_CHECK(a.import_from.empty() || a.import_from.is_absolute());
        break;
    }
    case endpoint::resize_disk: parse_resize(body); break;
    case endpoint::create_checkpoint:
    case endpoint::create_snapshot: parse_new_name(body); break;
    case endpoint::clone_snapshot: parse_clone(body); break;
    case endpoint::restore: parse_restore(body); break;
    case endpoint::attach_ublk: parse_body(body, {}); break;
    case endpoint::changes: parse_changes(query); break;
    case endpoint::diff: parse_diff(query); break;
    case endpoint::delete_disk:
    case endpoint::detach_ublk: parse_flag("force", query("force")); break;
    default: break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    std::string_view in = rct::fuzz::text(data, size);
    const auto method = in.substr(0, in.find('\n'));
    in.remove_prefix(std::min(in.size(), method.size() + 1));
    const auto target = in.substr(0, in.find('\n'));
    in.remove_prefix(std::min(in.size(), target.size() + 1));
    const std::string body(in);
    const auto qmark = target.find('?');
    const auto url = target.substr(0, qmark);
    const auto params = split_query(qmark == std::string_view::npos ? "" : target.substr(qmark + 1));
    const query_lookup query = [&](const char* key) -> std::optional<std::string> {
        const auto it = params.find(std::string_view(key));
        return it == params.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    try {
        const route r = resolve(method, url);
        parse_arguments(r, body, query);
    } catch (const api_error& e) {
        RCT_FUZZ_CHECK(e.status >= 400 && e.status < 500 && !e.code.empty());
        RCT_FUZZ_CHECK((e.status == 405) == (e.allow != nullptr));
        RCT_FUZZ_CHECK(!error_body(e).empty());
    }
    return 0;
}
