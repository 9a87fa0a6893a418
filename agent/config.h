// AgentConfig: everything anneal-agent is told at start-up, from flags and an optional YAML file.
//
// Flags win over the file; the file wins over defaults. The YAML file uses the flag names without dashes
// (underscores or dashes both accepted), labels as a map:
//
//   coordinator: tcp://10.0.0.1:7070
//   node: gpu-07
//   work_dir: /var/lib/anneal
//   slots: 8                 # CPU nodes only; GPU nodes count their GPUs
//   labels: {rack: r3, gpu: h100}
//   heartbeat_ms: 2000
//   join_token_file: /etc/anneal/join-token   # a new node's join token (never on the command line)
//   server_key_file: /etc/anneal/coordinator.pub   # or server_key: <Z85>; insecure_plaintext: true for none
//   max_message_bytes: 67108864                    # largest frame accepted from the coordinator
//   spool_max_bytes: 268435456                     # on-disk spool of unacknowledged reports (agent/spool.h)
//   metrics_bind: 0.0.0.0:9401                     # GET /metrics for Prometheus (default: off; docs/agent.md)
//   metrics_token_file: /etc/anneal/metrics-token  # its bearer token (required with metrics_bind)
//   transfer_port: 7072                            # file server for other nodes and `anneal fetch` (0: any port)
//   artifact_cache_max_bytes: 214748364800         # staged inputs kept in <work_dir>/artifacts (0: no limit)
//   transfer_timeout_ms: 30000                     # a copy's request with no reply this long is sent again
//
// Transport: the coordinator's CurveZMQ public key is pinned from --server-key, else --server-key-file (read at
// start; an unreadable or malformed file is an error naming it). Without a key the agent refuses to start unless
// --insecure-plaintext is given.
//   run_as: {default: nobody, teams: {nlp: "2001:2001"}}   # an agent running as root: the ranks' users
//   rank_env_allow: [HF_HUB_OFFLINE, "WANDB_*"]            # agent variables ranks inherit beyond the built-ins
//
// Thread-safety: plain value type. ParseAgentFlags prints nothing; the caller prints help/version/errors.
//
// Example:
//   auto parsed = anneal::agent::ParseAgentFlags(argc, argv);
//   if (!parsed.ok()) { std::cerr << parsed.status().message() << "\n"; return 2; }
//   if (parsed->exit_now) { std::cout << parsed->output; return 0; }   // --help / --version
//   RunAgent(parsed->config);
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agent/rank_identity.h"
#include "common/status.h"

namespace anneal::agent {

struct AgentConfig {
  std::string coordinator = "tcp://127.0.0.1:7070";
  std::string node;  // default: the hostname
  std::string work_dir = "/var/lib/anneal";
  uint32_t slots = 0;  // 0 = count GPUs (NVML); CPU nodes declare their slots
  std::map<std::string, std::string> labels;
  std::string address;  // default: the hostname
  std::string trainer;  // default: anneal-train next to the anneal-agent binary
  uint32_t heartbeat_ms = 2000;
  std::string log_level = "info";
  bool keep_tasks_on_exit = false;
  // No PR_SET_PDEATHSIG on ranks: they outlive an agent crash and the restarted agent re-adopts them (anneal up's
  // local cluster). Implied by keep_tasks_on_exit. Default: ranks die with their agent.
  bool ranks_survive_agent = false;
  uint32_t rendezvous_port_begin = 29500;
  uint32_t rendezvous_port_end = 29999;
  uint64_t log_max_bytes = 64ull << 20;   // a rank log is rotated (rank-<r>.log.1) past this size
  uint32_t shutdown_grace_ms = 10000;     // SIGTERM -> SIGKILL when the agent stops its ranks on exit
  uint64_t min_free_bytes = 64ull << 20;  // pre-launch check on the output and work directories
  uint32_t log_retention_hours = 168;     // rank logs of tasks ended longer ago are deleted (0: keep)
  // A launch whose output directory is locked by an older epoch of the same job (a stale attempt being stopped, or
  // on a host cut off) waits this long for the lock before it fails (agent/lifecycle.h, AWAITING_LOCK; 0: no wait).
  uint64_t output_lock_wait_ms = 15ull * 60 * 1000;
  // ---- node identity: a new node joins with this token; afterwards <work_dir>/node-credential proves it
  std::string join_token_file;
  // ---- transport and limits
  std::string server_key;       // the coordinator's Z85 CurveZMQ public key (from --server-key or the file)
  std::string server_key_file;  // where server_key was read from, if a file
  bool insecure_plaintext = false;
  int64_t max_message_bytes = 64ll << 20;   // ZMQ_MAXMSGSIZE of the DEALER
  uint64_t spool_max_bytes = 256ull << 20;  // spool limit: past it metric batches are dropped (agent/spool.h)
  RunAsConfig run_as;                       // an agent running as root starts a team's ranks as run_as's user
  std::vector<std::string> rank_env_allow;  // extra agent variables (or "PREFIX_*") ranks inherit
  // ---- metrics endpoint (agent/metrics_service.h): off while metrics_bind is empty
  std::string metrics_bind;        // HOST:PORT; port 0 picks one (written to <work_dir>/metrics-address)
  std::string metrics_token_file;  // the bearer token every request must carry (required with metrics_bind)
  // ---- transfers (no shared filesystem; agent/stager.h, transfer/server.h): always served, on --address
  uint16_t transfer_port = 0;                        // 0: an ephemeral port (reported at registration)
  uint64_t artifact_cache_max_bytes = 200ull << 30;  // the artifact store is pruned down to this (0: never)
  // A staging or replica read with no reply this long is sent again on a fresh socket from the last byte written
  // (up to 5 times in a row, then the copy fails: transfer/client.h FetchOptions::timeout_ms). At least 100.
  int64_t transfer_timeout_ms = 30000;
};

struct ParsedFlags {
  AgentConfig config;
  bool exit_now = false;  // --help or --version: print `output` and exit 0
  std::string output;
  // --verify-artifacts: hash every file of <work dir>/artifacts again, remove those that no longer match, report
  // and exit (main.cc; 0 when none was damaged) instead of running the agent.
  bool verify_artifacts = false;
};

// Parses argv (argv[0] = the program path, used for the default trainer path) and the --config file.
// Errors name the flag or the file and key.
StatusOr<ParsedFlags> ParseAgentFlags(int argc, const char* const* argv);

// Loads the YAML file into `config`, skipping keys named in `explicit_flags` (given on the command line).
Status ApplyConfigFile(const std::string& path, const std::map<std::string, bool>& explicit_flags, AgentConfig* config);

// Reads server_key_file into server_key when no key was given, checks the key; INVALID_ARGUMENT when there is no
// key and no insecure_plaintext. (Called by ParseAgentFlags.)
Status ResolveServerKey(AgentConfig* config);

// "k=v" -> (k, v); INVALID_ARGUMENT naming the label otherwise.
Status ParseLabel(const std::string& text, std::map<std::string, std::string>* labels);

}  // namespace anneal::agent
