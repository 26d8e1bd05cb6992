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

// The codes of error replies ({"error": {"code": ...}}; docs/control-api.md,
// "Errors"): rctd sends them and its clients branch on them, so both spell
// them from here.
namespace error_code {
inline constexpr char bad_request[] = "bad_request";
inline constexpr char invalid_argument[] = "invalid_argument";
inline constexpr char not_found[] = "not_found";
inline constexpr char exists[] = "exists";
inline constexpr char busy[] = "busy";
inline constexpr char io_error[] = "io_error";
inline constexpr char corrupt[] = "corrupt";
inline constexpr char full_backup_required[] = "full_backup_required";
inline constexpr char unsupported[] = "unsupported";
inline constexpr char cancelled[] = "cancelled";
inline constexpr char forbidden[] = "forbidden";
inline constexpr char is_snapshot[] = "is_snapshot";
inline constexpr char tracking_disabled[] = "tracking_disabled";
inline constexpr char method_not_allowed[] = "method_not_allowed";
inline constexpr char quarantined[] = "quarantined";
inline constexpr char too_many_jobs[] = "too_many_jobs";
inline constexpr char upgrade_in_progress[] = "upgrade_in_progress";
inline constexpr char upgrade_failed[] = "upgrade_failed";
}  // namespace error_code

}  // namespace rct::control_api
