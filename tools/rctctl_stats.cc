#include "rctctl_stats.hh"

#include "table.hh"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <thread>

namespace rct::tools {

namespace {

// disk -> "name{op}" (or "name") -> value, for the rct_disk_ samples.
using reading = std::map<std::string, std::map<std::string, double>>;

// The label's value in a {k="v",...} block, unescaped enough for names.
std::string label_value(const std::string& labels, const std::string& key)
{
    const std::string start = key + "=\"";
    const auto at = labels.find(start);
    if (at == std::string::npos) {
        return {};
    }
    std::string out;
    for (std::size_t i = at + start.size(); i < labels.size() && labels[i] != '"'; ++i) {
        if (labels[i] == '\\' && i + 1 < labels.size()) {
            ++i;
        }
        out += labels[i];
    }
    return out;
}

reading parse(const std::string& text)
{
    reading r;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("rct_disk_", 0) != 0 || line.find("_bucket{") != std::string::npos) {
            continue;
        }
        const auto brace = line.find('{');
        const auto close = line.rfind('}');
        const auto space = line.rfind(' ');
        if (brace == std::string::npos || close == std::string::npos || space == std::string::npos || close > space) {
            continue;
        }
        const std::string labels = line.substr(brace + 1, close - brace - 1);
        const std::string op = label_value(labels, "op");
        const std::string key = line.substr(0, brace) + (op.empty() ? "" : "{" + op + "}");
        r[label_value(labels, "disk")][key] = std::strtod(line.c_str() + space + 1, nullptr);
    }
    return r;
}

double get(const std::map<std::string, double>& m, const std::string& key)
{
    const auto it = m.find(key);
    return it == m.end() ? 0 : it->second;
}

double sum_ops(const std::map<std::string, double>& m, const char* name, std::initializer_list<const char*> ops)
{
    double total = 0;
    for (const char* op : ops) {
        total += get(m, fmt::format("{}{{{}}}", name, op));
    }
    return total;
}

// Bytes with one decimal in the largest binary unit below them.
std::string human(double v)
{
    static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    std::size_t u = 0;
    while (v >= 1024 && u + 1 < std::size(units)) {
        v /= 1024;
        ++u;
    }
    return u == 0 ? fmt::format("{:.0f} B", v) : fmt::format("{:.1f} {}", v, units[u]);
}

// One row: totals (previous null) or rates per second since `previous`.
std::vector<std::string> row(const std::string& disk, const std::map<std::string, double>& now,
                             const std::map<std::string, double>* previous, double seconds)
{
    const auto value = [&](const char* name, std::initializer_list<const char*> ops) {
        const double v = sum_ops(now, name, ops) - (previous ? sum_ops(*previous, name, ops) : 0);
        return previous ? v / seconds : v;
    };
    const auto count = [&](double v) { return previous ? fmt::format("{:.0f}/s", v) : fmt::format("{:.0f}", v); };
    const auto bytes = [&](double v) { return human(v) + (previous ? "/s" : ""); };
    const char* req = "rct_disk_requests_total";
    const char* byt = "rct_disk_request_bytes_total";
    const char* err = "rct_disk_request_errors_total";
    const auto all = {"read", "write", "flush", "trim", "write_zeroes", "cache", "block_status"};
    return {disk,
            count(value(req, {"read"})),
            bytes(value(byt, {"read"})),
            count(value(req, {"write"})),
            bytes(value(byt, {"write"})),
            count(value(req, {"flush"})),
            count(value(req, {"trim", "write_zeroes"})),
            count(value(err, all)),
            fmt::format("{:.0f}", get(now, "rct_disk_requests_in_flight")),
            fmt::format("{:.0f}", get(now, "rct_disk_clients"))};
}

void print(const reading& now, const reading* previous, double seconds, const std::optional<std::string>& disk)
{
    std::vector<std::vector<std::string>> rows{
        {"DISK", "READS", "READ", "WRITES", "WRITTEN", "FLUSHES", "TRIMS+ZEROES", "ERRORS", "IN FLIGHT", "CLIENTS"}};
    for (const auto& [name, m] : now) {
        if (disk && name != *disk) {
            continue;
        }
        const auto before = previous ? previous->find(name) : now.end();
        rows.push_back(row(name, m, previous && before != previous->end() ? &before->second : nullptr, seconds));
    }
    print_table(rows);
}

void print_json(const reading& now, const std::optional<std::string>& disk)
{
    json j = json::object();
    for (const auto& [name, m] : now) {
        if (!disk || name == *disk) {
            j[name] = m;
        }
    }
    std::cout << json{{"disks", j}}.dump() << std::endl;
}

}  // namespace

void cmd_stats(client& c, const std::optional<std::string>& disk, unsigned watch_seconds, bool json_output)
{
    reading previous = parse(c.metrics());
    if (disk && previous.find(*disk) == previous.end()) {
        throw failure{exit_not_found, "no disk " + *disk, {}, {}};
    }
    json_output ? print_json(previous, disk) : print(previous, nullptr, 0, disk);
    if (watch_seconds == 0) {
        return;
    }
    const bool terminal = ::isatty(STDOUT_FILENO) != 0;
    auto then = std::chrono::steady_clock::now();
    for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(watch_seconds));
        const reading now = parse(c.metrics());
        const auto at = std::chrono::steady_clock::now();
        const double seconds = std::chrono::duration<double>(at - then).count();
        if (json_output) {
            print_json(now, disk);
        } else {
            if (terminal) {
                std::cout << "\033[H\033[2J";  // a live table on a terminal, lines otherwise
            }
            std::cout << fmt::format("every {} s, rates over the last {:.1f} s:\n", watch_seconds, seconds);
            print(now, &previous, seconds, disk);
            std::cout << std::flush;
        }
        previous = now;
        then = at;
    }
}

}  // namespace rct::tools
