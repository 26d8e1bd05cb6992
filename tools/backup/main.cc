// rct-backup: backs up rctd's disks into qcow2 backing chains, and lists,
// verifies, restores and serves them (docs/backup.md; repository format:
// docs/format/backup.md).
//
// Each backup cuts a snapshot of its own through rctd's control API, reads
// it over NBD (libnbd), and writes only what its mode needs into a new qcow2
// overlay served by qemu-nbd on a private socket. The exit status tells
// scripts what happened (see the --help footer).
#include "commands.hh"

#include <CLI/CLI.hpp>
#include <curl/curl.h>

#include <iostream>

namespace {

using namespace rct::tools;

constexpr const char* exit_help = R"(Exit status:
  0  success
  1  any other failure (qemu-img/qemu-nbd failed, I/O error, unexpected reply)
  2  usage error (bad command line, or rctd found an argument invalid)
  3  not found: no such disk (in rctd or in the repository) or backup point
  4  conflict: another rct-backup works on the same disk, rctd is busy, or
     restore's rct:NAME disk holds data (--force)
  5  cannot reach rctd (the message says why)
  6  full backup required: inc/diff cannot be taken (no chain, a re-created
     disk, or rctd refused the chain's token, e.g. after a shrink); auto
     takes the full instead and says why
  7  rctd refused the caller (docs/security.md)
  8  verify found a point that does not match its manifest (named in the output))";

}  // namespace

int main(int argc, char** argv)
{
    rct::backup::settings s;
    std::string state_dir = "/var/lib/rctd";
    std::string disk;
    std::vector<std::string> backup_disks;
    bool group = false;
    std::string at;
    std::string to;

    CLI::App app{"rct-backup: full, incremental and differential backups of rctd's disks into qcow2 chains"};
    app.footer(exit_help);
    app.require_subcommand(1);
    app.fallthrough();
    app.add_option("--repo", s.repo, "backup repository directory (one subdirectory per disk; every command but "
                                     "replicate needs one)");
    app.add_option("--control-socket", s.control_socket,
                   "rctd's control socket (default: STATE-DIR/control.sock if --state-dir is given, else "
                   "$RCTD_CONTROL_SOCKET, else /var/lib/rctd/control.sock)");
    auto* state_opt = app.add_option("--state-dir", state_dir, "rctd's state directory")->capture_default_str();
    app.add_option("--socket", s.nbd_socket, "rctd's NBD Unix socket (default: the export URI rctd reports)");
    app.add_flag("--json", s.json, "JSON to stdout: progress events, then the result, one object per line");

    std::vector<CLI::App*> backups;
    for (const char* mode : {"full", "inc", "diff", "auto"}) {
        const std::string help = std::string(mode) == "full"   ? "copy every allocated extent of a new snapshot"
                                 : std::string(mode) == "inc"  ? "copy what changed since the newest backup"
                                 : std::string(mode) == "diff" ? "copy what changed since the newest full backup"
                                                               : "inc, or a full when there is no usable chain "
                                                                 "(says why)";
        auto* sub = app.add_subcommand(mode, help);
        sub->add_option("DISK", backup_disks, "disk name(s); several are backed up one after another")->required();
        sub->add_flag("--group", group, "cut every disk named at one instant (a consistency group), then back each "
                                        "up from its snapshot");
        backups.push_back(sub);
    }
    auto* list = app.add_subcommand("list", "list the backup points, per disk");
    list->add_option("DISK", disk, "only this disk");
    auto* verify = app.add_subcommand("verify", "re-read backups and check every checksum of their manifests");
    verify->add_option("DISK", disk, "only this disk");
    verify->add_option("--at", at, "only this point and its chain (default: every point)");
    bool force = false;
    auto* restore = app.add_subcommand("restore", "write a disk's image at a point (sparse: zeroes are never "
                                                  "written as data)");
    restore->add_option("DISK", disk, "disk name")->required();
    restore->add_option("--at", at, "backup point id (default: the newest)");
    restore->add_option("--to", to,
                        "where to: an image FILE (raw; replaced if it exists), a block device /dev/X, an NBD URI "
                        "(nbd+unix://... or nbd://...), or rct:NAME (a disk of rctd, created if missing)")
        ->required();
    restore->add_flag("--force", force, "rct:NAME: overwrite a disk that is not empty");
    unsigned connections = 4;
    restore->add_option("--connections", connections,
                        "parallel NBD connections (and threads), each copying its share of the data (1-64)")
        ->capture_default_str();

    std::string serve_socket;
    std::string listen;
    auto* serve = app.add_subcommand("serve", "export a point read-only over NBD until SIGINT/SIGTERM, for "
                                              "file-level restore (prints the NBD URI)");
    serve->add_option("DISK", disk, "disk name")->required();
    serve->add_option("--at", at, "backup point id (default: the newest)");
    auto* serve_sock = serve->add_option("--socket", serve_socket,
                                         "Unix socket to serve on (default: a private one, named in the URI)");
    serve->add_option("--listen", listen, "serve on TCP instead: tcp:HOST:PORT")
        ->excludes(serve_sock)
        ->check([](const std::string& v) { return v.rfind("tcp:", 0) == 0 ? "" : "want tcp:HOST:PORT"; });

    std::size_t keep = 0;
    auto* prune = app.add_subcommand("prune", "merge the oldest points into their full until N remain");
    prune->add_option("DISK", disk, "disk name")->required();
    prune->add_option("--keep", keep, "points to keep (at least 1)")->required();
    std::string replica;
    auto* replicate = app.add_subcommand("replicate", "bring a replica of the disk on another rctd to a new snapshot "
                                                      "of it, and cut the same snapshot there");
    replicate->add_option("DISK", disk, "disk name")->required();
    replicate->add_option("--to", replica, "the other rctd's control socket, with :NAME for a replica of another "
                                           "name (default: the disk's)")
        ->required();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) {
            return app.exit(e);  // --help
        }
        std::cerr << "rct-backup: " << e.what() << "\nRun with --help for more information.\n";
        return exit_usage;
    }
    if (s.repo.empty() && !*replicate) {
        std::cerr << "rct-backup: --repo is required\nRun with --help for more information.\n";
        return exit_usage;
    }
    s.control_socket = resolve_socket(s.control_socket, state_dir, state_opt->count() != 0);
    const auto opt_disk = disk.empty() ? std::nullopt : std::optional(disk);
    const auto opt_at = at.empty() ? std::nullopt : std::optional(at);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    int status = exit_ok;
    try {
        for (auto* sub : backups) {
            if (!*sub) {
                continue;
            }
            if (group) {
                if (backup_disks.size() < 2) {
                    throw rct::tools::failure{exit_usage, "--group needs at least two disks", {}, {}};
                }
                rct::backup::cmd_backup_group(s, backup_disks, sub->get_name());
            } else {
                for (std::size_t i = 0; i < backup_disks.size(); ++i) {
                    try {
                        rct::backup::cmd_backup(s, backup_disks[i], sub->get_name());
                    } catch (...) {
                        if (i + 1 < backup_disks.size()) {
                            std::string rest;
                            for (std::size_t k = i + 1; k < backup_disks.size(); ++k) {
                                rest += (k > i + 1 ? ", " : "") + backup_disks[k];
                            }
                            std::cerr << "rct-backup: not backed up (after disk " << backup_disks[i]
                                      << " failed): " << rest << '\n';
                        }
                        throw;
                    }
                }
            }
        }
        if (*list) {
            rct::backup::cmd_list(s, opt_disk);
        } else if (*verify) {
            status = rct::backup::cmd_verify(s, opt_disk, opt_at) ? exit_ok : rct::backup::exit_corrupt;
        } else if (*restore) {
            rct::backup::cmd_restore(s, disk, opt_at, to, force, connections);
        } else if (*serve) {
            rct::backup::cmd_serve(s, disk, opt_at, listen.empty() ? serve_socket : listen);
        } else if (*prune) {
            rct::backup::cmd_prune(s, disk, keep);
        } else if (*replicate) {
            rct::backup::cmd_replicate(s, disk, replica);
        }
    } catch (const failure& f) {
        if (s.json) {
            std::cout << json{{"event", "error"}, {"status", f.status}, {"message", f.message},
                              {"code", f.code.empty() ? json(nullptr) : json(f.code)}}
                             .dump()
                      << std::endl;
        }
        std::cerr << "rct-backup: " << f.message << '\n';
        status = f.status;
    } catch (const std::exception& e) {
        std::cerr << "rct-backup: " << e.what() << '\n';
        status = exit_failure;
    }
    curl_global_cleanup();
    return status;
}
