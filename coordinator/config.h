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
//   log_fetch_timeout_ms: 5000
//   log_level: info
//   http_bind: 127.0.0.1:7071      # optional; empty = no HTTP endpoint
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
  // On a fresh state directory the coordinator creates the cluster admin and writes its client config
  // (coordinator address + API token, mode 0600) here. Empty: no bootstrap (the cluster stays unusable until
  // started once with it).
  std::string bootstrap_admin_config;
  uint64_t audit_max_records = 1'000'000;
  int64_t heartbeat_interval_ms = 2000;
  int64_t heartbeat_timeout_ms = 10000;
  int64_t stop_timeout_ms = 60000;
  int64_t log_fetch_timeout_ms = 5000;
  std::string log_level = "info";
  std::string http_bind;
};

// Overwrites the fields the file sets.
Status LoadConfigFile(const std::string& path, CoordinatorConfig* config);
// Cross-field checks (timeouts positive, interval below the timeout).
Status ValidateConfig(const CoordinatorConfig& config);

}  // namespace anneal::coordinator
