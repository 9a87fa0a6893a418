// Where the CLI finds its coordinator and token, and the client config file it shares with `anneal up`.
//
// Precedence, for the coordinator address and the token separately: the command-line flag (--coordinator,
// --token), then the environment (ANNEAL_COORDINATOR, ANNEAL_TOKEN), then the client config file
// (<anneal home>/config, YAML with `coordinator:` and `token:`), then the default address tcp://127.0.0.1:7070
// (no token). The anneal home is $ANNEAL_HOME, else $HOME/.anneal.
//
// Transport security: the coordinator's CurveZMQ public key (Z85, 40 characters) is pinned from --server-key,
// else ANNEAL_SERVER_KEY, else `server_key:` in the client config (anneal up writes it). A key that is not a
// Curve key is INVALID_ARGUMENT naming where it came from. --insecure-plaintext (or ANNEAL_INSECURE_PLAINTEXT=1)
// talks plaintext instead; with neither a key nor that flag, commands that need the coordinator fail with an
// error saying how to set the key.
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
  // ---- transport
  std::string server_key;       // Z85 CurveZMQ public key of the coordinator; empty: none configured
  std::string server_key_from;  // "--server-key", "ANNEAL_SERVER_KEY", "<path>: server_key"
  bool insecure_plaintext = false;
};

// The transport flags of the command line (empty / false: not given).
struct TransportFlags {
  std::string server_key;           // --server-key
  bool insecure_plaintext = false;  // --insecure-plaintext
};

// $ANNEAL_HOME, else $HOME/.anneal (INVALID_ARGUMENT when neither is set).
StatusOr<std::string> AnnealHome();
std::string ClientConfigPath(const std::string& home);

// Resolves the settings; empty flags mean "not given". A malformed config file is INVALID_ARGUMENT naming it.
StatusOr<Settings> ResolveSettings(const std::string& flag_coordinator, const std::string& flag_token,
                                   const TransportFlags& transport = {});

// Sets the coordinator address and (when not empty) its CurveZMQ public key in <home>/config, keeping the token.
Status UpdateClientConfig(const std::string& home, const std::string& coordinator, const std::string& server_key);

}  // namespace anneal::cli
