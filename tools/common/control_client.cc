#include "control_client.hh"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>
#include <rct/control_api.hh>

namespace rct::tools {

namespace error_code = rct::control_api::error_code;

namespace {

std::size_t collect(char* data, std::size_t size, std::size_t n, void* out)
{
    static_cast<std::string*>(out)->append(data, size * n);
    return size * n;
}

// Why a connection failed, in the words of someone deciding what to do next.
std::string unreachable_message(const std::string& socket, long os_errno, const char* curl_message)
{
    struct stat st {};
    if (::stat(socket.c_str(), &st) != 0 && errno == ENOENT) {
        return "cannot reach rctd: control socket " + socket +
               " does not exist; rctd is not running (or uses another --state-dir or --socket)";
    }
    if (os_errno == ECONNREFUSED) {
        return "cannot reach rctd: nobody is listening on " + socket + "; rctd is not running (stale socket)";
    }
    if (os_errno == EACCES || os_errno == EPERM) {
        return "cannot reach rctd at " + socket +
               ": permission denied; rctd may be running, but only root and the socket's group may use it";
    }
    return "cannot reach rctd at " + socket + ": " + curl_message + "; is rctd running?";
}

failure server_failure(const response& r)
{
    const json j = json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j.contains("error") || !j["error"].is_object()) {
        return {exit_failure, "rctd answered HTTP " + std::to_string(r.status), r.body, {}};
    }
    json e = j["error"];
    if (!e.contains("message")) {
        e["message"] = "HTTP " + std::to_string(r.status);
    }
    return failure_from(e, r.body);
}

}  // namespace

failure failure_from(const json& e, const std::string& body)
{
    const std::string code = e.is_object() ? e.value("code", "") : "";
    const std::string message = e.is_object() ? e.value("message", "failed") : "failed";
    int status = exit_failure;
    if (code == error_code::not_found) {
        status = exit_not_found;
    } else if (code == error_code::exists || code == error_code::busy || code == error_code::tracking_disabled || code == error_code::is_snapshot) {
        status = exit_conflict;
    } else if (code == error_code::full_backup_required) {
        status = exit_full_backup;
    } else if (code == error_code::invalid_argument) {
        status = exit_usage;
    } else if (code == error_code::forbidden) {
        status = exit_forbidden;
    } else if (code == error_code::upgrade_failed) {
        status = exit_upgrade_failed;
    }
    return {status, message, body, code};
}

client::client(std::string socket) : socket_(std::move(socket)), curl_(curl_easy_init())
{
    if (curl_ == nullptr) {
        throw failure{exit_failure, "cannot initialise libcurl", {}, {}};
    }
}

client::~client() { curl_easy_cleanup(curl_); }

response client::call(const char* method, const std::string& path, const std::optional<json>& body)
{
    return request(method, "/v1" + path, body);
}

std::string client::metrics() { return request("GET", "/metrics", std::nullopt).body; }

response client::request(const char* method, const std::string& url_path, const std::optional<json>& body)
{
    response r;
    std::string payload;
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Accept: application/json");
    if (body) {
        payload = body->dump();
        headers = curl_slist_append(headers, "Content-Type: application/json");
    }
    const std::string url = "http://localhost" + url_path;
    char error[CURL_ERROR_SIZE] = "";

    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_UNIX_SOCKET_PATH, socket_.c_str());
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl_, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, payload.c_str());
        curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
    }
    const CURLcode rc = curl_easy_perform(curl_);
    curl_slist_free_all(headers);

    if (rc != CURLE_OK) {
        const char* text = error[0] != '\0' ? error : curl_easy_strerror(rc);
        long os_errno = 0;
        curl_easy_getinfo(curl_, CURLINFO_OS_ERRNO, &os_errno);
        if (rc == CURLE_COULDNT_CONNECT) {
            throw failure{exit_unreachable, unreachable_message(socket_, os_errno, text), {}, {}};
        }
        throw failure{exit_failure, std::string("request to rctd failed: ") + text, {}, {}};
    }
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    if (r.status < 200 || r.status > 299) {
        throw server_failure(r);
    }
    return r;
}

json client::call_json(const char* method, const std::string& path, const std::optional<json>& body)
{
    return parse_reply(call(method, path, body));
}

std::string segment(const std::string& name)
{
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char ch : name) {
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
            ch == '-') {
            out += static_cast<char>(ch);
        } else {
            out += '%';
            out += hex[ch >> 4];
            out += hex[ch & 15];
        }
    }
    return out;
}

json parse_reply(const response& r)
{
    json j = json::parse(r.body, nullptr, false);
    if (j.is_discarded()) {
        throw failure{exit_failure, "rctd sent a reply that is not JSON", r.body, {}};
    }
    return j;
}

std::string resolve_socket(const std::string& explicit_socket, const std::string& state_dir, bool state_dir_given)
{
    if (!explicit_socket.empty()) {
        return explicit_socket;
    }
    // Command line over environment: an explicit --state-dir beats
    // $RCTD_CONTROL_SOCKET.
    const char* env = std::getenv("RCTD_CONTROL_SOCKET");
    if (env != nullptr && *env != '\0' && !state_dir_given) {
        return env;
    }
    return (std::filesystem::path(state_dir) / "control.sock").string();
}

std::string pass_file(const std::string& control_socket, const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        const int status = err == ENOENT ? exit_not_found : err == ELOOP ? exit_usage : exit_failure;
        const std::string why = err == ELOOP ? "it is a symbolic link; give the file itself" : std::strerror(err);
        throw failure{status, "cannot open " + path + ": " + why, {}, {}};
    }
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } file{fd};
    const std::string inbox = control_socket + ".fd";
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (inbox.size() >= sizeof addr.sun_path) {
        throw failure{exit_usage, "control socket path too long: " + control_socket, {}, {}};
    }
    std::memcpy(addr.sun_path, inbox.c_str(), inbox.size() + 1);
    const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct closer conn{sock};
    if (sock < 0 || ::connect(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        throw failure{exit_unreachable, unreachable_message(inbox, errno, std::strerror(errno)), {}, {}};
    }
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) != 1) {
        throw failure{exit_failure, std::string("cannot pass the file to rctd: ") + std::strerror(errno), {}, {}};
    }
    std::string line;
    char buf[256];
    for (ssize_t n; (n = ::recv(sock, buf, sizeof buf, 0)) > 0 && line.size() < 4096;) {
        line.append(buf, static_cast<std::size_t>(n));
    }
    while (!line.empty() && line.back() == '\n') {
        line.pop_back();
    }
    if (line.rfind("OK ", 0) != 0) {
        throw failure{exit_failure, "rctd refused the file: " + (line.rfind("ERR ", 0) == 0 ? line.substr(4) : line),
                      {}, {}};
    }
    return line.substr(3);
}

}  // namespace rct::tools
