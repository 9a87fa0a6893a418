// CoordinatorConfig: everything anneal-coordinator is configured with, from defaults, a YAML file (--config)
// and flags, in that order of precedence (a flag beats the file, the file beats the default).
//
// YAML keys are the flag names with underscores:
//   bind: tcp://0.0.0.0:7070
//   state_dir: /var/lib/anneal/coordinator
//   bootstrap_admin_config: /root/.anneal/config   # fresh state only: the cluster admin's client config
//   audit_max_records: 1000000
//   heartbeat_interval_ms: 2000
//   heartbeat_timeout_ms: 10000
//   stop_timeout_ms: 60000
//   reconnect_grace_ms: 60000      # a DOWN node's running tasks are kept this long for it to reconnect
//   log_fetch_timeout_ms: 5000
//   log_level: info
//   http_bind: 127.0.0.1:7071      # optional; empty = no HTTP endpoint
//   # agent identity and bounds (docs/coordinator.md "Node identity"):
//   join_token_ttl_ms: 86400000    # a join token's lifetime when `anneal node join-token create` names none
//   bootstrap_join_token_file: ""  # fresh store only: import the token in this file, or create it (0600)
//   max_nodes: 10000               # registered nodes; a new node beyond is refused
//   max_slots_per_node: 1024
//   max_gpus_per_node: 64
//   max_labels_per_node: 64
//   max_label_length: 256          # bytes of a label key or value
//   max_node_id_length: 128        # node ids: letters, digits, '.', '_', '-'
//   max_inventory_string_length: 1024  # hostname, address, work dir, GPU name and uuid, agent version
//   max_seq_ahead: 1000000         # a report's seq may be at most this far past the node's last applied one
// Transport and limits (docs/coordinator.md, "Security and limits"):
//   insecure_plaintext: false      # true: no CurveZMQ (logged as a warning at start); default: Curve on
//   max_message_bytes: 16777216    # ZMQ_MAXMSGSIZE of the ROUTER: a larger frame closes its peer's connection
//   max_spec_bytes: 1048576        # a submitted spec (with its overrides)
//   max_name_bytes: 256            # job names, job and node ids, labels
//   max_watchers_per_peer: 16      # WatchJob long polls waiting per connection
//   max_watchers_total: 4096       # ... in total
//   max_log_fetches_per_peer: 8    # GetLogs waiting for an agent per connection
//   http_public_metrics: false     # true: GET /metrics without a token (everything else needs one)
//   http_max_connections: 64       # concurrent HTTP connections; more get 503
//   http_max_request_bytes: 16384  # request line + headers + body; larger gets 431/413
//   http_max_submit_bytes: 1048576 # body of POST /api/v1/jobs, /pipelines, /schedules; larger gets 413
//   http_max_streams: 32           # SSE streams (GET /api/v1/jobs/{id}/stream) open at once; more get 429;
//                                  # below http_max_connections, so streams never take every connection
//   http_max_streams_per_token: 4  # ... per bearer token
//   path_policy:                   # required: where each team's jobs may read and write (jobspec/path_policy.h)
//     default: {models: [/shared/models], datasets: [/shared/data], outputs: ["/data/{team}/outputs"]}
//     teams: {nlp: {models: [/shared/models, /nlp/models]}}
// Sharing (docs/coordinator.md, "Scheduling"):
//   preemption: true               # teams within their guarantee reclaim borrowed slots (checkpoint first)
//   preemption_grace_ms: 120000    # PreemptTask -> the gang is killed when it has not stopped by then
//   min_runtime_ms: 600000         # a job younger than this is never a preemption victim
//   usage_half_life_ms: 604800000  # fair-share usage decay (7 days)
//   share_horizon_s: 3600          # weight of slots held now against decayed usage in the fair-share order
//   backfill: true                 # EASY backfill; false: the first job that cannot start blocks the queue
//   schedule_interval_ms: 1000     # a scheduling pass at least this often while any job is active
// Artifacts without a shared filesystem (docs/transfers.md):
//   shared_filesystem: true        # false: inputs staged to each node, checkpoints replicated, outputs fetched
//   artifact_source: ""            # the node whose disk holds jobs' inputs when a spec names no stage_from
//   checkpoint_replicas: 1         # verified copies on other nodes before a checkpoint counts (0: none)
//   transfer_ticket_ttl_ms: 21600000  # a transfer ticket's lifetime (6 h: long enough for a large model)
// Schedules (docs/pipelines.md, "Schedules"):
//   schedule_misfire_grace_ms: 60000  # a cron fire handled later than this counts as missed (--missed policy)
// Unknown keys and wrong types are errors naming the file, line and key.
//
// Thread-safety: value type; LoadConfigFile is a pure function of the file.
//
// Example:
//   CoordinatorConfig cfg;
//   RETURN_IF_ERROR(LoadConfigFile("/etc/anneal/coordinator.yaml", &cfg));
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "jobspec/path_policy.h"

namespace anneal::coordinator {

struct CoordinatorConfig {
  std::string bind = "tcp://127.0.0.1:7070";
  std::string state_dir = "./anneal-state";
  // On a fresh state directory the coordinator creates the cluster admin and writes its client config
  // (coordinator address + API token, mode 0600) here. Empty: no bootstrap (the cluster stays unusable until
  // started once with it).
  std::string bootstrap_admin_config;
  uint64_t audit_max_records = 1'000'000;
  int64_t heartbeat_interval_ms = 2000;
  int64_t heartbeat_timeout_ms = 10000;
  int64_t stop_timeout_ms = 60000;
  int64_t reconnect_grace_ms = 60000;
  int64_t log_fetch_timeout_ms = 5000;
  std::string log_level = "info";
  std::string http_bind;
  // ---- agent identity and bounds (defaults: coordinator/node_registry.h AgentLimits)
  int64_t join_token_ttl_ms = 24LL * 3600 * 1000;
  std::string bootstrap_join_token_file;
  int64_t max_nodes = 10000;
  int64_t max_slots_per_node = 1024;
  int64_t max_gpus_per_node = 64;
  int64_t max_labels_per_node = 64;
  int64_t max_label_length = 256;
  int64_t max_node_id_length = 128;
  int64_t max_inventory_string_length = 1024;
  int64_t max_seq_ahead = 1000000;
  // ---- transport and limits
  bool insecure_plaintext = false;
  int64_t max_message_bytes = 16 << 20;
  int64_t max_spec_bytes = 1 << 20;
  int64_t max_name_bytes = 256;
  int64_t max_watchers_per_peer = 16;
  int64_t max_watchers_total = 4096;
  int64_t max_log_fetches_per_peer = 8;
  bool http_public_metrics = false;
  int64_t http_max_connections = 64;
  int64_t http_max_request_bytes = 16384;
  int64_t http_max_submit_bytes = 1 << 20;
  int64_t http_max_streams = 32;
  int64_t http_max_streams_per_token = 4;
  // Allowed roots per team for models, datasets and outputs, checked at submit. anneal-coordinator refuses to
  // start without one (`anneal up` writes one for its local cluster); allow everything with roots [/].
  std::optional<jobspec::PathPolicy> path_policy;
  // ---- sharing
  bool preemption = true;
  int64_t preemption_grace_ms = 120000;
  int64_t min_runtime_ms = 600000;
  int64_t usage_half_life_ms = 7LL * 24 * 3600 * 1000;
  double share_horizon_s = 3600;
  bool backfill = true;
  int64_t schedule_interval_ms = 1000;
  // ---- artifacts without a shared filesystem
  bool shared_filesystem = true;
  std::string artifact_source;
  int64_t checkpoint_replicas = 1;
  int64_t transfer_ticket_ttl_ms = 6LL * 3600 * 1000;
  // ---- schedules
  int64_t schedule_misfire_grace_ms = 60000;
};

// Overwrites the fields the file sets.
Status LoadConfigFile(const std::string& path, CoordinatorConfig* config);
// Cross-field checks (timeouts positive, interval below the timeout, limits positive).
Status ValidateConfig(const CoordinatorConfig& config);

}  // namespace anneal::coordinator
