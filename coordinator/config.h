// CoordinatorConfig: everything anneal-coordinator is configured with, from defaults, a YAML file (--config)
// and flags, in that order of precedence (a flag beats the file, the file beats the default).
//
// YAML keys are the flag names with underscores:
//   bind: tcp://0.0.0.0:7070
//   state_dir: /var/lib/anneal/coordinator
//   token: s3cret
//   heartbeat_interval_ms: 2000
//   heartbeat_timeout_ms: 10000
//   stop_timeout_ms: 60000
//   log_fetch_timeout_ms: 5000
//   log_level: info
//   http_bind: 127.0.0.1:7071      # optional; empty = no HTTP endpoint
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
// Unknown keys and wrong types are errors naming the file, line and key.
//
// Thread-safety: value type; LoadConfigFile is a pure function of the file.
//
// Example:
//   CoordinatorConfig cfg;
//   RETURN_IF_ERROR(LoadConfigFile("/etc/anneal/coordinator.yaml", &cfg));
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace anneal::coordinator {

struct CoordinatorConfig {
  std::string bind = "tcp://127.0.0.1:7070";
  std::string state_dir = "./anneal-state";
  std::string token;
  int64_t heartbeat_interval_ms = 2000;
  int64_t heartbeat_timeout_ms = 10000;
  int64_t stop_timeout_ms = 60000;
  int64_t log_fetch_timeout_ms = 5000;
  std::string log_level = "info";
  std::string http_bind;
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
};

// Overwrites the fields the file sets.
Status LoadConfigFile(const std::string& path, CoordinatorConfig* config);
// Cross-field checks (timeouts positive, interval below the timeout, limits positive).
Status ValidateConfig(const CoordinatorConfig& config);

}  // namespace anneal::coordinator
