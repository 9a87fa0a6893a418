#include "common/client_config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <system_error>

#include "common/fsutil.h"

namespace anneal {

StatusOr<ClientConfig> ReadClientConfigFile(const std::string& path) {
  ClientConfig c;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return c;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                                ": malformed client config: " + e.msg);
  }
  if (root.IsNull()) return c;
  if (!root.IsMap()) {
    return InvalidArgumentError(path + ": expected a mapping with coordinator:, token: and server_key:");
  }
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    const std::string where = path + ":" + std::to_string(kv.first.Mark().line + 1);
    if (!kv.second.IsScalar()) return InvalidArgumentError(where + ": '" + key + "' must be a string");
    if (key == "coordinator")
      c.coordinator = kv.second.Scalar();
    else if (key == "token")
      c.token = kv.second.Scalar();
    else if (key == "server_key")
      c.server_key = kv.second.Scalar();
    else {
      return InvalidArgumentError(where + ": unknown key '" + key + "' (known: coordinator, token, server_key)");
    }
  }
  return c;
}

Status WriteClientConfigFile(const std::string& path, const ClientConfig& config) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(parent, ec)) {
      std::filesystem::create_directories(parent, ec);
      if (ec) return InvalidArgumentError("cannot create " + parent.string() + ": " + ec.message());
      std::filesystem::permissions(parent, std::filesystem::perms::owner_all, ec);
    }
  }
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "coordinator" << YAML::Value << config.coordinator;
  e << YAML::Key << "token" << YAML::Value << YAML::DoubleQuoted << config.token;
  if (!config.server_key.empty())
    e << YAML::Key << "server_key" << YAML::Value << YAML::DoubleQuoted << config.server_key;
  e << YAML::EndMap;
  const std::string text =
      "# Anneal client config (holds a credential: keep it mode 0600). Flags and\n"
      "# ANNEAL_COORDINATOR / ANNEAL_TOKEN / ANNEAL_SERVER_KEY take precedence.\n" +
      std::string(e.c_str()) + "\n";
  return WriteFileAtomic(path, text, 0600);
}

}  // namespace anneal
