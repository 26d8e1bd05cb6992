// group_cut: one instant across several disks (a consistency group), for
// snapshots and checkpoints, without pausing I/O.
//
// The guarantee is a single disk's, extended to the group: a write
// acknowledged before the call is in every member's cut, and if a write to
// one member was issued after a write to another had completed, no cut
// holds the later without the earlier. Mechanism (docs/architecture.md,
// "Consistency groups"): each member's outer write barrier closes (new
// writes wait in memory; writes already admitted go on), every member is
// cut at once on a thread of its own (the cut itself is the O(1) epoch
// switch), and the barriers open as soon as the last cut's instant has
// passed, before any of them is made durable. A write that completed after
// some member's cut was admitted after the barriers closed, so any write a
// client issued after seeing it complete waited at its barrier until every
// cut had happened: it is in none of them.
//
// Threading: a management call. Takes every member's management lock (in
// name order), so it is serialised with the members' other management
// calls. Errors throw rct::error: invalid_argument (fewer than two disks,
// a disk twice, a disk without tracking), exists (a member already has the
// name), or the first member's failure, after the members that were cut
// have had their snapshot or checkpoint deleted again.
#pragma once

#include <rct/disk.hh>
#include <rct/snapshots.hh>
#include <rct/tracker.hh>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rct {

struct group_result {
    std::vector<snapshot_info> members;  // in the order the disks were given
    std::uint64_t held_ns = 0;           // how long new writes waited at the barriers, at most
};

group_result snapshot_group(const std::vector<std::shared_ptr<disk>>& disks, const std::string& name);
// Checkpoints only (no snapshot data): members[i].checkpoint.
group_result checkpoint_group(const std::vector<std::shared_ptr<disk>>& disks, const std::string& name);

}  // namespace rct
