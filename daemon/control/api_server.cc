// Request flow: libmicrohttpd calls handler::access once when the headers
// are in (we set up a per-request state and may refuse an oversized body at
// once), then once per chunk of body (appended to the state), then once more
// with no data: only then is the request routed and answered. Every
// exception stops at handler::respond and becomes a JSON error reply; none
// may unwind into libmicrohttpd's C frames.
#include "control/api_server.hh"
#include "control/jobs.hh"
#include "control/metrics.hh"
#include "control/request.hh"

#include <rct/disk.hh>
#include <rct/control_api.hh>
#include <rct/error.hh>
#include <rct/group_cut.hh>
#include <rct/log.hh>
#include <rct/tracker.hh>
#include <rct/unique_fd.hh>

#include <microhttpd.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iterator>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace rct::daemon {

namespace error_code = rct::control_api::error_code;
namespace {

using json = nlohmann::ordered_json;

constexpr std::size_t max_body = std::size_t{1} << 20;
using control::api_error;
using control::bad_request;
using control::error_body;
using control::endpoint;

// rct::error as the reply it becomes.
api_error from_error(const rct::error& e)
{
    switch (e.code()) {
    case errc::invalid_argument: return {MHD_HTTP_BAD_REQUEST, error_code::invalid_argument, e.what()};
    case errc::not_found: return {MHD_HTTP_NOT_FOUND, error_code::not_found, e.what()};
    case errc::exists: return {MHD_HTTP_CONFLICT, error_code::exists, e.what()};
    case errc::busy: return {MHD_HTTP_CONFLICT, error_code::busy, e.what()};
    case errc::io_error: return {MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, e.what()};
    case errc::corrupt: return {MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::corrupt, e.what()};
    case errc::full_backup_required: return {MHD_HTTP_CONFLICT, error_code::full_backup_required, e.what()};
    case errc::unsupported: return {MHD_HTTP_NOT_IMPLEMENTED, error_code::unsupported, e.what()};
    case errc::cancelled: return {MHD_HTTP_CONFLICT, error_code::cancelled, e.what()};
    }
    return {MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, e.what()};
}

// At most this many imports and clones run as jobs at once: each is a
// thread copying a disk.
constexpr unsigned max_running_jobs = 8;

// How a failed job reports its exception: as the error reply it would have
// been.
json job_error(std::exception_ptr e)
{
    api_error a{MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, "unknown failure"};
    try {
        std::rethrow_exception(e);
    } catch (const rct::error& r) {
        a = from_error(r);
    } catch (const api_error& r) {
        a = r;
    } catch (const std::exception& r) {
        a.message = r.what();
    } catch (...) {
    }
    return json{{"code", a.code}, {"message", a.message}};
}

std::string rfc3339(std::int64_t unix_seconds)
{
    const auto t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

json checkpoint_json(const checkpoint_info& c)
{
    json j;
    j["name"] = c.name;
    j["epoch"] = c.epoch;
    j["created_at"] = rfc3339(c.created_at);
    j["created_at_unix"] = c.created_at;
    j["size"] = c.size;
    j["token"] = c.token;
    return j;
}

// A changes cursor: "OFFSET.GENERATION.SINCE_EPOCH.UNTIL_EPOCH" (control::changes_cursor).
std::string format_cursor(const changes_page& p)
{
    return fmt::format("{}.{}.{}.{}", *p.next_cursor, p.generation, p.since_epoch, p.until_epoch.value_or(0));
}

// A page of changes may hold a million extents: it is written out directly,
// one extent per line, since a JSON tree would cost a heap node per value.
std::string changes_body(const changes_page& p, std::uint32_t granularity)
{
    const auto number_or_null = [](const std::optional<std::uint64_t>& v) {
        return v ? std::to_string(*v) : std::string("null");
    };
    std::string out;
    out.reserve(128 + p.extents.size() * 48);
    auto it = std::back_inserter(out);
    fmt::format_to(it, "{{\n  \"since_epoch\": {},\n  \"until_epoch\": {},\n  \"granularity\": {},\n  \"extents\": [",
                   p.since_epoch, number_or_null(p.until_epoch), granularity);
    const char* separator = "\n    ";
    for (const byte_extent& e : p.extents) {
        fmt::format_to(it, "{}{{\"offset\": {}, \"length\": {}}}", separator, e.offset, e.length);
        separator = ",\n    ";
    }
    fmt::format_to(it, "{}],\n  \"next_cursor\": {}\n}}\n", p.extents.empty() ? "" : "\n  ",
                   p.next_cursor ? "\"" + format_cursor(p) + "\"" : std::string("null"));
    return out;
}

// NBD URIs carry the socket path as a query value: escape what a URI
// reader would otherwise take for syntax.
std::string uri_escape(std::string_view s)
{
    std::string out;
    for (unsigned char c : s) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            std::strchr("-._~/", c) != nullptr) {
            out += static_cast<char>(c);
        } else {
            out += fmt::format("%{:02X}", c);
        }
    }
    return out;
}

// The peer of a control connection, for the audit trail in the log.
std::string peer_of(MHD_Connection* conn)
{
    const MHD_ConnectionInfo* info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    const auto p = info == nullptr ? std::nullopt : peer_of_socket(info->connect_fd);
    return p ? fmt::format("uid {} (pid {})", p->uid, p->pid) : "control client";
}

void mhd_log(void*, const char* fmt, va_list ap)
{
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    std::string_view line(buf);
    while (!line.empty() && line.back() == '\n') {
        line.remove_suffix(1);
    }
    // At the connection limit or the fd limit it says so per connection.
    RCT_LOG_LIMITED(log::level::warning, "control API: {}", line);
}

}  // namespace

class api_server::handler {
public:
    // One per HTTP request: the body as it arrives.
    struct state {
        std::string body;
        bool too_large = false;
        bool answered = false;
    };

    static MHD_Result access(void* cls, MHD_Connection* conn, const char* url, const char* method,
                             const char* /*version*/, const char* upload_data, std::size_t* upload_data_size,
                             void** con_cls) noexcept
    {
        try {
            return step(*static_cast<api_server*>(cls), conn, url, method, upload_data, upload_data_size, con_cls);
        } catch (...) {
            return MHD_NO;  // out of memory: drop the connection
        }
    }

    static void notify(void* cls, MHD_Connection* conn, void** socket_context,
                       MHD_ConnectionNotificationCode toe) noexcept
    {
        auto& server = *static_cast<api_server*>(cls);
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
            const MHD_ConnectionInfo* info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            *socket_context = server.admit(info != nullptr ? info->connect_fd : -1);
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context != nullptr) {
            server.release(*socket_context);
            *socket_context = nullptr;
        }
    }

    static void completed(void*, MHD_Connection*, void** con_cls, MHD_RequestTerminationCode) noexcept
    {
        delete static_cast<state*>(*con_cls);
        *con_cls = nullptr;
    }

private:
    struct reply {
        unsigned status;
        std::string body;  // JSON (or content_type), or empty for 204
        const char* allow = nullptr;
        const char* content_type = "application/json";
    };

    static MHD_Result step(api_server& server, MHD_Connection* conn, const char* url, const char* method,
                           const char* upload_data, std::size_t* upload_data_size, void** con_cls)
    {
        auto* st = static_cast<state*>(*con_cls);
        if (st == nullptr) {
            st = new state;
            *con_cls = st;
            const char* length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (length != nullptr && std::strtoull(length, nullptr, 10) > max_body) {
                // Refused before the body is read; libmicrohttpd then
                // closes the connection rather than read it.
                st->answered = true;
                return send(conn, too_large());
            }
            return MHD_YES;
        }
        if (*upload_data_size != 0) {
            if (!st->too_large && st->body.size() + *upload_data_size <= max_body) {
                st->body.append(upload_data, *upload_data_size);
            } else {
                st->too_large = true;
                st->body.clear();
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (st->answered) {
            return MHD_YES;
        }
        st->answered = true;
        if (st->too_large) {
            return send(conn, too_large());
        }
        return send(conn, respond(server, conn, url, method, st->body));
    }

    handler(api_server& server, MHD_Connection* conn, std::string_view method, const std::string& body)
        : server_(server), conn_(conn), method_(method), body_(body)
    {
    }

    // The one place exceptions stop.
    static reply respond(api_server& server, MHD_Connection* conn, const char* url, const char* method,
                         const std::string& body) noexcept
    {
        try {
            try {
                return handler(server, conn, method, body).route(url);
            } catch (const rct::error& e) {
                throw from_error(e);
            } catch (const nlohmann::json::exception& e) {
                throw bad_request(e.what());
            } catch (const std::bad_alloc&) {
                throw api_error{MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, "out of memory"};
            } catch (const std::exception& e) {
                throw api_error{MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, e.what()};
            }
        } catch (const api_error& e) {
            if (e.status >= 500) {
                log::error("control API: {} {}: {}", method, url, e.message);
            }
            try {
                return {e.status, error_body(e), e.allow};
            } catch (...) {
                return {MHD_HTTP_INTERNAL_SERVER_ERROR, {}};
            }
        } catch (...) {
            return {MHD_HTTP_INTERNAL_SERVER_ERROR, {}};
        }
    }

    static reply too_large()
    {
        const api_error e{MHD_HTTP_CONTENT_TOO_LARGE, error_code::bad_request,
                          fmt::format("request body larger than {} bytes", max_body)};
        return {e.status, error_body(e)};
    }

    static MHD_Result send(MHD_Connection* conn, const reply& r) noexcept
    {
        MHD_Response* resp = MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()),
                                                             MHD_RESPMEM_MUST_COPY);
        if (resp == nullptr) {
            return MHD_NO;
        }
        if (!r.body.empty()) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type);
        }
        if (r.allow != nullptr) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r.allow);
        }
        const MHD_Result ok = MHD_queue_response(conn, r.status, resp);
        MHD_destroy_response(resp);
        return ok;
    }

    static reply ok(unsigned status, const json& j) { return {status, j.dump(2) + "\n"}; }

    // Holds a call off while an upgrade freezes the daemon.
    class gate_pass {
    public:
        explicit gate_pass(api_server& s) : s_(s)
        {
            if (!s_.enter()) {
                throw api_error{MHD_HTTP_SERVICE_UNAVAILABLE, error_code::upgrade_in_progress,
                                "rctd is handing over to a new version; retry in a moment"};
            }
        }
        ~gate_pass() { s_.leave(); }
        gate_pass(const gate_pass&) = delete;
        gate_pass& operator=(const gate_pass&) = delete;

    private:
        api_server& s_;
    };

    reply route(std::string_view url)
    {
        const control::route r = control::resolve(method_, url);
        authorize(r.what);
        std::optional<gate_pass> pass;
        if (r.what != endpoint::upgrade) {
            pass.emplace(server_);
        }
        const std::string& name = r.disk;
        switch (r.what) {
        case endpoint::version: return version();
        case endpoint::metrics:
            return {MHD_HTTP_OK, control::render_metrics(server_.registry_), nullptr, control::metrics_content_type};
        case endpoint::list_disks: return list_disks();
        case endpoint::create_disk: return create_disk();
        case endpoint::get_disk: return get_disk(name);
        case endpoint::delete_disk: return delete_disk(name);
        case endpoint::resize_disk: return resize_disk(name);
        case endpoint::list_checkpoints: return list_checkpoints(name);
        case endpoint::create_checkpoint: return create_checkpoint(name);
        case endpoint::delete_checkpoint: return delete_checkpoint(name, r.item);
        case endpoint::changes: return changes(name);
        case endpoint::diff: return diff(name);
        case endpoint::list_snapshots: return list_snapshots(name);
        case endpoint::create_snapshot: return create_snapshot(name);
        case endpoint::delete_snapshot: return delete_snapshot(name, r.item);
        case endpoint::clone_snapshot: return clone_snapshot(name, r.item);
        case endpoint::attach_ublk: return attach_ublk(name);
        case endpoint::detach_ublk: return detach_ublk(name);
        case endpoint::restore: return restore(name);
        case endpoint::upgrade: return upgrade();
        case endpoint::group_snapshot: return group_cut(true);
        case endpoint::group_checkpoint: return group_cut(false);
        case endpoint::list_jobs: return list_jobs();
        case endpoint::get_job: return get_job(r.item);
        case endpoint::delete_job: return delete_job(r.item);
        }
        __builtin_unreachable();  // resolve() returns one of the above
    }

    // Starts the binary as rctd (upgrade/driver.hh): root's alone, whatever
    // the socket group may do.
    reply upgrade()
    {
        const unix_peer p = caller();
        if (p.uid != 0 && p.uid != ::geteuid()) {
            throw api_error{MHD_HTTP_FORBIDDEN, error_code::forbidden,
                            fmt::format("{} may not upgrade rctd: only root may start a binary as rctd", p.describe())};
        }
        const control::upgrade_args a = control::parse_upgrade(body_);
        const MHD_ConnectionInfo* info = MHD_get_connection_info(conn_, MHD_CONNECTION_INFO_CONNECTION_FD);
        unique_fd requester(info == nullptr ? -1 : ::fcntl(info->connect_fd, F_DUPFD_CLOEXEC, 3));
        if (!requester) {
            throw api_error{MHD_HTTP_INTERNAL_SERVER_ERROR, error_code::io_error, "cannot keep the caller's connection"};
        }
        const upgrade_refusal r =
            server_.upgrade_({a.binary, std::chrono::milliseconds(a.ready_timeout_ms), std::move(requester)});
        throw api_error{r.status, r.code, r.message};
    }

    // The caller's credentials; every request has them (a Unix socket).
    unix_peer caller() const
    {
        const MHD_ConnectionInfo* info = MHD_get_connection_info(conn_, MHD_CONNECTION_INFO_CONNECTION_FD);
        auto p = info == nullptr ? std::nullopt : peer_of_socket(info->connect_fd);
        if (!p) {
            throw api_error{MHD_HTTP_FORBIDDEN, error_code::forbidden, "cannot tell who the caller is"};
        }
        return *p;
    }

    void authorize(endpoint e) const
    {
        const unix_peer p = caller();
        const access_policy& a = server_.access_;
        if (a.may_manage(p) || (control::read_only(e) && a.may_read(p))) {
            return;
        }
        throw api_error{MHD_HTTP_FORBIDDEN, error_code::forbidden,
                        a.may_read(p) ? fmt::format("{} may only list and query (--api-readers); this call "
                                                    "changes state and needs root or the socket group",
                                                    p.describe())
                                      : fmt::format("{} may not use the control API (root, the socket group "
                                                    "and --api-readers may)",
                                                    p.describe())};
    }

    // A query parameter, URL-decoded; an empty string for a bare "?key".
    std::optional<std::string> query_value(const char* key) const
    {
        const char* value = nullptr;
        std::size_t len = 0;
        if (MHD_lookup_connection_value_n(conn_, MHD_GET_ARGUMENT_KIND, key, std::strlen(key), &value, &len) !=
            MHD_YES) {
            return std::nullopt;
        }
        return value == nullptr ? std::string() : std::string(value, len);
    }

    bool query_flag(const char* key) const { return control::parse_flag(key, query_value(key)); }

    control::query_lookup queries() const
    {
        return [this](const char* key) { return query_value(key); };
    }

    // null when the disk is not tracked, so that clients can tell "off"
    // from "on but reset".
    static json tracking_json(const disk& d)
    {
        const tracker* t = d.tracking();
        if (t == nullptr) {
            return nullptr;
        }
        const tracking_status s = t->status();
        json j;
        j["active"] = s.active;
        j["reason"] = s.reason;
        j["generation"] = s.generation;
        j["granularity"] = s.granularity;
        j["region_size"] = s.region_size;
        j["current_epoch"] = s.current_epoch;
        j["checkpoints"] = s.checkpoints;
        j["recovered_after_crash"] = s.recovered_after_crash;
        j["recovery_excess_bytes"] = s.recovery_excess_bytes;
        return j;
    }

    json disk_json(const disk& d) const { return disk_view(server_, d); }

    // A disk as every reply shows it (also from a job's thread).
    static json disk_view(const api_server& server, const disk& d)
    {
        const export_addresses& a = server.addrs_;
        json uris = json::array();
        if (!a.unix_socket.empty()) {
            uris.push_back(fmt::format("nbd+unix:///{}?socket={}", d.name(), uri_escape(a.unix_socket)));
        }
        if (a.tcp_port != 0) {
            const bool bare_v6 = a.tcp_host.find(':') != std::string::npos && a.tcp_host.front() != '[';
            const std::string host = bare_v6 ? "[" + a.tcp_host + "]" : a.tcp_host;
            uris.push_back(fmt::format("nbd://{}:{}/{}", host, a.tcp_port, d.name()));
        }
        json j;
        j["name"] = d.name();
        j["id"] = d.id();
        j["size"] = d.size();
        j["created_at"] = rfc3339(d.created_at());
        j["created_at_unix"] = d.created_at();
        j["clients"] = d.clients();
        j["export_uri"] = uris.empty() ? json(nullptr) : uris.front();
        j["uris"] = std::move(uris);
        j["tracking"] = tracking_json(d);
        const auto attached = server.ublk_.find(d.name());
        j["ublk"] = attached ? ublk_json(*attached) : json(nullptr);
        return j;
    }

    static json ublk_json(const ublk::attachment& a)
    {
        return json{{"device", a.device}, {"dev_id", a.dev_id}, {"queues", a.queues}, {"depth", a.depth}};
    }

    std::shared_ptr<disk> lookup(const std::string& name) const
    {
        auto d = server_.registry_.find(name);
        if (!d) {
            const auto q = server_.registry_.quarantined();
            if (auto it = q.find(name); it != q.end()) {
                throw api_error{MHD_HTTP_CONFLICT, error_code::quarantined,
                                fmt::format("disk {} is quarantined and not served: {}", name, it->second)};
            }
            throw api_error{MHD_HTTP_NOT_FOUND, error_code::not_found, fmt::format("no disk named {}", name)};
        }
        return d;
    }

    // The disk's tracker; callers keep the disk itself alive while using it.
    static tracker& tracking_of(disk& d)
    {
        tracker* t = d.tracking();
        if (t == nullptr) {
            throw api_error{MHD_HTTP_CONFLICT, error_code::tracking_disabled,
                            fmt::format("change tracking is off for disk {} (rctd runs with --no-tracking)",
                                        d.name())};
        }
        return *t;
    }

    reply version() const { return ok(MHD_HTTP_OK, json{{"api", control_api::version}, {"version", RCT_VERSION}, {"pid", ::getpid()}}); }

    reply list_disks() const
    {
        json disks = json::array();
        for (const auto& d : server_.registry_.list()) {
            disks.push_back(disk_json(*d));
        }
        json quarantined = json::array();
        for (const auto& [name, reason] : server_.registry_.quarantined()) {
            quarantined.push_back(json{{"name", name}, {"reason", reason}});
        }
        return ok(MHD_HTTP_OK, json{{"disks", std::move(disks)}, {"quarantined", std::move(quarantined)}});
    }

    reply create_disk() const
    {
        const control::create_args a = control::parse_create(body_);
        const bool as_job = query_flag("job");
        if (a.size) {
            if (as_job) {
                throw control::bad_request("only an import or a clone runs as a job; a new disk is made at once");
            }
            auto d = server_.registry_.create(a.name, *a.size, a.granularity);
            log::info("{}: created disk {} ({} bytes, id {})", peer_of(conn_), d->name(), d->size(), d->id());
            return ok(MHD_HTTP_CREATED, disk_json(*d));
        }
        // Taken now, with the caller's authority; a job's thread then owns it.
        auto src = std::make_shared<import_source>(import_source_of(a));
        auto run = [&server = server_, src, a, who = peer_of(conn_)](progress* prog) {
            const std::string shown = src->shown;
            auto d = server.registry_.import(a.name, std::move(*src), a.move, prog);
            log::info("{}: imported disk {} from {} by {} ({} bytes, id {})", who, d->name(), shown,
                      a.move ? "move" : "copy", d->size(), d->id());
            return disk_view(server, *d);
        };
        if (as_job) {
            return start_job("import", a.name, [run](progress& p) { return run(&p); });
        }
        return ok(MHD_HTTP_CREATED, run(nullptr));
    }

    reply start_job(const char* kind, const std::string& disk, control::job_table::work fn) const
    {
        return ok(MHD_HTTP_ACCEPTED, server_.jobs_.start(kind, disk, caller().uid, std::move(fn)));
    }

    reply list_jobs() const { return ok(MHD_HTTP_OK, json{{"jobs", server_.jobs_.list(caller().uid)}}); }

    reply get_job(const std::string& id) const
    {
        auto v = server_.jobs_.find(id, caller().uid);
        if (!v) {
            throw api_error{MHD_HTTP_NOT_FOUND, error_code::not_found, fmt::format("no job {}", id)};
        }
        return ok(MHD_HTTP_OK, *v);
    }

    // A running job: cancelled (202, the job until it has unwound); an
    // ended one: forgotten (200, its last view).
    reply delete_job(const std::string& id) const
    {
        auto v = server_.jobs_.cancel(id, caller().uid);
        if (!v) {
            throw api_error{MHD_HTTP_NOT_FOUND, error_code::not_found, fmt::format("no job {}", id)};
        }
        const bool running = (*v)["state"] == "running";
        if (running) {
            log::info("{}: cancelling job {} ({} of {})", peer_of(conn_), id, (*v)["kind"].get<std::string>(),
                      (*v)["disk"].get<std::string>());
        }
        return ok(running ? MHD_HTTP_ACCEPTED : MHD_HTTP_OK, *v);
    }

    // The file to import, read with the caller's authority: the fd it
    // passed, or (root only) a path opened without following links. A
    // move renames the path only while it is still the passed file, the
    // caller's own, in a directory the caller may change.
    import_source import_source_of(const control::create_args& a) const
    {
        const unix_peer p = caller();
        if (a.import_fd.empty()) {
            if (p.uid != 0) {
                throw api_error{MHD_HTTP_FORBIDDEN, error_code::forbidden,
                                "the path form of import ('import_from' alone) is for root; pass the open file "
                                "(rctctl import does) as 'import_fd'"};
            }
            return import_source::open_path(a.import_from, a.move);
        }
        import_source src;
        src.file = server_.inbox_.take(a.import_fd, p.uid);
        src.shown = a.import_from.empty() ? std::string("the passed file") : a.import_from.string();
        if (a.move) {
            src.locate(a.import_from);
            if (p.uid != 0) {
                src.owner = p.uid;
                check_may_unlink(src.dir.get(), p, src.shown);
            }
        }
        return src;
    }

    // A move takes the file out of its directory: only for a caller who
    // could do that itself (write permission, and the sticky bit's rule
    // is covered by owning the file).
    static void check_may_unlink(int dir, const unix_peer& p, const std::string& shown)
    {
        struct stat st {};
        if (::fstat(dir, &st) != 0) {
            throw_errno("stat the directory of " + shown, errno);
        }
        const bool may = st.st_uid == p.uid ? (st.st_mode & S_IWUSR) != 0 && (st.st_mode & S_IXUSR) != 0
                         : p.in_group(st.st_gid) ? (st.st_mode & S_IWGRP) != 0 && (st.st_mode & S_IXGRP) != 0
                                                 : (st.st_mode & S_IWOTH) != 0 && (st.st_mode & S_IXOTH) != 0;
        if (!may) {
            throw rct::error(errc::invalid_argument,
                             fmt::format("{} may not remove {} from its directory, so it cannot be moved; import it "
                                         "without --move to copy it",
                                         p.describe(), shown));
        }
    }

    reply get_disk(const std::string& name) const { return ok(MHD_HTTP_OK, disk_json(*lookup(name))); }

    reply delete_disk(const std::string& name) const
    {
        const bool force = query_flag("force");
        const auto d = server_.registry_.find(name);
        const unsigned clients = d ? d->clients() : 0;
        if (force && server_.ublk_.find(name)) {
            server_.ublk_.detach(name, true);
        }
        server_.registry_.remove(name, force);
        if (clients > 0) {
            log::info("{}: deleted disk {}, disconnecting {} client(s)", peer_of(conn_), name, clients);
        } else {
            log::info("{}: deleted disk {}", peer_of(conn_), name);
        }
        return {MHD_HTTP_NO_CONTENT, {}};
    }

    reply resize_disk(const std::string& name) const
    {
        const control::resize_args a = control::parse_resize(body_);
        const auto d = lookup(name);
        const std::uint64_t old_size = d->size();
        server_.registry_.resize(name, a.size, a.force);
        log::info("{}: resized disk {} from {} to {} bytes", peer_of(conn_), name, old_size, a.size);
        return ok(MHD_HTTP_OK, disk_json(*d));
    }

    reply create_checkpoint(const std::string& name) const
    {
        std::optional<std::string> checkpoint = control::parse_new_name(body_);
        const auto d = lookup(name);
        const auto managing = d->manage();
        const checkpoint_info c = tracking_of(*d).checkpoint(std::move(checkpoint));
        log::info("{}: checkpoint {} (epoch {}) of disk {}", peer_of(conn_), c.name, c.epoch, name);
        json reply = checkpoint_json(c);
        reply["cut_ns"] = c.cut_ns;  // how long the epoch switch itself took
        return ok(MHD_HTTP_CREATED, reply);
    }

    // One instant across several disks (group_cut.hh); each member gets a
    // snapshot (or a checkpoint) of the group's name.
    reply group_cut(bool snapshots) const
    {
        const control::group_args a = control::parse_group(body_);
        std::vector<std::shared_ptr<disk>> disks;
        for (const std::string& n : a.disks) {
            disks.push_back(lookup(n));
        }
        const group_result g = snapshots ? snapshot_group(disks, a.name) : checkpoint_group(disks, a.name);
        json members = json::array();
        for (std::size_t i = 0; i < disks.size(); ++i) {
            json m = snapshots ? snapshot_json(*disks[i], g.members[i]) : checkpoint_json(g.members[i].checkpoint);
            m["disk"] = disks[i]->name();
            members.push_back(std::move(m));
        }
        log::info("{}: group {} {} of disks {} (writes held {} us at most)", peer_of(conn_),
                  snapshots ? "snapshot" : "checkpoint", a.name, fmt::join(a.disks, ", "), g.held_ns / 1000);
        return ok(MHD_HTTP_CREATED, json{{"name", a.name}, {"members", std::move(members)}, {"held_ns", g.held_ns}});
    }

    reply list_checkpoints(const std::string& name) const
    {
        const auto d = lookup(name);
        json list = json::array();
        for (const checkpoint_info& c : tracking_of(*d).checkpoints()) {
            list.push_back(checkpoint_json(c));
        }
        return ok(MHD_HTTP_OK, json{{"checkpoints", std::move(list)}});
    }

    reply delete_checkpoint(const std::string& name, const std::string& checkpoint) const
    {
        const auto d = lookup(name);
        const auto managing = d->manage();
        tracker& t = tracking_of(*d);
        if (const auto e = t.checkpoint_epoch(checkpoint); e && d->snapshots()->is_snapshot(*e)) {
            throw api_error{MHD_HTTP_CONFLICT, error_code::is_snapshot,
                            fmt::format("checkpoint {} is a snapshot of disk {}; delete the snapshot first (it "
                                        "then stays as a plain checkpoint)",
                                        checkpoint, name)};
        }
        t.delete_checkpoint(checkpoint);
        log::info("{}: deleted checkpoint {} of disk {}", peer_of(conn_), checkpoint, name);
        return {MHD_HTTP_NO_CONTENT, {}};
    }

    reply changes(const std::string& name) const { return list_changes(name, control::parse_changes(queries())); }

    // diff FROM TO: snapshots, checkpoints or tokens; TO may be "live".
    reply diff(const std::string& name) const { return list_changes(name, control::parse_diff(queries())); }

    // One page of changes since..until, continuing at the cursor if given.
    reply list_changes(const std::string& name, const control::changes_args& a) const
    {
        const auto d = lookup(name);
        const tracker& t = tracking_of(*d);
        const changes_page page = t.changes(a.since, a.until, a.cursor.offset, static_cast<std::size_t>(a.limit));
        const control::changes_cursor& cursor = a.cursor;
        if (cursor.generation != 0 && (cursor.generation != page.generation || cursor.since != page.since_epoch ||
                                       cursor.until != page.until_epoch.value_or(0))) {
            throw rct::error(errc::full_backup_required,
                             "the checkpoints this listing started from were deleted or recreated, or tracking "
                             "was reset, after its first page; start the listing again (a full backup may be "
                             "required)");
        }
        return {MHD_HTTP_OK, changes_body(page, t.status().granularity)};
    }

    static snapshot_store& snapshots_of(disk& d)
    {
        tracking_of(d);
        return *d.snapshots();
    }

    json snapshot_json(const disk& d, const snapshot_info& s) const
    {
        json j = checkpoint_json(s.checkpoint);
        if (s.checkpoint.token.empty()) {
            j["token"] = nullptr;  // tracking was reset after the cut
        }
        j["exclusive_bytes"] = s.exclusive_bytes;
        j["valid"] = s.valid;
        j["invalid_reason"] = s.valid ? json(nullptr) : json(s.invalid_reason);
        j["export"] = d.name() + "@" + s.checkpoint.name;
        const export_addresses& a = server_.addrs_;
        j["export_uri"] = a.unix_socket.empty()
                              ? json(nullptr)
                              : json(fmt::format("nbd+unix:///{}@{}?socket={}", d.name(), s.checkpoint.name,
                                                 uri_escape(a.unix_socket)));
        return j;
    }

    reply create_snapshot(const std::string& name) const
    {
        std::optional<std::string> snap = control::parse_new_name(body_);
        const auto d = lookup(name);
        const auto managing = d->manage();
        const snapshot_info s = snapshots_of(*d).snapshot(std::move(snap));
        log::info("{}: snapshot {} (epoch {}) of disk {}", peer_of(conn_), s.checkpoint.name, s.checkpoint.epoch,
                  name);
        json reply = snapshot_json(*d, s);
        reply["cut_ns"] = s.checkpoint.cut_ns;
        return ok(MHD_HTTP_CREATED, reply);
    }

    reply list_snapshots(const std::string& name) const
    {
        const auto d = lookup(name);
        snapshot_store& st = snapshots_of(*d);
        json list = json::array();
        for (const snapshot_info& s : st.snapshots()) {
            list.push_back(snapshot_json(*d, s));
        }
        const snapshot_store_status ss = st.status();
        json store;
        store["copies"] = ss.copies;
        store["bytes"] = ss.store_bytes;
        store["limit"] = ss.store_limit == 0 ? json(nullptr) : json(ss.store_limit);
        store["first_writes"] = ss.first_writes;
        store["index_damaged"] = ss.index_damaged;
        if (ss.index_damaged) {
            store["index_damage"] = ss.index_damage;
        }
        return ok(MHD_HTTP_OK, json{{"snapshots", std::move(list)}, {"store", std::move(store)}});
    }

    reply delete_snapshot(const std::string& name, const std::string& snap) const
    {
        const bool force = query_flag("force");
        const auto d = lookup(name);
        const auto managing = d->manage();
        snapshots_of(*d).delete_snapshot(snap, force);
        log::info("{}: deleted snapshot {} of disk {} (its checkpoint stays)", peer_of(conn_), snap, name);
        return {MHD_HTTP_NO_CONTENT, {}};
    }

    reply clone_snapshot(const std::string& name, const std::string& snap) const
    {
        const std::string new_name = control::parse_clone(body_);
        auto run = [&server = server_, name, snap, new_name, who = peer_of(conn_)](progress* prog) {
            auto d = server.registry_.clone(name, snap, new_name, prog);
            log::info("{}: cloned {}@{} into new disk {}", who, name, snap, new_name);
            return disk_view(server, *d);
        };
        if (query_flag("job")) {
            return start_job("clone", new_name, [run](progress& p) { return run(&p); });
        }
        return ok(MHD_HTTP_CREATED, run(nullptr));
    }

    reply attach_ublk(const std::string& name) const
    {
        control::parse_body(body_, {});
        lookup(name);
        const ublk::attachment a = server_.ublk_.attach(name);
        log::info("{}: attached disk {} as {}", peer_of(conn_), name, a.device);
        return ok(MHD_HTTP_CREATED, ublk_json(a));
    }

    reply detach_ublk(const std::string& name) const
    {
        lookup(name);
        server_.ublk_.detach(name, query_flag("force"));
        log::info("{}: detached disk {} from its ublk device", peer_of(conn_), name);
        return {MHD_HTTP_NO_CONTENT, {}};
    }

    reply restore(const std::string& name) const
    {
        const control::restore_args a = control::parse_restore(body_);
        const std::string& snap = a.from;
        const bool force = a.force;
        if (force && server_.ublk_.find(name)) {
            server_.ublk_.detach(name, true);  // like NBD clients, the device is cut off
        }
        server_.registry_.restore(name, snap, force);
        log::info("{}: restored disk {} from snapshot {}", peer_of(conn_), name, snap);
        return ok(MHD_HTTP_OK, disk_json(*lookup(name)));
    }

    api_server& server_;
    MHD_Connection* conn_;
    std::string_view method_;
    const std::string& body_;
};

// The uid a connection counts against, boxed for libmicrohttpd's socket
// context; a connection whose uid is unknown counts against uid -1.
void* api_server::admit(int fd)
{
    ucred cred{};
    socklen_t len = sizeof cred;
    uid_t uid = static_cast<uid_t>(-1);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        uid = cred.uid;
    }
    unsigned n = 0;
    {
        rct::lock_guard lock(peers_mu_);
        n = ++per_uid_[uid];
    }
    if (n > limits_.max_per_uid) {
        // Counted until libmicrohttpd closes it, which the shutdown makes
        // immediate: the client sees EOF before any reply.
        RCT_LOG_LIMITED(log::level::warning,
                        "control API: refusing a connection from uid {}: it holds {} (--control-max-connections-per-peer)",
                        uid, n - 1);
        ::shutdown(fd, SHUT_RDWR);
    }
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(uid) + 1);
}

void api_server::release(void* key) noexcept
{
    const auto uid = static_cast<uid_t>(reinterpret_cast<std::uintptr_t>(key) - 1);
    rct::lock_guard lock(peers_mu_);
    if (auto it = per_uid_.find(uid); it != per_uid_.end() && --it->second == 0) {
        per_uid_.erase(it);
    }
}

api_server::api_server(disk_registry& reg, ublk::frontend& ublk, std::filesystem::path socket_path,
                       export_addresses addrs, const access_policy& access, control_limits limits, upgrade_hook hook,
                       inherited_control inherited)
    : registry_(reg), ublk_(ublk), socket_path_(std::move(socket_path)), addrs_(std::move(addrs)), access_(access),
      inbox_(socket_path_.string() + ".fd", access, std::move(inherited.fd_inbox)), limits_(limits),
      upgrade_(std::move(hook)), jobs_(max_running_jobs, [](std::exception_ptr e) { return job_error(e); })
{
    // A socket passed in (by systemd, or by the rctd before an upgrade)
    // keeps its name when this rctd stops: systemd may pass it again.
    const bool bind_here = !inherited.control;
    unique_fd fd = bind_here ? access.bind_unix(socket_path_, access.control_socket_mode(), "control socket")
                             : std::move(inherited.control);
    listen_fd_ = fd.get();
    struct stat st {};
    if (bind_here && ::stat(socket_path_.c_str(), &st) == 0) {
        socket_ino_ = st.st_ino;
    }

    // poll rather than select: rctd may hold more than FD_SETSIZE
    // descriptors (NBD connections, disks), and select cannot watch those.
    // ITC: MHD_quiesce_daemon needs it to stop the polling thread's accepts.
    const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                           MHD_USE_ERROR_LOG | MHD_USE_ITC;
    // The logger goes first so that it sees errors in the options after it.
    daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &handler::access, this,
                               MHD_OPTION_EXTERNAL_LOGGER, &mhd_log, nullptr,
                               MHD_OPTION_LISTEN_SOCKET, static_cast<MHD_socket>(fd.get()),
                               MHD_OPTION_CONNECTION_TIMEOUT, limits_.idle_timeout,
                               MHD_OPTION_CONNECTION_LIMIT, limits_.max_connections,
                               MHD_OPTION_NOTIFY_CONNECTION, &handler::notify, this,
                               MHD_OPTION_NOTIFY_COMPLETED, &handler::completed, nullptr,
                               MHD_OPTION_END);
    if (daemon_ == nullptr) {
        ::unlink(socket_path_.c_str());
        throw error(errc::io_error,
                    fmt::format("cannot start the control API server on {}", socket_path_.string()));
    }
    fd.release();  // libmicrohttpd closes it in MHD_stop_daemon
    log::info("control API listening on {}", socket_path_.string());
}

void api_server::stop_jobs()
{
    jobs_.cancel_all();
}

unsigned api_server::jobs_running() const
{
    return jobs_.running();
}

bool api_server::enter()
{
    rct::lock_guard l(gate_mu_);
    if (paused_) {
        return false;
    }
    ++active_;
    return true;
}

void api_server::leave() noexcept
{
    rct::lock_guard l(gate_mu_);
    --active_;
    gate_cv_.notify_all();
}

bool api_server::pause(std::chrono::steady_clock::time_point deadline)
{
    rct::unique_lock l(gate_mu_);
    paused_ = true;
    if (gate_cv_.wait_until(l, deadline, [this]() REQUIRES(gate_mu_) { return active_ == 0; })) {
        return true;
    }
    paused_ = false;
    return false;
}

void api_server::resume()
{
    rct::lock_guard l(gate_mu_);
    paused_ = false;
}

std::pair<int, int> api_server::listening_sockets() const noexcept
{
    return {listen_fd_, inbox_.listening_socket()};
}

std::pair<int, int> api_server::release_sockets()
{
    // MHD keeps the descriptor open until MHD_stop_daemon, which this
    // process, ending in exit or exec, never calls.
    MHD_quiesce_daemon(daemon_);
    return {listen_fd_, inbox_.release()};
}

api_server::~api_server()
{
    MHD_stop_daemon(daemon_);
    // A newer rctd may already have replaced the socket; leave that one be.
    struct stat st {};
    if (socket_ino_ != 0 && ::stat(socket_path_.c_str(), &st) == 0 && st.st_ino == socket_ino_) {
        ::unlink(socket_path_.c_str());
    }
}

}  // namespace rct::daemon
