// The client config: where the `anneal` CLI finds its coordinator, its API token and the coordinator's CurveZMQ
// public key. One YAML file, <anneal home>/config, mode 0600 from its creation on (it holds a credential):
//
//   coordinator: tcp://10.0.0.1:7070
//   token: "ant_0123456789ab_..."     # an API token (anneal token create)
//   server_key: "..."                 # the coordinator's public key (Z85), pinned by the client
//
// Written by the coordinator when it bootstraps the cluster admin (--bootstrap-admin-config) and by `anneal up`;
// read by the CLI (cli/settings.h gives flags and the environment precedence over it).
//
// Thread-safety: pure functions of the file.
//
// Example:
//   RETURN_IF_ERROR(WriteClientConfigFile(path, {.coordinator = "tcp://127.0.0.1:7070", .token = token}));
//   ASSIGN_OR_RETURN(ClientConfig c, ReadClientConfigFile(path));   // all fields empty when there is no file
#pragma once

#include <string>

#include "common/status.h"

namespace anneal {

struct ClientConfig {
  std::string coordinator{};
  std::string token{};
  std::string server_key{};
};

// An absent file gives an empty config. A malformed one is INVALID_ARGUMENT naming the file, line and key.
StatusOr<ClientConfig> ReadClientConfigFile(const std::string& path);
// Writes atomically with mode 0600, creating the parent directory (0700) when missing.
Status WriteClientConfigFile(const std::string& path, const ClientConfig& config);

}  // namespace anneal
