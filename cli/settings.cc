#include "cli/settings.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "common/client_config.h"
#include "protocol/curve.h"

namespace anneal::cli {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

StatusOr<std::string> AnnealHome() {
  std::string home = Env("ANNEAL_HOME");
  if (!home.empty()) return home;
  std::string user_home = Env("HOME");
  if (user_home.empty()) return InvalidArgumentError("neither ANNEAL_HOME nor HOME is set: cannot find ~/.anneal");
  return user_home + "/.anneal";
}

std::string ClientConfigPath(const std::string& home) {
  return home + "/config";
}

StatusOr<Settings> ResolveSettings(const std::string& flag_coordinator, const std::string& flag_token,
                                   const TransportFlags& transport) {
  Settings s;
  ClientConfig file;
  std::string config_path;
  if (auto home = AnnealHome(); home.ok()) {
    config_path = ClientConfigPath(*home);
    ASSIGN_OR_RETURN(file, ReadClientConfigFile(config_path));
  }
  if (!flag_coordinator.empty()) {
    s.coordinator = flag_coordinator, s.coordinator_from = "--coordinator";
  } else if (std::string env = Env("ANNEAL_COORDINATOR"); !env.empty()) {
    s.coordinator = env, s.coordinator_from = "ANNEAL_COORDINATOR";
  } else if (!file.coordinator.empty()) {
    s.coordinator = file.coordinator, s.coordinator_from = config_path;
  } else {
    s.coordinator = kDefaultCoordinator, s.coordinator_from = "default";
  }
  if (!flag_token.empty())
    s.token = flag_token;
  else if (std::string env = Env("ANNEAL_TOKEN"); !env.empty())
    s.token = env;
  else
    s.token = file.token;
  // ---- transport
  if (!transport.server_key.empty()) {
    s.server_key = transport.server_key, s.server_key_from = "--server-key";
  } else if (std::string env = Env("ANNEAL_SERVER_KEY"); !env.empty()) {
    s.server_key = env, s.server_key_from = "ANNEAL_SERVER_KEY";
  } else if (!file.server_key.empty()) {
    s.server_key = file.server_key, s.server_key_from = config_path + ": server_key";
  }
  s.insecure_plaintext = transport.insecure_plaintext || Env("ANNEAL_INSECURE_PLAINTEXT") == "1";
  if (!s.server_key.empty()) RETURN_IF_ERROR(protocol::CheckCurveKeyText(s.server_key, s.server_key_from));
  return s;
}

Status UpdateClientConfig(const std::string& home, const std::string& coordinator, const std::string& server_key) {
  const std::string path = ClientConfigPath(home);
  ASSIGN_OR_RETURN(ClientConfig config, ReadClientConfigFile(path));
  if (config.coordinator == coordinator && (server_key.empty() || config.server_key == server_key)) {
    return Status::Ok();
  }
  config.coordinator = coordinator;
  if (!server_key.empty()) config.server_key = server_key;
  return WriteClientConfigFile(path, config);
}

}  // namespace anneal::cli
