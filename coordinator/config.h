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
//   path_policy:                   # required: where each team's jobs may read and write (jobspec/path_policy.h)
//     default: {models: [/shared/models], datasets: [/shared/data], outputs: ["/data/{team}/outputs"]}
//     teams: {nlp: {models: [/shared/models, /nlp/models]}}
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
  std::string token;
  int64_t heartbeat_interval_ms = 2000;
  int64_t heartbeat_timeout_ms = 10000;
  int64_t stop_timeout_ms = 60000;
  int64_t log_fetch_timeout_ms = 5000;
  std::string log_level = "info";
  std::string http_bind;
  // Allowed roots per team for models, datasets and outputs, checked at submit. anneal-coordinator refuses to
  // start without one (`anneal up` writes one for its local cluster); allow everything with roots [/].
  std::optional<jobspec::PathPolicy> path_policy;
};

// Overwrites the fields the file sets.
Status LoadConfigFile(const std::string& path, CoordinatorConfig* config);
// Cross-field checks (timeouts positive, interval below the timeout).
Status ValidateConfig(const CoordinatorConfig& config);

}  // namespace anneal::coordinator
