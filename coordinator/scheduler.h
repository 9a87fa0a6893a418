// Gang placement: where the ranks of one job go, all of them or none.
//
// Policy (docs/coordinator.md "Scheduling"):
//   - Gang: a job needs `nodes` distinct schedulable nodes with `ranks_per_node` free slots each; otherwise
//     nothing is placed.
//   - Tensor-parallel groups stay inside one node: ranks are numbered node-major (global rank = node_rank *
//     ranks_per_node + local_rank) and TP groups are consecutive ranks, so ranks_per_node % tp == 0 keeps every
//     group on one node. A request that breaks this can never be placed (kNever).
//   - Packing (best fit): among nodes that fit, the ones with the fewest free slots are taken first (ties by
//     node id), so large holes stay open for large jobs. Slots are taken lowest index first.
//   - Rank 0's node must have a free rendezvous port; the first chosen node with one becomes node rank 0.
// The queue order (priority, then FIFO) is the caller's: coordinator/scheduling.cc walks the queue and calls
// PlaceGang for each job; a job that fits no current capacity but would fit an empty cluster blocks the jobs
// behind it (no starvation of large jobs); a job that does not fit even the empty cluster is skipped.
//
// Thread-safety: pure function over values.
//
// Example:
//   GangRequest req{.nodes = 2, .ranks_per_node = 4, .tensor_parallel = 2};
//   PlacementResult r = PlaceGang(req, capacities);
//   if (r.outcome == PlacementOutcome::kPlaced) launch(r.nodes);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anneal::coordinator {

struct NodeCapacity {
  std::string node_id;
  uint32_t total_slots = 0;
  std::vector<uint32_t> free_slots;  // slot indices not used by any running task, ascending
  bool has_free_port = true;         // a rendezvous port is free (needed only on node rank 0)
};

struct GangRequest {
  uint32_t nodes = 1;
  uint32_t ranks_per_node = 1;
  uint32_t tensor_parallel = 1;
};

struct ChosenNode {
  std::string node_id;
  std::vector<uint32_t> slots;  // local rank i runs on slots[i]
};

enum class PlacementOutcome {
  kPlaced,  // `nodes` holds the placement, nodes[0] is node rank 0
  kWait,    // would fit the schedulable nodes if they were idle: wait for tasks to end
  kNever,   // cannot fit these nodes even idle (more ranks per node than any has, too few nodes, TP split)
};

struct PlacementResult {
  PlacementOutcome outcome = PlacementOutcome::kWait;
  std::vector<ChosenNode> nodes;
  std::string reason;  // why not placed, for events and logs
};

PlacementResult PlaceGang(const GangRequest& request, const std::vector<NodeCapacity>& capacities);

}  // namespace anneal::coordinator
