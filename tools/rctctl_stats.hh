// rctctl stats: rctd's GET /metrics (docs/metrics.md) as a table per disk:
// requests, bytes, errors, in flight, clients. Once, or with a refresh
// interval as rates over each interval until interrupted. Runs on rctctl's
// one thread.
#pragma once

#include "control_client.hh"

#include <optional>
#include <string>

namespace rct::tools {

// disk: one disk's row only. watch_seconds 0: once. json: one object per
// reading (per disk: every counter), one per line.
void cmd_stats(client& c, const std::optional<std::string>& disk, unsigned watch_seconds, bool json);

}  // namespace rct::tools
