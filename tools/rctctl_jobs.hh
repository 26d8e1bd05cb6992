// rctctl's side of rctd's jobs (docs/control-api.md, "Jobs"): an import or
// a clone started as a job is followed until it ends, showing how far it
// has come: on a terminal a progress bar with rate and time left, redrawn in
// place on stderr; otherwise a plain line every few seconds; with --json
// progress events on stdout, one JSON object per line as rct-backup prints
// them (tools/common/progress.hh), then the new disk.
// Ctrl-C (SIGINT) or SIGTERM cancels the job and waits for rctd to undo it.
// Runs on rctctl's one thread.
#pragma once

#include "control_client.hh"

#include <string>

namespace rct::tools {

// Follows the job (POST's 202 reply) to its end. Returns the result (the
// new disk) of a job done; throws failure for one that failed (rctd's error,
// with its exit status) or was cancelled (exit_interrupted when we did).
json follow_job(client& c, const json& started, bool json_lines);

// rctctl jobs / job ID / job-cancel ID.
void cmd_jobs(client& c, bool json_output);
void cmd_job(client& c, const std::string& id, bool json_output);
void cmd_job_cancel(client& c, const std::string& id, bool json_output);

}  // namespace rct::tools
