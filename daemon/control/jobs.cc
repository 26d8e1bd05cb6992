#include "control/jobs.hh"

#include "control/request.hh"

#include <rct/log.hh>

#include <fmt/format.h>
#include <microhttpd.h>
#include <sys/random.h>

#include <ctime>
#include <rct/control_api.hh>

namespace rct::daemon::control {

namespace error_code = rct::control_api::error_code;

namespace {

using json = nlohmann::ordered_json;
using clock = std::chrono::steady_clock;

constexpr auto keep_ended = std::chrono::minutes(10);
constexpr std::size_t max_ended = 64;

std::string new_job_id(std::uint64_t serial)
{
    std::uint32_t rnd = 0;
    if (::getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) {
        rnd = static_cast<std::uint32_t>(clock::now().time_since_epoch().count());
    }
    return fmt::format("{}-{:08x}", serial, rnd);
}

double seconds_between(clock::time_point a, clock::time_point b)
{
    return std::chrono::duration<double>(b - a).count();
}

}  // namespace

struct job_table::job {
    std::string id;
    std::string kind;
    std::string disk;
    uid_t owner = 0;
    std::int64_t started_unix = 0;
    clock::time_point started;
    progress prog;
    // Under the table's mutex.
    std::string state = "running";
    clock::time_point ended;
    json result;
    json error;
    std::thread thread;
};

job_table::job_table(unsigned max_running, error_view error_of)
    : max_running_(max_running), error_of_(std::move(error_of))
{
}

job_table::~job_table()
{
    cancel_all();
}

bool job_table::visible(const job& j, uid_t caller) noexcept
{
    return caller == 0 || caller == j.owner;
}

json job_table::view(const job& j) const
{
    const bool ended = j.state != "running";
    const double elapsed = seconds_between(j.started, ended ? j.ended : clock::now());
    const std::uint64_t done = j.prog.done();
    const std::uint64_t total = j.prog.total();
    const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
    json v;
    v["id"] = j.id;
    v["kind"] = j.kind;
    v["disk"] = j.disk;
    v["state"] = j.state;
    v["cancel_requested"] = j.prog.cancelled();
    v["bytes_done"] = done;
    v["bytes_total"] = total;
    v["bytes_per_second"] = static_cast<std::uint64_t>(rate);
    v["elapsed_seconds"] = elapsed;
    v["eta_seconds"] = (!ended && rate > 0 && total >= done) ? json(static_cast<double>(total - done) / rate)
                                                             : json(nullptr);
    v["started_at_unix"] = j.started_unix;
    v["result"] = j.result;
    v["error"] = j.error;
    return v;
}

json job_table::start(std::string kind, std::string disk, uid_t owner, work fn)
{
    rct::lock_guard l(mutex_);
    if (closed_) {
        throw api_error{MHD_HTTP_SERVICE_UNAVAILABLE, error_code::too_many_jobs, "rctd is stopping; it starts no job"};
    }
    prune();
    unsigned busy = 0;
    for (const auto& [id, j] : jobs_) {
        busy += j->state == "running" ? 1 : 0;
    }
    if (busy >= max_running_) {
        throw api_error{MHD_HTTP_SERVICE_UNAVAILABLE, error_code::too_many_jobs,
                        fmt::format("{} jobs are running already, the most rctd runs at once; wait for one to "
                                    "end (GET /v1/jobs)",
                                    busy)};
    }
    auto j = std::make_shared<job>();
    j->id = new_job_id(next_id_++);
    j->kind = std::move(kind);
    j->disk = std::move(disk);
    j->owner = owner;
    j->started_unix = static_cast<std::int64_t>(std::time(nullptr));
    j->started = clock::now();
    // Under the mutex: the thread cannot end (and look itself up) before
    // it is in the table.
    j->thread = std::thread([this, j, fn = std::move(fn)] {
        json result;
        std::exception_ptr failure;
        try {
            result = fn(j->prog);
        } catch (...) {
            failure = std::current_exception();
        }
        json err = failure ? error_of_(failure) : json(nullptr);
        rct::lock_guard done(mutex_);
        j->ended = clock::now();
        j->state = !failure ? "done" : j->prog.cancelled() ? "cancelled" : "failed";
        j->result = std::move(result);
        j->error = std::move(err);
        log::info("job {} ({} of {}): {} after {:.1f} s", j->id, j->kind, j->disk, j->state,
                  seconds_between(j->started, j->ended));
        ended_.notify_all();
    });
    jobs_.emplace(j->id, j);
    return view(*j);
}

std::optional<json> job_table::find(const std::string& id, uid_t caller)
{
    rct::lock_guard l(mutex_);
    prune();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !visible(*it->second, caller)) {
        return std::nullopt;
    }
    return view(*it->second);
}

json job_table::list(uid_t caller)
{
    rct::lock_guard l(mutex_);
    prune();
    json out = json::array();
    for (const auto& [id, j] : jobs_) {
        if (visible(*j, caller)) {
            out.push_back(view(*j));
        }
    }
    return out;
}

std::optional<json> job_table::cancel(const std::string& id, uid_t caller)
{
    rct::lock_guard l(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !visible(*it->second, caller)) {
        return std::nullopt;
    }
    job& j = *it->second;
    if (j.state == "running") {
        j.prog.cancel();
        return view(j);
    }
    json last = view(j);
    // Ended: its thread has left the table's code, the join is short.
    j.thread.join();
    jobs_.erase(it);
    return last;
}

unsigned job_table::running() const
{
    rct::lock_guard l(mutex_);
    unsigned n = 0;
    for (const auto& [id, j] : jobs_) {
        n += j->state == "running" ? 1 : 0;
    }
    return n;
}

void job_table::cancel_all()
{
    rct::unique_lock l(mutex_);
    closed_ = true;
    for (const auto& [id, j] : jobs_) {
        if (j->state == "running") {
            log::notice("job {} ({} of {}): cancelled, rctd is stopping", j->id, j->kind, j->disk);
            j->prog.cancel();
        }
    }
    ended_.wait(l, [this]() REQUIRES(mutex_) {
        for (const auto& [id, j] : jobs_) {
            if (j->state == "running") {
                return false;
            }
        }
        return true;
    });
    for (auto& [id, j] : jobs_) {
        j->thread.join();
    }
    jobs_.clear();
}

void job_table::prune()
{
    const auto now = clock::now();
    std::vector<std::string> ended;
    for (const auto& [id, j] : jobs_) {
        if (j->state != "running") {
            ended.push_back(id);
        }
    }
    // Oldest first: the ones past keep_ended, and beyond the newest max_ended.
    std::sort(ended.begin(), ended.end(),
              [this](const std::string& a, const std::string& b) REQUIRES(mutex_) {
                  return jobs_.at(a)->ended < jobs_.at(b)->ended;
              });
    for (std::size_t i = 0; i < ended.size(); ++i) {
        auto it = jobs_.find(ended[i]);
        if (now - it->second->ended > keep_ended || ended.size() - i > max_ended) {
            it->second->thread.join();
            jobs_.erase(it);
        }
    }
}

}  // namespace rct::daemon::control
