// Constants of the control API (docs/control-api.md) shared by the server in
// rctd and its clients, so both ends agree on them by construction.
#pragma once

#include <cstdint>

namespace rct::control_api {

inline constexpr int version = 1;  // the /v1 in every path
// Page size of GET /v1/disks/NAME/changes when no limit is given, and the
// largest limit accepted.
inline constexpr std::uint64_t default_changes_limit = 100000;
inline constexpr std::uint64_t max_changes_limit = 1000000;

}  // namespace rct::control_api
