// Artifacts without a shared filesystem (docs/transfers.md): what the coordinator decides; agents move the bytes.
//
// With `shared_filesystem: false` (anneal-coordinator --no-shared-filesystem) every node has its own disk:
//   - Inputs. The spec's model, adapter, dataset directory, eval task directory and explicit resume checkpoint
//     lie on one node's disk (the spec's `stage_from`, else the coordinator's `artifact_source`). Each LaunchTask
//     names them as StageInputs with a ticket the coordinator signed for that node and path; the agent copies
//     them into its content-addressed store (agent/stager.h) and hands the ranks the local copy.
//   - Checkpoints. A checkpoint the trainer committed on global rank 0's node is REPLICATING until
//     `checkpoint_replicas` other nodes hold a verified copy at the same path; only then is it COMMITTED (resumed
//     from, counted by retention). A restart on nodes that lack the resume checkpoint stages it from a holder.
//   - Outputs stay on rank 0's node; `anneal fetch JOB` gets a ticket to copy them from there (FetchOutputs).
// With a shared filesystem nothing is staged or replicated (FetchOutputs still works: the CLI's machine may not
// see the cluster's filesystem).
//
// Replication of one checkpoint (coordinator/artifacts.cc; targets are UP nodes with a transfer endpoint, the
// job's own nodes first):
//
//   commit reported ──▶ REPLICATING ──copy verified on the needed number of nodes──▶ COMMITTED
//                         │    ▲  a target fails or is silent past kReplicaTimeoutMs: another target
//                         │    └─────────────────────────────────────────────────────┘
//                         └── no target left ──▶ COMMITTED with fewer copies (an "error" event says how many)
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace anneal::transfer {
class TicketSigner;
}

namespace anneal::coordinator {

struct ArtifactOptions {
  bool shared_filesystem = true;
  std::string default_source;  // artifact_source: the node holding inputs when a spec names no stage_from
  int replicas = 1;            // checkpoint_replicas
  int64_t ticket_ttl_ms = 6LL * 3600 * 1000;
  // Signs transfer tickets (FetchOutputs, staging, replication). Null: no transfers (FetchOutputs is
  // UNAVAILABLE, and without a shared filesystem submits are refused).
  std::shared_ptr<const transfer::TicketSigner> signer;
};

// A replica order unanswered this long is given up: another node is tried.
inline constexpr int64_t kReplicaTimeoutMs = 30 * 60 * 1000;

// One input a node must hold before its ranks start: the spec key and the path on the source node.
struct StagedPath {
  std::string key;   // "model.model_name_or_path", "model.adapter_name_or_path", "data.dataset_dir", ...
  std::string path;  // absolute, on the source node
};

// The spec's input paths, in a fixed order; an export job reads no dataset.
std::vector<StagedPath> InputsToStage(const jobspec::JobSpec& spec);

// The node a job's inputs are staged from: the spec's stage_from, else `default_source`.
std::string StageSource(const jobspec::JobSpec& spec, std::string_view default_source);

// Submit-time refusals without a shared filesystem (INVALID_ARGUMENT naming the key):
//   - no source node (neither stage_from nor artifact_source);
//   - a dataset entry naming a path outside dataset_dir (only dataset_dir is staged).
// Pipeline stages and ZeRO-1 shards over several nodes are accepted: the trainer sends what other nodes wrote on
// their own disks to rank 0 before a checkpoint commits (trainer/train/file_gather.h).
Status CheckStageable(const jobspec::JobSpec& spec, std::string_view default_source);

// "<output_dir>/<sub>" when `sub` is empty or a relative path without "." or ".." parts; INVALID_ARGUMENT
// naming it otherwise.
StatusOr<std::string> OutputSubpath(const std::string& output_dir, const std::string& sub);

}  // namespace anneal::coordinator
