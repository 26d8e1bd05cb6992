// control_client: the HTTP-over-Unix-socket client of rctd's control API
// (docs/control-api.md), shared by rctctl and rct-backup.
//
// One client owns one libcurl easy handle and is used by one thread. Every
// failure, local or reported by rctd, is thrown as a `failure` carrying the
// exit status the tools document (the table below) and, when rctd sent one,
// its error document, so that --json can print it.
#pragma once

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace rct::tools {

using json = nlohmann::ordered_json;

// Exit statuses common to the tools; a tool may add its own above these.
enum exit_status : int {
    exit_ok = 0,
    exit_failure = 1,
    exit_usage = 2,
    exit_not_found = 3,
    exit_conflict = 4,
    exit_unreachable = 5,
    exit_full_backup = 6,
    exit_forbidden = 7,  // rctd refused the caller (docs/security.md)
    // 8 is rct-backup's (a backup failed verification).
    exit_upgrade_failed = 9,  // the new rctd failed; the old one serves on (docs/upgrade.md)
    exit_interrupted = 130,   // Ctrl-C: a job followed was cancelled (128 + SIGINT)
};

// Ends the command: message to stderr, and with --json the server's error
// document (if any) to stdout.
struct failure {
    int status;
    std::string message;
    std::string body;
    std::string code;  // rctd's error code ("full_backup_required", ...), if it sent one
};

// rctd's error object ({"code": ..., "message": ...}) as the failure it
// ends a command with: the exit status its code maps to (the table above).
failure failure_from(const json& error, const std::string& body);

struct response {
    long status = 0;
    std::string body;
};

class client {
public:
    explicit client(std::string socket);
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    // Performs one request; HTTP errors come back as failures carrying the
    // server's message.
    response call(const char* method, const std::string& path, const std::optional<json>& body = {});

    // call() and parse_reply() in one.
    json call_json(const char* method, const std::string& path, const std::optional<json>& body = {});

    // GET /metrics: the Prometheus text (docs/metrics.md), outside /v1.
    std::string metrics();

    const std::string& socket() const { return socket_; }

private:
    response request(const char* method, const std::string& url_path, const std::optional<json>& body);

    const std::string socket_;
    CURL* const curl_;
};

// A disk or checkpoint name as a URL path segment or query value. Escaping
// '.' too keeps curl from folding names like ".." into the path.
std::string segment(const std::string& name);

json parse_reply(const response& r);

// The control socket: `explicit_socket` if set; else STATE-DIR/control.sock
// when --state-dir was given; else $RCTD_CONTROL_SOCKET; else
// STATE-DIR (default) /control.sock.
std::string resolve_socket(const std::string& explicit_socket, const std::string& state_dir, bool state_dir_given);

// Opens the file at path as the calling user, so that rctd reads only what
// the caller may (a symbolic link as the last component is refused: say the
// file), and hands the open file to rctd's import fd socket (the control
// socket + ".fd"; docs/control-api.md). Returns the one-time ticket.
std::string pass_file(const std::string& control_socket, const std::string& path);

}  // namespace rct::tools
