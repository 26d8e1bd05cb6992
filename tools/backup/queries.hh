// queries: what rct-backup's commands ask rctd in common, and how they
// talk to people. One thread per client, as control_client.hh says.
#pragma once

#include "control_client.hh"
#include "nbd.hh"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rct::backup {

// A message for people: stderr, and never mixed into --json's stdout.
void note(const std::string& text);

// The ranges rctd says differ on `disk` between `from` and `to` (snapshot
// or checkpoint names, tokens; `to` may be "live"), merged where they touch.
std::vector<byte_range> changed_ranges(tools::client& api, const std::string& disk, const std::string& from,
                                       const std::string& to);

}  // namespace rct::backup
