// job_table: management operations that outlast their request.
//
// An import or a clone of a big disk takes minutes. Asked for as a job
// (`?job=true`), it runs on a thread of its own and the request is
// answered at once (202, the job's view); GET /v1/jobs/ID then shows how far
// it has come (bytes done of total, rate) and, once ended, how: done (with
// the new disk), failed (with the error) or cancelled. DELETE cancels a
// running job, whose work undoes itself as after any failure (nothing is
// left behind), or forgets an ended one. Ended jobs are kept for their
// callers for ten minutes, the newest 64 of them at most.
//
// Who may see a job: its owner (the uid that started it) and root. At most
// max_running jobs run at once; more are refused (503). rctd stopping
// cancels every running job and waits for it (cancel_all()); a live upgrade
// is refused while any runs (running()).
//
// Threads: every call from the control threads, under one mutex; each job's
// work on its own thread, reporting through its rct::progress.
#pragma once

#include <rct/progress.hh>
#include <rct/thread_annotations.hh>

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace rct::daemon::control {

class job_table {
public:
    // The work: returns the result (the new disk's view); throwing ends the
    // job failed, or cancelled when progress was cancelled. error_of turns
    // the exception into the error object a failed job reports.
    using work = std::function<nlohmann::ordered_json(progress&)>;
    using error_view = std::function<nlohmann::ordered_json(std::exception_ptr)>;

    job_table(unsigned max_running, error_view error_of);
    // cancel_all().
    ~job_table();
    job_table(const job_table&) = delete;
    job_table& operator=(const job_table&) = delete;

    // Starts fn; returns the new job's view. Throws api_error (503) when
    // max_running jobs run already.
    nlohmann::ordered_json start(std::string kind, std::string disk, uid_t owner, work fn) EXCLUDES(mutex_);
    // The job's view, for caller uid; nullopt when unknown or another's.
    std::optional<nlohmann::ordered_json> find(const std::string& id, uid_t caller) EXCLUDES(mutex_);
    nlohmann::ordered_json list(uid_t caller) EXCLUDES(mutex_);
    // A running job: asks it to stop and returns its view (still running
    // until its work has unwound). An ended one: forgets it, returns its
    // last view. nullopt when unknown or another's.
    std::optional<nlohmann::ordered_json> cancel(const std::string& id, uid_t caller) EXCLUDES(mutex_);
    unsigned running() const EXCLUDES(mutex_);
    // Cancels every running job and waits for each to end; no job starts
    // afterwards (503).
    void cancel_all() EXCLUDES(mutex_);

private:
    struct job;
    nlohmann::ordered_json view(const job& j) const REQUIRES(mutex_);
    void prune() REQUIRES(mutex_);
    static bool visible(const job& j, uid_t caller) noexcept;

    const unsigned max_running_;
    const error_view error_of_;
    mutable rct::mutex mutex_;
    rct::cond_var ended_;
    std::uint64_t next_id_ GUARDED_BY(mutex_) = 1;
    bool closed_ GUARDED_BY(mutex_) = false;
    std::map<std::string, std::shared_ptr<job>> jobs_ GUARDED_BY(mutex_);
};

}  // namespace rct::daemon::control
