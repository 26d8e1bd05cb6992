// The control API's request parsing, apart from libmicrohttpd and the
// registry so that it can be fuzzed and tested alone: which endpoint a
// method and URL name, and the arguments each endpoint takes from its JSON
// body and query parameters. Every refusal is an api_error (thrown), which
// api_server turns into the JSON error reply; anything else escaping is a bug.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace rct::daemon::control {

using json = nlohmann::ordered_json;

// A failure to report to the client.
struct api_error {
    unsigned status;
    std::string code;
    std::string message;
    const char* allow = nullptr;  // the Allow header of a 405
};

// The JSON body of an error reply.
std::string error_body(const api_error& e);

api_error bad_request(std::string message);
api_error invalid_argument(std::string message);

enum class endpoint {
    version,
    metrics,
    list_disks,
    create_disk,
    get_disk,
    delete_disk,
    resize_disk,
    list_checkpoints,
    create_checkpoint,
    delete_checkpoint,
    changes,
    diff,
    list_snapshots,
    create_snapshot,
    delete_snapshot,
    clone_snapshot,
    attach_ublk,
    detach_ublk,
    restore,
    upgrade,
    group_snapshot,
    group_checkpoint,
    list_jobs,
    get_job,
    delete_job,
};

// Whether an endpoint only reads (list, query, changes): what --api-readers
// may call.
bool read_only(endpoint e) noexcept;

struct route {
    endpoint what;
    std::string disk;  // the disk named in the path, if any
    std::string item;  // the checkpoint or snapshot named after it, or the job id
};

// Throws not_found for an unknown path, method_not_allowed for a known one.
route resolve(std::string_view method, std::string_view url);

// The body as a JSON object whose keys are all among `known`.
json parse_body(const std::string& body, std::initializer_list<std::string_view> known);

struct create_args {
    std::string name;
    std::optional<std::uint64_t> size;  // a new, empty disk, or else
    std::filesystem::path import_from;  // an image to adopt (its path), and/or
    std::string import_fd;              // the ticket of a file passed to the fd socket (fd_inbox)
    std::uint32_t granularity = 0;      // 0: the registry's default
    bool move = false;
};
create_args parse_create(const std::string& body);

struct resize_args {
    std::uint64_t size;
    bool force;
};
resize_args parse_resize(const std::string& body);

// {"name": ...} of a new checkpoint or snapshot, which may be left out.
std::optional<std::string> parse_new_name(const std::string& body);
// {"name": ...} of a clone's new disk.
std::string parse_clone(const std::string& body);

struct restore_args {
    std::string from;
    bool force;
};
restore_args parse_restore(const std::string& body);

// POST /v1/groups/{snapshots,checkpoints}: {"name": ..., "disks": [...]}.
struct group_args {
    std::string name;
    std::vector<std::string> disks;
};
group_args parse_group(const std::string& body);

// POST /v1/upgrade: the binary to start (empty: the one rctd was started
// from) and how long it has to report ready.
struct upgrade_args {
    std::string binary;
    std::uint32_t ready_timeout_ms = 10000;
};
upgrade_args parse_upgrade(const std::string& body);

// A query parameter's value, URL-decoded; nullopt when absent, empty for a
// bare "?key".
using query_lookup = std::function<std::optional<std::string>(const char* key)>;

bool parse_flag(const char* key, const std::optional<std::string>& value);

// A changes cursor says where a listing goes on and which history it lists:
// "OFFSET.GENERATION.SINCE_EPOCH.UNTIL_EPOCH" (0 = live). A listing that
// spans a tracking reset, or the deletion (and re-creation) of a checkpoint
// it names, then fails instead of mixing two histories.
struct changes_cursor {
    std::uint64_t offset = 0;
    std::uint32_t generation = 0;
    std::uint64_t since = 0;
    std::uint64_t until = 0;
};


struct changes_args {
    std::string since;
    std::optional<std::string> until;  // nullopt: up to the live disk
    changes_cursor cursor;             // all 0 on the first page
    std::uint64_t limit;
};
changes_args parse_changes(const query_lookup& query);
changes_args parse_diff(const query_lookup& query);

}  // namespace rct::daemon::control
