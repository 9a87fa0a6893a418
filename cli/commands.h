// The anneal subcommands: registration on a CLI11 app, and what they share (global options, exit codes).
//
// Exit codes: 0 ok; 1 the job failed or the operation failed; 2 usage error or invalid job spec; 3 coordinator
// unreachable; 4 not found or not authorized. Every error is one line on stderr: "anneal <command>: <message>".
//
// Each Add*Commands registers subcommands whose callbacks store the command to run in `*action`; main() runs it
// after parsing, so parsing errors never half-run a command.
//
// Thread-safety: main thread only.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cli/client.h"
#include "common/status.h"

namespace anneal::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,
  kExitUsage = 2,
  kExitUnreachable = 3,
  kExitNotFound = 4,
};

struct GlobalOptions {
  std::string coordinator;          // --coordinator
  std::string token;                // --token
  bool json = false;                // --json
  double timeout_s = 5.0;           // --timeout
  double reconnect_s = 60;          // watch --reconnect: how long a watch waits for a coordinator that went away
  std::string server_key;           // --server-key (the coordinator's CurveZMQ public key)
  bool insecure_plaintext = false;  // --insecure-plaintext
};

using Action = std::function<int()>;

int ExitCodeFor(const Status& status);
// Prints "anneal <command>: <message>" on stderr and returns the exit code for the status.
int ReportError(std::string_view command, const Status& status);

// A client for the resolved coordinator address and token (flags > env > ~/.anneal/config).
StatusOr<std::unique_ptr<CoordinatorClient>> MakeClient(const GlobalOptions& g);

void AddJobCommands(CLI::App& app, GlobalOptions& g, Action* action);      // submit ls show logs cancel checkpoints
void AddFetchCommand(CLI::App& app, GlobalOptions& g, Action* action);     // fetch
void AddWatchCommand(CLI::App& app, GlobalOptions& g, Action* action);     // watch
void AddNodeCommands(CLI::App& app, GlobalOptions& g, Action* action);     // nodes drain
void AddClusterCommands(CLI::App& app, GlobalOptions& g, Action* action);  // up down
void AddNodeIdentityCommands(CLI::App& app, GlobalOptions& g, Action* action);  // node join-token, node remove
void AddModelCommands(CLI::App& app, GlobalOptions& g, Action* action);         // model init
// whoami, token, user, team (quota included), audit
void AddIdentityCommands(CLI::App& app, GlobalOptions& g, Action* action);
void AddQueueCommand(CLI::App& app, GlobalOptions& g, Action* action);  // queue
void AddModelRegistryCommands(CLI::App& app, GlobalOptions& g,
                              Action* action);                              // models ls|show|register|promote|archive
void AddPipelineCommands(CLI::App& app, GlobalOptions& g, Action* action);  // pipeline submit ls show cancel retry
void AddScheduleCommands(CLI::App& app, GlobalOptions& g, Action* action);  // schedule create|ls|show|...

// Sharing display (queue_commands.cc). "in 12m", "now", or "-" when the estimate is 0 (unknown).
std::string StartEstimate(int64_t estimated_start_ms, int64_t now_ms);
// "gpu=h100 8/16, cluster 4/-": each quota as guaranteed/max ("-": no limit); "-" when none.
std::string QuotaText(const pb::TeamRecord& team);
// The team's fair-share weight ("1" when unset).
std::string WeightText(const pb::TeamRecord& team);
// `anneal show`'s scheduling lines (label, value): limits, queue position and wait reason of a pending job,
// preemptions and the preemption reason.
std::vector<std::pair<std::string, std::string>> SchedulingLines(const pb::JobRecord& job, int64_t now_ms);

// "90m", "24h", "30d", "45s" or plain seconds -> milliseconds; INVALID_ARGUMENT naming the text otherwise.
StatusOr<int64_t> ParseDurationMs(std::string_view text);

// Follows a job until it ends (shared by `watch` and `submit --follow`): exit 0 on SUCCEEDED, 1 otherwise.
int WatchJob(const GlobalOptions& g, const std::string& job_id);

}  // namespace anneal::cli
