#include "coordinator/config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <fstream>

namespace anneal::coordinator {
namespace {

template <typename T>
Status Read(const YAML::Node& value, const std::string& where, T* out) {
  try {
    *out = value.as<T>();
  } catch (const YAML::Exception&) {
    return InvalidArgumentError(fmt::format("{}: expected {}", where,
                                            std::is_same_v<T, std::string> ? "a string"
                                            : std::is_same_v<T, bool>      ? "true or false"
                                                                           : "an integer"));
  }
  return Status::Ok();
}

}  // namespace

Status LoadConfigFile(const std::string& path, CoordinatorConfig* config) {
  std::ifstream in(path);
  if (!in) return NotFoundError(fmt::format("config file {} cannot be read", path));
  YAML::Node root;
  try {
    root = YAML::Load(in);
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(fmt::format("{}:{}: invalid YAML: {}", path, e.mark.line + 1, e.msg));
  }
  if (root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return InvalidArgumentError(fmt::format("{}: expected a mapping of settings", path));
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    const std::string where = fmt::format("{}:{}: key '{}'", path, item.first.Mark().line + 1, key);
    const YAML::Node& v = item.second;
    if (key == "bind")
      RETURN_IF_ERROR(Read(v, where, &config->bind));
    else if (key == "state_dir")
      RETURN_IF_ERROR(Read(v, where, &config->state_dir));
    else if (key == "bootstrap_admin_config")
      RETURN_IF_ERROR(Read(v, where, &config->bootstrap_admin_config));
    else if (key == "audit_max_records")
      RETURN_IF_ERROR(Read(v, where, &config->audit_max_records));
    else if (key == "token") {
      return InvalidArgumentError(
          fmt::format("{}: the shared admin token was replaced by users and API tokens: "
                      "remove it and start once with bootstrap_admin_config (see "
                      "docs/coordinator.md, \"Users, teams and tokens\")",
                      where));
    } else if (key == "heartbeat_interval_ms")
      RETURN_IF_ERROR(Read(v, where, &config->heartbeat_interval_ms));
    else if (key == "heartbeat_timeout_ms")
      RETURN_IF_ERROR(Read(v, where, &config->heartbeat_timeout_ms));
    else if (key == "stop_timeout_ms")
      RETURN_IF_ERROR(Read(v, where, &config->stop_timeout_ms));
    else if (key == "reconnect_grace_ms")
      RETURN_IF_ERROR(Read(v, where, &config->reconnect_grace_ms));
    else if (key == "log_fetch_timeout_ms")
      RETURN_IF_ERROR(Read(v, where, &config->log_fetch_timeout_ms));
    else if (key == "log_level")
      RETURN_IF_ERROR(Read(v, where, &config->log_level));
    else if (key == "http_bind")
      RETURN_IF_ERROR(Read(v, where, &config->http_bind));
    // ---- agent identity and bounds
    else if (key == "join_token_ttl_ms")
      RETURN_IF_ERROR(Read(v, where, &config->join_token_ttl_ms));
    else if (key == "bootstrap_join_token_file")
      RETURN_IF_ERROR(Read(v, where, &config->bootstrap_join_token_file));
    else if (key == "max_nodes")
      RETURN_IF_ERROR(Read(v, where, &config->max_nodes));
    else if (key == "max_slots_per_node")
      RETURN_IF_ERROR(Read(v, where, &config->max_slots_per_node));
    else if (key == "max_gpus_per_node")
      RETURN_IF_ERROR(Read(v, where, &config->max_gpus_per_node));
    else if (key == "max_labels_per_node")
      RETURN_IF_ERROR(Read(v, where, &config->max_labels_per_node));
    else if (key == "max_label_length")
      RETURN_IF_ERROR(Read(v, where, &config->max_label_length));
    else if (key == "max_node_id_length")
      RETURN_IF_ERROR(Read(v, where, &config->max_node_id_length));
    else if (key == "max_inventory_string_length") {
      RETURN_IF_ERROR(Read(v, where, &config->max_inventory_string_length));
    } else if (key == "max_seq_ahead")
      RETURN_IF_ERROR(Read(v, where, &config->max_seq_ahead));
    // ---- transport and limits
    else if (key == "insecure_plaintext")
      RETURN_IF_ERROR(Read(v, where, &config->insecure_plaintext));
    else if (key == "max_message_bytes")
      RETURN_IF_ERROR(Read(v, where, &config->max_message_bytes));
    else if (key == "max_spec_bytes")
      RETURN_IF_ERROR(Read(v, where, &config->max_spec_bytes));
    else if (key == "max_name_bytes")
      RETURN_IF_ERROR(Read(v, where, &config->max_name_bytes));
    else if (key == "max_watchers_per_peer")
      RETURN_IF_ERROR(Read(v, where, &config->max_watchers_per_peer));
    else if (key == "max_watchers_total")
      RETURN_IF_ERROR(Read(v, where, &config->max_watchers_total));
    else if (key == "max_log_fetches_per_peer")
      RETURN_IF_ERROR(Read(v, where, &config->max_log_fetches_per_peer));
    else if (key == "http_public_metrics")
      RETURN_IF_ERROR(Read(v, where, &config->http_public_metrics));
    else if (key == "http_max_connections")
      RETURN_IF_ERROR(Read(v, where, &config->http_max_connections));
    else if (key == "http_max_request_bytes")
      RETURN_IF_ERROR(Read(v, where, &config->http_max_request_bytes));
    else if (key == "http_max_submit_bytes")
      RETURN_IF_ERROR(Read(v, where, &config->http_max_submit_bytes));
    else if (key == "http_max_streams")
      RETURN_IF_ERROR(Read(v, where, &config->http_max_streams));
    else if (key == "http_max_streams_per_token")
      RETURN_IF_ERROR(Read(v, where, &config->http_max_streams_per_token));
    else if (key == "path_policy") {
      auto policy = jobspec::ParsePathPolicy(v, fmt::format("{}:{}", path, item.first.Mark().line + 1));
      if (!policy.ok()) return policy.status();
      config->path_policy = std::move(*policy);
    }
    // ---- sharing
    else if (key == "preemption")
      RETURN_IF_ERROR(Read(v, where, &config->preemption));
    else if (key == "preemption_grace_ms")
      RETURN_IF_ERROR(Read(v, where, &config->preemption_grace_ms));
    else if (key == "min_runtime_ms")
      RETURN_IF_ERROR(Read(v, where, &config->min_runtime_ms));
    else if (key == "usage_half_life_ms")
      RETURN_IF_ERROR(Read(v, where, &config->usage_half_life_ms));
    else if (key == "share_horizon_s")
      RETURN_IF_ERROR(Read(v, where, &config->share_horizon_s));
    else if (key == "backfill")
      RETURN_IF_ERROR(Read(v, where, &config->backfill));
    else if (key == "schedule_interval_ms")
      RETURN_IF_ERROR(Read(v, where, &config->schedule_interval_ms));
    else if (key == "schedule_misfire_grace_ms")
      RETURN_IF_ERROR(Read(v, where, &config->schedule_misfire_grace_ms));
    // ---- artifacts
    else if (key == "shared_filesystem")
      RETURN_IF_ERROR(Read(v, where, &config->shared_filesystem));
    else if (key == "artifact_source")
      RETURN_IF_ERROR(Read(v, where, &config->artifact_source));
    else if (key == "checkpoint_replicas")
      RETURN_IF_ERROR(Read(v, where, &config->checkpoint_replicas));
    else if (key == "transfer_ticket_ttl_ms")
      RETURN_IF_ERROR(Read(v, where, &config->transfer_ticket_ttl_ms));
    else {
      return InvalidArgumentError(fmt::format(
          "{}: unknown setting (known: bind, state_dir, bootstrap_admin_config, audit_max_records, "
          "heartbeat_interval_ms, heartbeat_timeout_ms, stop_timeout_ms, reconnect_grace_ms, log_fetch_timeout_ms, "
          "log_level, "
          "http_bind, "
          "join_token_ttl_ms, bootstrap_join_token_file, max_nodes, max_slots_per_node, max_gpus_per_node, "
          "max_labels_per_node, max_label_length, max_node_id_length, max_inventory_string_length, max_seq_ahead, "
          "insecure_plaintext, max_message_bytes, max_spec_bytes, max_name_bytes, max_watchers_per_peer, "
          "max_watchers_total, max_log_fetches_per_peer, http_public_metrics, http_max_connections, "
          "http_max_request_bytes, http_max_submit_bytes, http_max_streams, http_max_streams_per_token, path_policy, "
          "preemption, preemption_grace_ms, min_runtime_ms, "
          "usage_half_life_ms, share_horizon_s, backfill, schedule_interval_ms, schedule_misfire_grace_ms, "
          "shared_filesystem, artifact_source, checkpoint_replicas, transfer_ticket_ttl_ms)",
          where));
    }
  }
  return Status::Ok();
}

Status ValidateConfig(const CoordinatorConfig& c) {
  if (c.heartbeat_interval_ms <= 0 || c.heartbeat_timeout_ms <= 0 || c.stop_timeout_ms <= 0 ||
      c.log_fetch_timeout_ms <= 0) {
    return InvalidArgumentError(
        "heartbeat interval, heartbeat timeout, stop timeout and log fetch timeout must be "
        "positive milliseconds");
  }
  if (c.reconnect_grace_ms < 0) {
    return InvalidArgumentError(fmt::format(
        "reconnect_grace_ms ({}) must be 0 (a DOWN node's tasks are lost at once) or positive", c.reconnect_grace_ms));
  }
  if (c.checkpoint_replicas < 0 || c.checkpoint_replicas > 8) {
    return InvalidArgumentError(
        fmt::format("checkpoint_replicas ({}) must be between 0 and 8 (copies on other nodes)", c.checkpoint_replicas));
  }
  if (c.transfer_ticket_ttl_ms < 60000) {
    return InvalidArgumentError(fmt::format(
        "transfer_ticket_ttl_ms ({}) must be at least 60000: a ticket must outlive a transfer's first request",
        c.transfer_ticket_ttl_ms));
  }
  if (c.heartbeat_interval_ms >= c.heartbeat_timeout_ms) {
    return InvalidArgumentError(fmt::format("heartbeat_interval_ms ({}) must be below heartbeat_timeout_ms ({})",
                                            c.heartbeat_interval_ms, c.heartbeat_timeout_ms));
  }
  if (c.state_dir.empty()) return InvalidArgumentError("state_dir must not be empty");
  // ---- agent identity and bounds: each a positive count that fits the 32-bit fields it bounds
  const std::pair<const char*, int64_t> bounds[] = {{"join_token_ttl_ms", c.join_token_ttl_ms},
                                                    {"max_nodes", c.max_nodes},
                                                    {"max_slots_per_node", c.max_slots_per_node},
                                                    {"max_gpus_per_node", c.max_gpus_per_node},
                                                    {"max_labels_per_node", c.max_labels_per_node},
                                                    {"max_label_length", c.max_label_length},
                                                    {"max_node_id_length", c.max_node_id_length},
                                                    {"max_inventory_string_length", c.max_inventory_string_length},
                                                    {"max_seq_ahead", c.max_seq_ahead}};
  for (const auto& [name, value] : bounds) {
    if (value <= 0) return InvalidArgumentError(fmt::format("{} must be positive, got {}", name, value));
  }
  for (int i = 1; i < 8; ++i) {  // the counts and lengths, not the TTL or the seq window
    if (bounds[i].second > 0x7fffffff) {
      return InvalidArgumentError(fmt::format("{} must be below 2^31, got {}", bounds[i].first, bounds[i].second));
    }
  }
  if (c.max_nodes * c.max_slots_per_node > 0x7fffffff || c.max_slots_per_node > 65536) {
    return InvalidArgumentError(
        fmt::format("max_nodes x max_slots_per_node ({} x {}) must stay below 2^31 and "
                    "max_slots_per_node at most 65536",
                    c.max_nodes, c.max_slots_per_node));
  }
  // ---- transport and limits
  const std::pair<const char*, int64_t> limits[] = {{"max_message_bytes", c.max_message_bytes},
                                                    {"max_spec_bytes", c.max_spec_bytes},
                                                    {"max_name_bytes", c.max_name_bytes},
                                                    {"max_watchers_per_peer", c.max_watchers_per_peer},
                                                    {"max_watchers_total", c.max_watchers_total},
                                                    {"max_log_fetches_per_peer", c.max_log_fetches_per_peer},
                                                    {"http_max_connections", c.http_max_connections},
                                                    {"http_max_request_bytes", c.http_max_request_bytes},
                                                    {"http_max_submit_bytes", c.http_max_submit_bytes},
                                                    {"http_max_streams", c.http_max_streams},
                                                    {"http_max_streams_per_token", c.http_max_streams_per_token}};
  for (const auto& [name, value] : limits) {
    if (value <= 0) return InvalidArgumentError(fmt::format("{} must be positive, got {}", name, value));
  }
  if (c.http_max_submit_bytes >= c.max_message_bytes) {
    return InvalidArgumentError(
        fmt::format("http_max_submit_bytes ({}) must be below max_message_bytes ({}): a larger body would not fit "
                    "the request frame the REST gateway sends",
                    c.http_max_submit_bytes, c.max_message_bytes));
  }
  if (c.http_max_streams >= c.http_max_connections) {
    return InvalidArgumentError(fmt::format(
        "http_max_streams ({}) must be below http_max_connections ({}): open streams would leave no connection "
        "for the API, the console or /metrics",
        c.http_max_streams, c.http_max_connections));
  }
  // ---- sharing
  if (c.preemption_grace_ms <= 0 || c.preemption_grace_ms > 0xffffffffLL) {
    return InvalidArgumentError(
        fmt::format("preemption_grace_ms must be positive and below 2^32, got {}", c.preemption_grace_ms));
  }
  if (c.min_runtime_ms < 0 || c.usage_half_life_ms < 0 || c.schedule_interval_ms <= 0) {
    return InvalidArgumentError(
        fmt::format("min_runtime_ms ({}) and usage_half_life_ms ({}) must not be negative, "
                    "schedule_interval_ms ({}) must be positive",
                    c.min_runtime_ms, c.usage_half_life_ms, c.schedule_interval_ms));
  }
  if (c.schedule_misfire_grace_ms < 0) {
    return InvalidArgumentError(
        fmt::format("schedule_misfire_grace_ms must not be negative, got {}", c.schedule_misfire_grace_ms));
  }
  if (!(c.share_horizon_s >= 0)) {
    return InvalidArgumentError(fmt::format("share_horizon_s must not be negative, got {}", c.share_horizon_s));
  }
  if (c.max_spec_bytes + 4096 > c.max_message_bytes) {
    return InvalidArgumentError(
        fmt::format("max_spec_bytes ({}) must leave room in max_message_bytes ({}) for the "
                    "rest of the request",
                    c.max_spec_bytes, c.max_message_bytes));
  }
  return Status::Ok();
}

}  // namespace anneal::coordinator
