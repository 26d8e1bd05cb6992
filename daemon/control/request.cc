#include "control/request.hh"

#include <rct/control_api.hh>
#include <rct/size.hh>

#include <fmt/format.h>
#include <microhttpd.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>
#include <vector>

namespace rct::daemon::control {

namespace error_code = rct::control_api::error_code;
namespace {

using control_api::default_changes_limit;
using control_api::max_changes_limit;

std::vector<std::string_view> split_path(std::string_view url)
{
    std::vector<std::string_view> parts;
    while (!url.empty()) {
        const auto slash = url.find('/');
        const auto part = url.substr(0, slash);
        if (!part.empty()) {
            parts.push_back(part);
        }
        if (slash == std::string_view::npos) {
            break;
        }
        url.remove_prefix(slash + 1);
    }
    return parts;
}

// The control API's paths: each with the endpoint its methods reach (GET
// also answers HEAD). "*" stands for a name: the disk (third segment) and
// the checkpoint or snapshot (fifth). docs/control-api.md lists them.
struct path_route {
    std::vector<std::string_view> segments;
    std::optional<endpoint> get, post, del;
};

const std::vector<path_route>& routes()
{
    using e = endpoint;
    static const std::vector<path_route> table{
        {{"metrics"}, e::metrics, {}, {}},
        {{"v1", "version"}, e::version, {}, {}},
        {{"v1", "upgrade"}, {}, e::upgrade, {}},
        {{"v1", "groups", "snapshots"}, {}, e::group_snapshot, {}},
        {{"v1", "groups", "checkpoints"}, {}, e::group_checkpoint, {}},
        {{"v1", "disks"}, e::list_disks, e::create_disk, {}},
        {{"v1", "disks", "*"}, e::get_disk, {}, e::delete_disk},
        {{"v1", "disks", "*", "resize"}, {}, e::resize_disk, {}},
        {{"v1", "disks", "*", "checkpoints"}, e::list_checkpoints, e::create_checkpoint, {}},
        {{"v1", "disks", "*", "checkpoints", "*"}, {}, {}, e::delete_checkpoint},
        {{"v1", "disks", "*", "changes"}, e::changes, {}, {}},
        {{"v1", "disks", "*", "diff"}, e::diff, {}, {}},
        {{"v1", "disks", "*", "snapshots"}, e::list_snapshots, e::create_snapshot, {}},
        {{"v1", "disks", "*", "snapshots", "*"}, {}, {}, e::delete_snapshot},
        {{"v1", "disks", "*", "snapshots", "*", "clone"}, {}, e::clone_snapshot, {}},
        {{"v1", "disks", "*", "ublk"}, {}, e::attach_ublk, e::detach_ublk},
        {{"v1", "disks", "*", "restore"}, {}, e::restore, {}},
        {{"v1", "jobs"}, e::list_jobs, {}, {}},
        {{"v1", "jobs", "*"}, e::get_job, {}, e::delete_job},
    };
    return table;
}

bool matches(const path_route& r, const std::vector<std::string_view>& parts)
{
    if (r.segments.size() != parts.size()) {
        return false;
    }
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (r.segments[i] != "*" && r.segments[i] != parts[i]) {
            return false;
        }
    }
    return true;
}

// The Allow header of a path: static text, as libmicrohttpd keeps a pointer.
const char* allowed(const path_route& r)
{
    static const char* const text[] = {"", "GET, HEAD", "POST", "GET, HEAD, POST", "DELETE", "GET, HEAD, DELETE",
                                       "POST, DELETE", "GET, HEAD, POST, DELETE"};
    return text[(r.get ? 1 : 0) | (r.post ? 2 : 0) | (r.del ? 4 : 0)];
}

std::string string_field(const json& j, const char* key)
{
    auto it = j.find(key);
    if (it == j.end()) {
        throw bad_request(fmt::format("field '{}' is required", key));
    }
    if (!it->is_string()) {
        throw bad_request(fmt::format("field '{}' must be a string", key));
    }
    return it->get<std::string>();
}

bool bool_field(const json& j, const char* key)
{
    auto it = j.find(key);
    if (it == j.end()) {
        return false;
    }
    if (!it->is_boolean()) {
        throw bad_request(fmt::format("field '{}' must be true or false", key));
    }
    return it->get<bool>();
}

// Bytes as an integer, or a string such as "10G" (see rct/size.hh).
// `example` is a typical value, for the message when the type is wrong.
std::uint64_t bytes_field(const json& j, const char* key, const char* example)
{
    auto it = j.find(key);
    if (it == j.end()) {
        throw bad_request(fmt::format("field '{}' is required", key));
    }
    if (it->is_number_unsigned()) {
        return it->get<std::uint64_t>();
    }
    if (it->is_string()) {
        const auto s = it->get<std::string>();
        if (auto v = parse_size(s)) {
            return *v;
        }
        throw invalid_argument(fmt::format("invalid {} '{}'", key, s));
    }
    if (it->is_number()) {
        throw invalid_argument(
            fmt::format("invalid {} {}: must be a whole, non-negative number of bytes", key, it->dump()));
    }
    throw bad_request(fmt::format("field '{}' must be an integer or a string like \"{}\"", key, example));
}

std::uint64_t size_field(const json& j) { return bytes_field(j, "size", "10G"); }

// A decimal query parameter in [min, max]; fallback when absent.
std::uint64_t parse_number(const char* key, const std::optional<std::string>& v, std::uint64_t fallback,
                           std::uint64_t min, std::uint64_t max)
{
    if (!v) {
        return fallback;
    }
    std::uint64_t n = 0;
    const char* end = v->data() + v->size();
    const auto [ptr, ec] = std::from_chars(v->data(), end, n);
    if (v->empty() || ec != std::errc{} || ptr != end || n < min || n > max) {
        throw bad_request(
            fmt::format("query parameter '{}' must be an integer from {} to {}, not '{}'", key, min, max, *v));
    }
    return n;
}

// A checkpoint reference (name or token) given as a query parameter.
std::optional<std::string> checkpoint_ref(const query_lookup& query, const char* key)
{
    auto v = query(key);
    if (v && v->empty()) {
        throw bad_request(fmt::format("query parameter '{}' must name a checkpoint or hold a token", key));
    }
    return v;
}

std::optional<changes_cursor> parse_cursor(std::string_view text)
{
    changes_cursor c;
    std::uint64_t gen = 0;
    std::uint64_t* fields[] = {&c.offset, &gen, &c.since, &c.until};
    const char* p = text.data();
    const char* end = text.data() + text.size();
    for (std::size_t i = 0; i < 4; ++i) {
        if (i > 0 && (p == end || *p++ != '.')) {
            return std::nullopt;
        }
        const auto r = std::from_chars(p, end, *fields[i]);
        if (r.ec != std::errc{} || r.ptr == p) {
            return std::nullopt;
        }
        p = r.ptr;
    }
    if (p != end || gen > std::numeric_limits<std::uint32_t>::max()) {
        return std::nullopt;
    }
    c.generation = static_cast<std::uint32_t>(gen);
    return c;
}

// The paging parameters every extent listing takes.
void parse_page(const query_lookup& query, changes_args& out)
{
    if (const auto text = query("cursor"); text && *text != "0") {
        const auto c = parse_cursor(*text);
        if (!c) {
            throw bad_request("'cursor' must be the next_cursor of an earlier page");
        }
        out.cursor = *c;
    }
    out.limit = parse_number("limit", query("limit"), default_changes_limit, 1, max_changes_limit);
}

}  // namespace

std::string error_body(const api_error& e)
{
    // Messages quote what the client sent (a URL, a query value), which need
    // not be UTF-8: such bytes become U+FFFD rather than failing the reply.
    const json j{{"error", {{"code", e.code}, {"message", e.message}}}};
    return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

api_error bad_request(std::string message) { return {MHD_HTTP_BAD_REQUEST, error_code::bad_request, std::move(message)}; }

api_error invalid_argument(std::string message)
{
    return {MHD_HTTP_BAD_REQUEST, error_code::invalid_argument, std::move(message)};
}

route resolve(std::string_view method, std::string_view url)
{
    const auto parts = split_path(url);
    const auto& table = routes();
    const auto r = std::find_if(table.begin(), table.end(), [&](const path_route& p) { return matches(p, parts); });
    if (r == table.end()) {
        throw api_error{MHD_HTTP_NOT_FOUND, error_code::not_found, fmt::format("no such endpoint: {}", url)};
    }
    const std::optional<endpoint> what = method == "GET" || method == "HEAD" ? r->get
                                         : method == "POST"                  ? r->post
                                         : method == "DELETE"                ? r->del
                                                                             : std::nullopt;
    if (!what) {
        const char* allow = allowed(*r);
        throw api_error{MHD_HTTP_METHOD_NOT_ALLOWED, error_code::method_not_allowed,
                        fmt::format("method {} is not allowed here (allowed: {})", method, allow), allow};
    }
    if (parts[1] == "jobs") {
        return {*what, std::string(), parts.size() >= 3 ? std::string(parts[2]) : std::string()};
    }
    return {*what, parts.size() >= 3 && parts[1] == "disks" ? std::string(parts[2]) : std::string(),
            parts.size() >= 5 ? std::string(parts[4]) : std::string()};
}

// A field this server does not know is refused rather than silently
// ignored, since a client relying on it would be misled. An empty body is
// an empty object, so that requests without parameters need none.
json parse_body(const std::string& body, std::initializer_list<std::string_view> known)
{
    json j = body.empty() ? json::object() : json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        throw bad_request("request body is not valid JSON");
    }
    if (!j.is_object()) {
        throw bad_request("request body must be a JSON object");
    }
    for (const auto& [key, value] : j.items()) {
        if (std::find(known.begin(), known.end(), key) == known.end()) {
            throw bad_request(fmt::format("unknown field '{}'", key));
        }
    }
    return j;
}

bool read_only(endpoint e) noexcept
{
    switch (e) {
    case endpoint::version:
    case endpoint::metrics:
    case endpoint::list_disks:
    case endpoint::get_disk:
    case endpoint::list_checkpoints:
    case endpoint::changes:
    case endpoint::diff:
    case endpoint::list_snapshots:
    case endpoint::list_jobs:
    case endpoint::get_job: return true;
    default: return false;
    }
}

create_args parse_create(const std::string& body)
{
    const json j = parse_body(body, {"name", "size", "granularity", "import_from", "import_fd", "move"});
    create_args a;
    a.name = string_field(j, "name");
    const bool has_size = j.contains("size");
    if (has_size == (j.contains("import_from") || j.contains("import_fd"))) {
        throw bad_request("give exactly one of 'size' (a new, empty disk) or 'import_fd'/'import_from' (an image "
                          "file)");
    }
    if (has_size) {
        if (j.contains("move")) {
            throw bad_request("'move' only goes with an import");
        }
        if (j.contains("granularity")) {
            const std::uint64_t g = bytes_field(j, "granularity", "64K");
            // 0 is the registry's "default", not a granularity of its own.
            if (g == 0 || g > std::numeric_limits<std::uint32_t>::max()) {
                throw invalid_argument(fmt::format("granularity {} is not a power of two between 4K and 1M", g));
            }
            a.granularity = static_cast<std::uint32_t>(g);
        }
        a.size = size_field(j);
        return a;
    }
    if (j.contains("granularity")) {
        throw bad_request("'granularity' only goes with 'size'");
    }
    a.move = bool_field(j, "move");
    if (j.contains("import_fd")) {
        a.import_fd = string_field(j, "import_fd");
    }
    if (!j.contains("import_from")) {
        if (a.move) {
            throw bad_request("'move' needs 'import_from', the path of the file passed as 'import_fd'");
        }
        return a;
    }
    a.import_from = string_field(j, "import_from");
    if (!a.import_from.is_absolute()) {
        throw invalid_argument(
            fmt::format("'import_from' must be an absolute path, not '{}'", a.import_from.string()));
    }
    return a;
}

resize_args parse_resize(const std::string& body)
{
    const json j = parse_body(body, {"size", "force"});
    const std::uint64_t size = size_field(j);
    return {size, bool_field(j, "force")};
}

std::optional<std::string> parse_new_name(const std::string& body)
{
    const json j = parse_body(body, {"name"});
    if (!j.contains("name")) {
        return std::nullopt;
    }
    return string_field(j, "name");
}

group_args parse_group(const std::string& body)
{
    const json j = parse_body(body, {"name", "disks"});
    group_args a;
    a.name = string_field(j, "name");
    const auto it = j.find("disks");
    if (it == j.end() || !it->is_array()) {
        throw bad_request("field 'disks' (an array of disk names) is required");
    }
    for (const auto& d : *it) {
        if (!d.is_string()) {
            throw bad_request("field 'disks' must hold disk names (strings)");
        }
        a.disks.push_back(d.get<std::string>());
    }
    return a;
}

std::string parse_clone(const std::string& body)
{
    const json j = parse_body(body, {"name"});
    if (!j.contains("name")) {
        throw bad_request("field 'name' (the new disk's name) is required");
    }
    return string_field(j, "name");
}

restore_args parse_restore(const std::string& body)
{
    const json j = parse_body(body, {"from", "force"});
    if (!j.contains("from")) {
        throw bad_request("field 'from' (the snapshot to restore) is required");
    }
    std::string from = string_field(j, "from");
    return {std::move(from), bool_field(j, "force")};
}

upgrade_args parse_upgrade(const std::string& body)
{
    const json j = parse_body(body, {"binary", "ready_timeout_ms"});
    upgrade_args a;
    if (j.contains("binary")) {
        a.binary = string_field(j, "binary");
        if (a.binary.empty() || a.binary.front() != '/') {
            throw invalid_argument("binary must be an absolute path");
        }
    }
    if (j.contains("ready_timeout_ms")) {
        const json& t = j["ready_timeout_ms"];
        if (!t.is_number_unsigned() || t.get<std::uint64_t>() < 100 || t.get<std::uint64_t>() > 600000) {
            throw invalid_argument("ready_timeout_ms must be a whole number of milliseconds from 100 to 600000");
        }
        a.ready_timeout_ms = t.get<std::uint32_t>();
    }
    return a;
}

// ?force, ?force=true, ?force=1 mean yes; absent, false or 0 mean no.
bool parse_flag(const char* key, const std::optional<std::string>& v)
{
    if (!v) {
        return false;
    }
    if (v->empty() || *v == "true" || *v == "1") {
        return true;
    }
    if (*v == "false" || *v == "0") {
        return false;
    }
    throw bad_request(fmt::format("query parameter '{}' must be true or false", key));
}

changes_args parse_changes(const query_lookup& query)
{
    auto since = checkpoint_ref(query, "since");
    if (!since) {
        throw bad_request("query parameter 'since' is required (a checkpoint name or token)");
    }
    changes_args a{std::move(*since), checkpoint_ref(query, "until"), {}, 0};
    parse_page(query, a);
    return a;
}

// diff FROM TO: snapshots, checkpoints or tokens; TO may be "live".
changes_args parse_diff(const query_lookup& query)
{
    auto from = checkpoint_ref(query, "from");
    auto to = checkpoint_ref(query, "to");
    if (!from || !to) {
        throw bad_request("query parameters 'from' and 'to' are required (a snapshot, checkpoint or token; "
                          "'to' may be 'live')");
    }
    if (*from == "live") {
        throw bad_request("'from' must be a snapshot or checkpoint: 'live' has no changes after it");
    }
    changes_args a{std::move(*from), *to == "live" ? std::nullopt : std::move(to), {}, 0};
    parse_page(query, a);
    return a;
}

}  // namespace rct::daemon::control
