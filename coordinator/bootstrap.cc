#include "coordinator/bootstrap.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "common/fsutil.h"
#include "common/secret.h"

namespace anneal::coordinator {

void ApplyIdentityConfig(const CoordinatorConfig& config, CoordinatorOptions* options) {
  options->join_token_ttl_ms = config.join_token_ttl_ms;
  options->coordinator_addresses = {config.bind};
  AgentLimits& limits = options->agent_limits;
  limits.max_nodes = static_cast<uint32_t>(config.max_nodes);
  limits.max_slots_per_node = static_cast<uint32_t>(config.max_slots_per_node);
  limits.max_gpus_per_node = static_cast<uint32_t>(config.max_gpus_per_node);
  limits.max_labels_per_node = static_cast<uint32_t>(config.max_labels_per_node);
  limits.max_label_length = static_cast<uint32_t>(config.max_label_length);
  limits.max_node_id_length = static_cast<uint32_t>(config.max_node_id_length);
  limits.max_inventory_string_length = static_cast<uint32_t>(config.max_inventory_string_length);
  limits.max_seq_ahead = static_cast<uint64_t>(config.max_seq_ahead);
}

Status BootstrapJoinTokenFile(Coordinator& core, const std::string& path) {
  if (path.empty()) return Status::Ok();
  if (core.HasNodeIdentities()) {
    spdlog::info("--bootstrap-join-token-file {}: the cluster already has nodes or join tokens; nothing to do", path);
    return Status::Ok();
  }
  std::string token;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if ((st.st_mode & 077) != 0) {
      return PermissionDeniedError(
          fmt::format("bootstrap join token file {} is readable by others (mode {:o}); "
                      "chmod 600 it",
                      path, st.st_mode & 0777));
    }
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    token = TrimSecret(text);
  } else {
    token = FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes));
    RETURN_IF_ERROR(WriteNewFile(path, token + "\n", 0600).WithContext("bootstrap join token"));
  }
  auto stored = core.BootstrapJoinToken(token);
  if (!stored.ok()) return stored.status().WithContext(fmt::format("bootstrap join token file {}", path));
  if (*stored) spdlog::info("bootstrap join token stored; agents join with --join-token-file {}", path);
  return Status::Ok();
}

}  // namespace anneal::coordinator
