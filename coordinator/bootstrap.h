// Agent identity at start-up: the config's identity settings into CoordinatorOptions, and the bootstrap join
// token (--bootstrap-join-token-file), which lets the first agents of a fresh cluster join without an admin
// creating a token by hand (`anneal up` uses it).
//
// BootstrapJoinTokenFile(core, path), on a coordinator whose store has no node and no join token yet:
//   - path exists: its content (one "anj_<id>_<secret>" line) becomes a join token (INVALID_ARGUMENT naming the
//     file when malformed; PERMISSION_DENIED when the file is readable by group or others);
//   - path missing: a fresh token is written there (O_EXCL, 0600, fsynced) and stored.
// The token lives join_token_ttl_ms. On a store that already has nodes or tokens nothing happens (logged): a
// restarted coordinator never mints tokens on its own.
//
// Thread-safety: call from main before the loop starts.
// Example:
//   ApplyIdentityConfig(config, &options);
//   RETURN_IF_ERROR(BootstrapJoinTokenFile(core, config.bootstrap_join_token_file));
#pragma once

#include <string>

#include "common/status.h"
#include "coordinator/config.h"
#include "coordinator/coordinator.h"

namespace anneal::coordinator {

void ApplyIdentityConfig(const CoordinatorConfig& config, CoordinatorOptions* options);
Status BootstrapJoinTokenFile(Coordinator& core, const std::string& path);

}  // namespace anneal::coordinator
