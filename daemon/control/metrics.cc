#include "metrics.hh"

#include <rct/io_stats.hh>
#include <rct/tracker.hh>

#include <fmt/format.h>

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <vector>

namespace rct::daemon::control {

namespace {

// A label value as the format wants it: backslash, quote and newline escaped.
std::string label(const std::string& v)
{
    std::string out;
    for (const char c : v) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

void header(std::string& out, const char* name, const char* type, const char* help)
{
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

using disks = std::vector<std::shared_ptr<disk>>;

void request_counters(std::string& out, const disks& all, const std::vector<io_stats::totals>& t)
{
    struct counter {
        const char* name;
        const char* help;
        std::uint64_t io_stats::op_totals::*field;
    };
    const counter counters[] = {
        {"rct_disk_requests_total", "Requests clients made of the disk (NBD and ublk), by operation.",
         &io_stats::op_totals::requests},
        {"rct_disk_request_bytes_total", "Bytes read, written, trimmed or zeroed by successful requests.",
         &io_stats::op_totals::bytes},
        {"rct_disk_request_errors_total", "Requests answered with an error.", &io_stats::op_totals::errors},
    };
    for (const counter& c : counters) {
        header(out, c.name, "counter", c.help);
        for (std::size_t d = 0; d < all.size(); ++d) {
            for (std::size_t op = 0; op < stat_ops; ++op) {
                out += fmt::format("{}{{disk=\"{}\",op=\"{}\"}} {}\n", c.name, label(all[d]->name()),
                                   stat_op_name(static_cast<stat_op>(op)), t[d].ops[op].*c.field);
            }
        }
    }
}

void latency_histogram(std::string& out, const disks& all, const std::vector<io_stats::totals>& t)
{
    const char* name = "rct_disk_request_duration_seconds";
    header(out, name, "histogram", "Time from a request taken to its answer, by operation.");
    for (std::size_t d = 0; d < all.size(); ++d) {
        for (std::size_t op = 0; op < stat_ops; ++op) {
            const io_stats::op_totals& o = t[d].ops[op];
            const std::string labels =
                fmt::format("disk=\"{}\",op=\"{}\"", label(all[d]->name()), stat_op_name(static_cast<stat_op>(op)));
            std::uint64_t cumulative = 0;
            for (std::size_t b = 0; b < io_stats::buckets; ++b) {
                cumulative += o.latency[b];
                const std::string le =
                    b < latency_bounds_ns.size() ? fmt::format("{}", latency_bounds_ns[b] / 1e9) : "+Inf";
                out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, le, cumulative);
            }
            out += fmt::format("{}_sum{{{}}} {}\n", name, labels, o.latency_sum_ns / 1e9);
            out += fmt::format("{}_count{{{}}} {}\n", name, labels, cumulative);
        }
    }
}

void disk_gauges(std::string& out, const disks& all, const std::vector<io_stats::totals>& t)
{
    {
        header(out, "rct_disk_requests_in_flight", "gauge", "Requests taken and not yet answered.");
        for (std::size_t d = 0; d < all.size(); ++d) {
            out += fmt::format("rct_disk_requests_in_flight{{disk=\"{}\"}} {}\n", label(all[d]->name()), t[d].in_flight);
        }
    }
    {
        header(out, "rct_disk_clients", "gauge", "NBD connections open on the disk and its snapshots.");
        for (const auto& d : all) {
            out += fmt::format("rct_disk_clients{{disk=\"{}\"}} {}\n", label(d->name()), d->clients());
        }
    }
    {
        header(out, "rct_disk_size_bytes", "gauge", "The disk's size.");
        for (const auto& d : all) {
            out += fmt::format("rct_disk_size_bytes{{disk=\"{}\"}} {}\n", label(d->name()), d->size());
        }
    }
}

void tracking_gauges(std::string& out, const disks& all)
{
    std::vector<std::pair<std::string, tracking_status>> tracked;
    for (const auto& d : all) {
        if (const tracker* t = d->tracking()) {
            tracked.emplace_back(d->name(), t->status());
        }
    }
    struct gauge {
        const char* name;
        const char* type;
        const char* help;
        std::uint64_t (*value)(const tracking_status&);
    };
    const gauge gauges[] = {
        {"rct_tracking_active", "gauge", "1 while change tracking can answer, 0 after a reset.",
         [](const tracking_status& s) -> std::uint64_t { return s.active ? 1 : 0; }},
        {"rct_tracking_epoch", "gauge", "The live epoch (checkpoints cut so far, plus one).",
         [](const tracking_status& s) -> std::uint64_t { return s.current_epoch; }},
        {"rct_tracking_checkpoints", "gauge", "Checkpoints kept.",
         [](const tracking_status& s) -> std::uint64_t { return s.checkpoints; }},
        {"rct_tracking_recovery_excess_bytes", "gauge",
         "Bytes the last crash recovery reported changed beyond what was written (write-intent regions).",
         [](const tracking_status& s) -> std::uint64_t { return s.recovery_excess_bytes; }},
    };
    for (const gauge& g : gauges) {
        header(out, g.name, g.type, g.help);
        for (const auto& [name, s] : tracked) {
            out += fmt::format("{}{{disk=\"{}\"}} {}\n", g.name, label(name), g.value(s));
        }
    }
}

std::uint64_t resident_bytes()
{
    std::ifstream statm("/proc/self/statm");
    std::uint64_t pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::uint64_t open_fds()
{
    std::uint64_t n = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (const dirent* e = ::readdir(dir)) {
            n += e->d_name[0] != '.';
        }
        ::closedir(dir);
    }
    return n > 0 ? n - 1 : 0;  // not the directory's own descriptor
}

void process_gauges(std::string& out)
{
    {
        header(out, "rct_process_resident_memory_bytes", "gauge", "rctd's resident memory.");
        out += fmt::format("rct_process_resident_memory_bytes {}\n", resident_bytes());
    }
    {
        header(out, "rct_process_open_fds", "gauge", "rctd's open file descriptors.");
        out += fmt::format("rct_process_open_fds {}\n", open_fds());
    }
}

}  // namespace

std::string render_metrics(const disk_registry& registry)
{
    const disks all = registry.list();
    std::vector<io_stats::totals> totals;
    totals.reserve(all.size());
    for (const auto& d : all) {
        totals.push_back(d->stats().sum());
    }
    std::string out;
    request_counters(out, all, totals);
    latency_histogram(out, all, totals);
    disk_gauges(out, all, totals);
    tracking_gauges(out, all);
    process_gauges(out);
    return out;
}

}  // namespace rct::daemon::control
