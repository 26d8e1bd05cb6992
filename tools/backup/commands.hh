// commands: what each rct-backup subcommand does (docs/backup.md). main.cc
// parses the command line and turns failures into exit statuses.
//
// Every command writes human output to stdout (messages to stderr), or with
// --json JSON to stdout: progress events, one object per line, then the
// command's result object as the last line.
#pragma once

#include "control_client.hh"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace rct::backup {

using tools::json;

// rct-backup's own exit status, beyond the shared ones (control_client.hh).
inline constexpr int exit_corrupt = 8;

struct settings {
    std::filesystem::path repo;
    std::string control_socket;
    std::string nbd_socket;  // empty: the export URI rctd reports
    bool json = false;
};

// mode: "full", "inc", "diff" or "auto".
void cmd_backup(const settings& s, const std::string& disk, const std::string& mode);
// Several disks cut at one instant (a consistency group), then each backed
// up from its snapshot; the points name the group.
void cmd_backup_group(const settings& s, const std::vector<std::string>& disks, const std::string& mode);
void cmd_list(const settings& s, const std::optional<std::string>& disk);
// Returns false when something did not verify.
bool cmd_verify(const settings& s, const std::optional<std::string>& disk, const std::optional<std::string>& at);
// to: an image file, a block device, an NBD URI, or rct:NAME (a disk of rctd,
// created if missing; an existing one must be empty unless `force`), over
// `connections` parallel NBD connections.
void cmd_restore(const settings& s, const std::string& disk, const std::optional<std::string>& at,
                 const std::string& to, bool force, unsigned connections);
// Exports the point read-only over NBD (on `listen`: a Unix socket path or
// tcp:HOST:PORT; empty: a private socket) until SIGINT or SIGTERM.
void cmd_serve(const settings& s, const std::string& disk, const std::optional<std::string>& at,
               const std::string& listen);

// Brings a replica of `disk` on the rctd at `to` (CONTROL_SOCKET[:NAME]) to
// a new snapshot of it, and cuts the same snapshot there (replicate.cc).
void cmd_replicate(const settings& s, const std::string& disk, const std::string& to);

// Merges the oldest points into their full until `keep` remain (prune.cc).
void cmd_prune(const settings& s, const std::string& disk, std::size_t keep);
// Finishes the merge a killed prune journaled in the disk directory `dir`
// (held with lock_disk_dir) before anything else uses its points.
void finish_interrupted_prune(const std::filesystem::path& dir);

}  // namespace rct::backup
