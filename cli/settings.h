// Where the CLI finds its coordinator and token, and the client config file it shares with `anneal up`.
//
// Precedence, for the coordinator address and the token separately: the command-line flag (--coordinator,
// --token), then the environment (ANNEAL_COORDINATOR, ANNEAL_TOKEN), then the client config file
// (<anneal home>/config, YAML with `coordinator:` and `token:`), then the default address tcp://127.0.0.1:7070
// (no token). The anneal home is $ANNEAL_HOME, else $HOME/.anneal.
//
// Thread-safety: functions read the environment and files; call them from the main thread.
//
// Example:
//   ASSIGN_OR_RETURN(Settings s, ResolveSettings(flag_coordinator, flag_token));
//   CoordinatorClient client(s.coordinator, s.token, s.timeout);
#pragma once

#include <chrono>
#include <string>

#include "common/status.h"

namespace anneal::cli {

inline constexpr const char* kDefaultCoordinator = "tcp://127.0.0.1:7070";

struct Settings {
  std::string coordinator;
  std::string coordinator_from;  // "--coordinator", "ANNEAL_COORDINATOR", "<path>", "default"
  std::string token;
  std::chrono::milliseconds timeout{5000};
};

// $ANNEAL_HOME, else $HOME/.anneal (INVALID_ARGUMENT when neither is set).
StatusOr<std::string> AnnealHome();
std::string ClientConfigPath(const std::string& home);

// Resolves the settings; empty flags mean "not given". A malformed config file is INVALID_ARGUMENT naming it.
StatusOr<Settings> ResolveSettings(const std::string& flag_coordinator, const std::string& flag_token);

// Sets the coordinator address in <home>/config, keeping its token and server key.
Status UpdateClientConfigAddress(const std::string& home, const std::string& coordinator);

}  // namespace anneal::cli
