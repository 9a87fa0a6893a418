// A local cluster for one machine: `anneal up` starts anneal-coordinator and N anneal-agent processes found
// next to the anneal binary, daemonized (own session, logs in <state>/logs/), and records them in
// <state>/cluster.yaml: the cluster's shape (agents, slots), its address, and each daemon's pid,
// program, log and full command line. `anneal down` stops what that file lists (SIGTERM, then SIGKILL after a
// grace period).
//
// `anneal up` heals a cluster that lost daemons, on the same state:
//
//   cluster.yaml             request                        UpLocalCluster
//   ───────────────────────  ─────────────────────────────  ─────────────────────────────────────────────────
//   none, or no daemon runs  any                            start everything: a fresh port, the same
//                                                           state dir (unset --agents/--slots: the recorded
//                                                           shape, else 1 agent x default_slots)  kStarted
//   every daemon runs        agrees with it (or unset)      nothing to do                          kAlreadyRunning
//   some daemons gone        agrees with it (or unset)      restart exactly those, each with its recorded
//                                                           command line (same port, RocksDB dir,
//                                                           node id, work dir); running ones untouched  kHealed
//   some daemon runs         --agents/--slots/--port differ INVALID_ARGUMENT naming the request and the cluster
//
// Running agents keep their tasks, and a restarted coordinator re-adopts them from the agents' registrations
// (docs/coordinator.md, "After a coordinator restart"); a restarted agent re-adopts its own ranks from its work
// dir (docs/agent.md, "Re-adoption after an agent restart"). So a job survives the heal with no failed attempt.
//
// Node identity: a fresh start writes <state>/join-token (0600, once; kept across ups) and passes it to the
// coordinator as --bootstrap-join-token-file (stored as a join token only on a fresh coordinator store) and to
// every agent as --join-token-file. An agent joins with it once and then proves itself with the node
// credential in its work dir, so a healed (restarted) agent re-registers without the token.
//
// The daemons' command lines are built in CoordinatorArgv / AgentArgv only, so a flag change there is a
// one-line edit.
//
// Thread-safety: main thread only (fork/exec, signals).
// Ownership: the started daemons outlive this process; cluster.yaml is the record of them.
//
// Example:
//   LocalClusterOptions o{.agents = 2, .slots = 2, .state_dir = home};
//   ASSIGN_OR_RETURN(UpResult up, UpLocalCluster(o, std::cerr));
//   if (up.outcome == UpOutcome::kHealed) for (auto& name : up.restarted) std::cout << "restarted " << name;
//   ...
//   RETURN_IF_ERROR(StopLocalCluster(home, std::chrono::seconds(10), std::cout));
#pragma once

#include <chrono>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cli/daemons.h"
#include "common/status.h"

namespace anneal::cli {

struct LocalClusterOptions {
  std::optional<int> agents;  // unset: the recorded cluster's, else 1
  std::optional<int> slots;   // 0: no --slots flag (the agent counts its GPUs); unset: recorded, else default_slots
  int default_slots = 2;
  std::string state_dir;    // ~/.anneal by default
  std::optional<int> port;  // coordinator port; unset or 0: a free one (a heal keeps the recorded one)
  std::chrono::milliseconds wait{30000};
  std::string bin_dir;  // where anneal-coordinator / anneal-agent are; default: next to this binary
  // The client config (<anneal home>/config): a fresh coordinator writes its cluster admin's credential there
  // (--bootstrap-admin-config), and `anneal up` reads the token from it to wait for the agents.
  std::string client_config;
  // The local cluster's path policy (coordinator.yaml): every team may use the anneal home, the directory
  // `anneal up` runs in and these roots (--allow-root) for models, datasets and outputs.
  std::vector<std::string> allow_roots;
  // Extra coordinator settings (--coordinator-set KEY=VALUE): written into coordinator.yaml as `KEY: VALUE`;
  // the coordinator refuses an unknown key or a bad value (coordinator/config.h lists them).
  std::vector<std::string> coordinator_settings;
  // Extra agent settings (--agent-set KEY=VALUE): written into <state>/agent.yaml, which every agent reads
  // (--config); the agent refuses an unknown key (agent/config.h), e.g. metrics_bind=127.0.0.1:0.
  std::vector<std::string> agent_settings;
};

struct LocalCluster {
  std::string coordinator;  // tcp://127.0.0.1:PORT
  std::string server_key;   // the coordinator's CurveZMQ public key, read from <state dir>/coordinator/curve.pub
  int agents = 0;
  int slots = 0;                         // 0: one rank per GPU
  std::vector<DaemonProcess> processes;  // coordinator first, then agents local-0, local-1, ...
};

enum class UpOutcome {
  kStarted,         // nothing ran: every daemon was started
  kAlreadyRunning,  // every recorded daemon runs: nothing was started
  kHealed,          // the recorded daemons that were gone were restarted
};

struct UpResult {
  UpOutcome outcome = UpOutcome::kStarted;
  LocalCluster cluster;                // as recorded in cluster.yaml now
  std::vector<std::string> restarted;  // kHealed: the daemons started by this call ("coordinator", "agent local-1")
};

// The directory of the running anneal binary.
std::string SelfDir();

// `client_config`: where a fresh coordinator writes the cluster admin's client config (the credential is
// never on a command line or in cluster.yaml). join_token_file: the bootstrap join token (flag omitted when
// empty).
std::vector<std::string> CoordinatorArgv(const std::string& program, const std::string& bind,
                                         const std::string& state_dir, const std::string& client_config,
                                         const std::string& config_file, const std::string& join_token_file = "");
// slots 0: no --slots flag, so the agent schedules one rank per GPU it finds.
// `server_key_file`: the coordinator's public key file the agent pins (--server-key-file).
// `index`: the agent's number on this host; each gets its own 100 rendezvous ports (29500 + 100 * index ...), since
// every local agent advertises the same address and two jobs' rank 0 must not share a port.
std::vector<std::string> AgentArgv(const std::string& program, const std::string& coordinator, const std::string& node,
                                   const std::string& work_dir, int slots, const std::string& server_key_file,
                                   const std::string& join_token_file = "", int index = 0,
                                   const std::string& config_file = "");
// <state_dir>/join-token, created (0600, a fresh "anj_" token) when missing; its path.
StatusOr<std::string> EnsureLocalJoinToken(const std::string& state_dir);

// GPUs the NVIDIA driver lists (/proc/driver/nvidia/gpus); 0 without the driver.
int NvidiaGpuCount();

// Brings the local cluster of options.state_dir up (table above) and waits until every agent that had to
// (re-)register did (ListNodes: UP or DRAINING, registered after this call began). Errors: INVALID_ARGUMENT
// for bad options or a request that contradicts the running cluster; FAILED_PRECONDITION when a daemon binary
// is missing; ALREADY_EXISTS when live daemons are recorded by an older anneal (no command lines to reuse);
// UNAVAILABLE / DEADLINE_EXCEEDED when a daemon exits during start-up or the agents do not register in time,
// with the tail of the daemon logs. On such a failure the daemons this call started are stopped again (the
// ones that were running are left alone).
StatusOr<UpResult> UpLocalCluster(const LocalClusterOptions& options, std::ostream& progress);

// Stops the processes recorded in <state_dir>/cluster.yaml and removes the file. NOT_FOUND when there is none.
Status StopLocalCluster(const std::string& state_dir, std::chrono::milliseconds grace, std::ostream& progress);

}  // namespace anneal::cli
