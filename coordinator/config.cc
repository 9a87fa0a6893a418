#include "coordinator/config.h"

#include <fstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace anneal::coordinator {
namespace {

template <typename T>
Status Read(const YAML::Node& value, const std::string& where, T* out) {
  try {
    *out = value.as<T>();
  } catch (const YAML::Exception&) {
    return InvalidArgumentError(fmt::format("{}: expected {}", where,
                                            std::is_same_v<T, std::string> ? "a string" : "an integer"));
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
    if (key == "bind") RETURN_IF_ERROR(Read(v, where, &config->bind));
    else if (key == "state_dir") RETURN_IF_ERROR(Read(v, where, &config->state_dir));
    else if (key == "token") RETURN_IF_ERROR(Read(v, where, &config->token));
    else if (key == "heartbeat_interval_ms") RETURN_IF_ERROR(Read(v, where, &config->heartbeat_interval_ms));
    else if (key == "heartbeat_timeout_ms") RETURN_IF_ERROR(Read(v, where, &config->heartbeat_timeout_ms));
    else if (key == "stop_timeout_ms") RETURN_IF_ERROR(Read(v, where, &config->stop_timeout_ms));
    else if (key == "log_fetch_timeout_ms") RETURN_IF_ERROR(Read(v, where, &config->log_fetch_timeout_ms));
    else if (key == "log_level") RETURN_IF_ERROR(Read(v, where, &config->log_level));
    else if (key == "http_bind") RETURN_IF_ERROR(Read(v, where, &config->http_bind));
    else if (key == "path_policy") {
      auto policy = jobspec::ParsePathPolicy(v, fmt::format("{}:{}", path, item.first.Mark().line + 1));
      if (!policy.ok()) return policy.status();
      config->path_policy = std::move(*policy);
    } else {
      return InvalidArgumentError(fmt::format(
          "{}: unknown setting (known: bind, state_dir, token, heartbeat_interval_ms, heartbeat_timeout_ms, "
          "stop_timeout_ms, log_fetch_timeout_ms, log_level, http_bind, path_policy)", where));
    }
  }
  return Status::Ok();
}

Status ValidateConfig(const CoordinatorConfig& c) {
  if (c.heartbeat_interval_ms <= 0 || c.heartbeat_timeout_ms <= 0 || c.stop_timeout_ms <= 0 ||
      c.log_fetch_timeout_ms <= 0) {
    return InvalidArgumentError("heartbeat interval, heartbeat timeout, stop timeout and log fetch timeout must be "
                                "positive milliseconds");
  }
  if (c.heartbeat_interval_ms >= c.heartbeat_timeout_ms) {
    return InvalidArgumentError(fmt::format("heartbeat_interval_ms ({}) must be below heartbeat_timeout_ms ({})",
                                            c.heartbeat_interval_ms, c.heartbeat_timeout_ms));
  }
  if (c.state_dir.empty()) return InvalidArgumentError("state_dir must not be empty");
  return Status::Ok();
}

}  // namespace anneal::coordinator
