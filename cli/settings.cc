#include "cli/settings.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "protocol/curve.h"

namespace anneal::cli {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

struct FileConfig {
  std::string coordinator, token, server_key;
};

StatusOr<FileConfig> ReadClientConfig(const std::string& path) {
  FileConfig c;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return c;
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(
        fmt::format("{}:{}:{}: malformed client config: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (root.IsNull()) return c;
  if (!root.IsMap())
    return InvalidArgumentError(fmt::format("{}: expected a mapping with coordinator: and token:", path));
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    if (!kv.second.IsScalar()) {
      return InvalidArgumentError(fmt::format("{}:{}: '{}' must be a string", path, kv.first.Mark().line + 1, key));
    }
    if (key == "coordinator")
      c.coordinator = kv.second.Scalar();
    else if (key == "token")
      c.token = kv.second.Scalar();
    else if (key == "server_key")
      c.server_key = kv.second.Scalar();
    else {
      return InvalidArgumentError(fmt::format("{}:{}: unknown key '{}' (known: coordinator, token, server_key)", path,
                                              kv.first.Mark().line + 1, key));
    }
  }
  return c;
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
  FileConfig file;
  std::string config_path;
  if (auto home = AnnealHome(); home.ok()) {
    config_path = ClientConfigPath(*home);
    ASSIGN_OR_RETURN(file, ReadClientConfig(config_path));
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

Status WriteClientConfig(const std::string& home, const std::string& coordinator, const std::string& token,
                         const std::string& server_key) {
  std::error_code ec;
  std::filesystem::create_directories(home, ec);
  if (ec) return InvalidArgumentError(fmt::format("cannot create {}: {}", home, ec.message()));
  const std::string path = ClientConfigPath(home);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return InvalidArgumentError(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    YAML::Emitter e;
    e << YAML::BeginMap << YAML::Key << "coordinator" << YAML::Value << coordinator << YAML::Key << "token"
      << YAML::Value << YAML::DoubleQuoted << token;
    if (!server_key.empty()) e << YAML::Key << "server_key" << YAML::Value << YAML::DoubleQuoted << server_key;
    e << YAML::EndMap;
    out << "# written by `anneal up`; flags and ANNEAL_COORDINATOR / ANNEAL_TOKEN / ANNEAL_SERVER_KEY take "
           "precedence\n"
        << e.c_str() << "\n";
    if (!out.flush()) return InvalidArgumentError(fmt::format("cannot write {}", tmp));
  }
  ::chmod(tmp.c_str(), 0600);
  std::filesystem::rename(tmp, path, ec);
  if (ec) return InvalidArgumentError(fmt::format("cannot write {}: {}", path, ec.message()));
  return Status::Ok();
}

}  // namespace anneal::cli
