#include "rctctl_jobs.hh"

#include "progress.hh"
#include "table.hh"

#include <rct/size.hh>

#include <fmt/format.h>

#include <csignal>
#include <iostream>
#include <thread>
#include <rct/control_api.hh>

namespace rct::tools {

namespace error_code = rct::control_api::error_code;

namespace {

volatile std::sig_atomic_t interrupted = 0;

void on_interrupt(int) { interrupted = 1; }

// SIGINT and SIGTERM set `interrupted` while a job is followed.
class interrupt_catcher {
public:
    interrupt_catcher()
    {
        struct sigaction sa {};
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGINT, &sa, &old_int_);
        ::sigaction(SIGTERM, &sa, &old_term_);
    }
    ~interrupt_catcher() { release(); }
    // The signals' old handlers back (a second Ctrl-C then ends rctctl).
    void release() noexcept
    {
        if (held_) {
            ::sigaction(SIGINT, &old_int_, nullptr);
            ::sigaction(SIGTERM, &old_term_, nullptr);
            held_ = false;
        }
    }
    interrupt_catcher(const interrupt_catcher&) = delete;
    interrupt_catcher& operator=(const interrupt_catcher&) = delete;

private:
    struct sigaction old_int_ {};
    struct sigaction old_term_ {};
    bool held_ = true;
};

std::uint64_t u64(const json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

std::string text(const json& j, const char* key)
{
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "-";
}

std::string job_path(const json& job) { return "/jobs/" + segment(text(job, "id")); }

void print_job(const json& j, bool json_output)
{
    if (json_output) {
        std::cout << j.dump(2) << '\n';
        return;
    }
    std::cout << fmt::format("job {}: {} of {}: {}, {} of {}", text(j, "id"), text(j, "kind"), text(j, "disk"),
                             text(j, "state"), rct::format_size(u64(j, "bytes_done")),
                             rct::format_size(u64(j, "bytes_total")));
    if (j.contains("error") && j["error"].is_object()) {
        std::cout << ": " << text(j["error"], "message");
    }
    std::cout << '\n';
}

}  // namespace

json follow_job(client& c, const json& started, bool json_lines)
{
    if (!started.contains("state")) {
        return started;  // an rctd without jobs answered with the disk itself
    }
    interrupt_catcher catcher;
    interrupted = 0;
    progress shown(text(started, "kind") + " " + text(started, "disk"), u64(started, "bytes_total"), json_lines,
                   std::chrono::seconds(5));
    bool cancelled = false;
    json j = started;
    while (text(j, "state") == "running") {
        if (interrupted != 0 && !cancelled) {
            std::cerr << "\nrctctl: cancelling job " << text(j, "id") << " (Ctrl-C again leaves it running)\n";
            // A job that ended meanwhile is forgotten by this DELETE: its
            // reply is the job's last view.
            j = c.call_json("DELETE", job_path(j));
            cancelled = true;
            catcher.release();
            continue;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        j = c.call_json("GET", job_path(j));
        shown.update(u64(j, "bytes_done"), u64(j, "bytes_total"));
    }
    const std::string state = text(j, "state");
    if (state == "done") {
        shown.done();
        return j.value("result", json::object());
    }
    if (state == "cancelled") {
        throw failure{cancelled ? exit_interrupted : exit_failure,
                      "job " + text(j, "id") + " was cancelled; nothing of it is left", j.dump(), error_code::cancelled};
    }
    failure f = failure_from(j.value("error", json::object()), j.dump());
    f.message = "job " + text(j, "id") + " failed: " + f.message;
    throw f;
}

void cmd_jobs(client& c, bool json_output)
{
    const json reply = c.call_json("GET", "/jobs");
    if (json_output) {
        std::cout << reply.dump(2) << '\n';
        return;
    }
    std::vector<std::vector<std::string>> rows{{"ID", "KIND", "DISK", "STATE", "DONE", "TOTAL", "RATE"}};
    for (const auto& j : reply.value("jobs", json::array())) {
        rows.push_back({text(j, "id"), text(j, "kind"), text(j, "disk"), text(j, "state"),
                        rct::format_size(u64(j, "bytes_done")), rct::format_size(u64(j, "bytes_total")),
                        fmt::format("{:.1f} MiB/s", static_cast<double>(u64(j, "bytes_per_second")) / 1048576)});
    }
    print_table(rows);
}

void cmd_job(client& c, const std::string& id, bool json_output)
{
    print_job(c.call_json("GET", "/jobs/" + segment(id)), json_output);
}

void cmd_job_cancel(client& c, const std::string& id, bool json_output)
{
    print_job(c.call_json("DELETE", "/jobs/" + segment(id)), json_output);
}

}  // namespace rct::tools
