// Sharing: the user-facing side of quotas, fair share and the queue, as pure functions over plain values.
//
//   CopySchedulingKeys   the spec's time_limit / node_selector / max_preemptions / max_infra_restarts into the
//                        job record (submit)
//   PoolSlots            the slots of one pool ("" = every registered node, "k=v" = nodes labelled k=v)
//   ValidatePoolLabel    "" or "key=value" with the bounds of an agent's labels
//   BuildQueueReply      the pending queue a caller may see (anneal queue, GET /api/queue)
// The coordinator gathers the inputs (identity_requests.cc, queue_requests.cc) and calls these; the planner
// (coordinator/planner.h) writes the fields the queue shows (wait_reason, estimated_start_ms, queue_position).
//
// Pools. A slot on a node counts toward the pool "" and toward every "key=value" label the node carries. Pool
// capacity counts every registered node, whatever its state (UP, DRAINING or DOWN): a guarantee is a standing
// promise, and a node that is briefly down must not make an admin's change fail. A removed node
// (`anneal node remove`) no longer counts.
//
// Thread-safety: pure functions.
//
// Example:
//   CopySchedulingKeys(spec, &record);
//   uint64_t h100 = PoolSlots(core.Nodes(), "gpu=h100");
//   ASSIGN_OR_RETURN(pb::QueueReply queue, BuildQueueReply(who, "nlp", sources));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "coordinator/identity.h"
#include "jobspec/jobspec.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

// Fills JobRecord fields 24-26 and 40 from the spec: time_limit_ms (0: none), node_selector, max_preemptions,
// max_infra_restarts.
void CopySchedulingKeys(const jobspec::JobSpec& spec, pb::JobRecord* record);

// INVALID_ARGUMENT naming the label unless it is "" or "key=value" (key 1-256 bytes without '=', value at most
// 256 bytes, as an agent's labels).
Status ValidatePoolLabel(std::string_view label);
// "the whole cluster" for "", "pool 'gpu=h100'" otherwise (for messages).
std::string PoolName(std::string_view label);
// Slots of the nodes in the pool `label` (see Pools above).
uint64_t PoolSlots(const std::vector<pb::NodeRecord>& nodes, std::string_view label);

// Slots a job holds now, per node: the ranks of its tasks that have not ended while it is STARTING, RUNNING,
// PREEMPTED, RESTARTING or CANCELLING; empty otherwise. The scheduler (planner input, usage) and the queue's
// "held" column both read this one definition.
std::map<std::string, uint32_t> HeldSlotsByNode(const pb::JobRecord& job);
uint32_t HeldSlots(const pb::JobRecord& job);  // the sum over its nodes

// What the queue is built from: the active jobs (borrowed; they must outlive the call), every team, the usage
// rows (Table::kUsage).
struct QueueSources {
  std::vector<const pb::JobRecord*> jobs;
  std::vector<pb::TeamRecord> teams;
  std::vector<pb::TeamUsageRecord> usage;
};

// The queue `who` may see. `team` empty: every team `who` may read (all for a cluster admin); otherwise that
// team only: NOT_FOUND when it does not exist, PERMISSION_DENIED unless `who` is a viewer or above there.
// jobs: PENDING and PREEMPTED jobs of those teams by queue_position (1, 2, ...; 0 = no position yet, last),
// then submit_seq, with spec_yaml and submitted_spec_yaml cleared. teams: those teams. usage: their rows.
// slots_held: every shown team -> HeldSlots summed over its jobs (0 included).
StatusOr<pb::QueueReply> BuildQueueReply(const Principal& who, std::string_view team, const QueueSources& sources);

}  // namespace anneal::coordinator
