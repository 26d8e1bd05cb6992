// metrics: GET /metrics, the Prometheus text exposition format (version
// 0.0.4) of every disk's io_stats, tracking and client counts, and of the
// process (docs/metrics.md). Rendered on a control API thread from
// counters the workers keep; it takes no lock the data path takes.
#pragma once

#include <rct/disk_registry.hh>

#include <string>

namespace rct::daemon::control {

inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

std::string render_metrics(const disk_registry& registry);

}  // namespace rct::daemon::control
