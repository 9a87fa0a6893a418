#include "coordinator/scheduler.h"

#include <algorithm>

#include <fmt/format.h>

namespace anneal::coordinator {

PlacementResult PlaceGang(const GangRequest& request, const std::vector<NodeCapacity>& capacities) {
  PlacementResult result;
  if (request.nodes == 0 || request.ranks_per_node == 0 || request.tensor_parallel == 0) {
    result.outcome = PlacementOutcome::kNever;
    result.reason = "the job asks for zero nodes, ranks or tensor-parallel size";
    return result;
  }
  if (request.ranks_per_node % request.tensor_parallel != 0) {
    result.outcome = PlacementOutcome::kNever;
    result.reason = fmt::format("tensor_parallel {} does not divide the {} ranks per node, so a tensor-parallel "
                                "group would span nodes", request.tensor_parallel, request.ranks_per_node);
    return result;
  }

  size_t could_fit_idle = 0;
  std::vector<const NodeCapacity*> fitting;
  for (const auto& node : capacities) {
    if (node.total_slots >= request.ranks_per_node) ++could_fit_idle;
    if (node.free_slots.size() >= request.ranks_per_node) fitting.push_back(&node);
  }
  if (could_fit_idle < request.nodes) {
    result.outcome = PlacementOutcome::kNever;
    result.reason = fmt::format("needs {} node(s) with {} slot(s) each; only {} schedulable node(s) have that "
                                "many slots", request.nodes, request.ranks_per_node, could_fit_idle);
    return result;
  }
  if (fitting.size() < request.nodes) {
    result.outcome = PlacementOutcome::kWait;
    result.reason = fmt::format("waiting for {} node(s) with {} free slot(s); {} have them now", request.nodes,
                                request.ranks_per_node, fitting.size());
    return result;
  }

  // Best fit: fewest free slots first, so big holes stay for big jobs.
  std::sort(fitting.begin(), fitting.end(), [](const NodeCapacity* a, const NodeCapacity* b) {
    if (a->free_slots.size() != b->free_slots.size()) return a->free_slots.size() < b->free_slots.size();
    return a->node_id < b->node_id;
  });
  // Node rank 0 hosts the rendezvous: it needs a free port. Take the best-fitting node that has one, then fill
  // the rest in best-fit order.
  auto master = std::find_if(fitting.begin(), fitting.end(), [](const NodeCapacity* n) { return n->has_free_port; });
  if (master == fitting.end()) {
    result.outcome = PlacementOutcome::kWait;
    result.reason = "no fitting node has a free rendezvous port";
    return result;
  }
  std::vector<const NodeCapacity*> chosen = {*master};
  for (const NodeCapacity* node : fitting) {
    if (chosen.size() == request.nodes) break;
    if (node != *master) chosen.push_back(node);
  }
  for (const NodeCapacity* node : chosen) {
    ChosenNode pick;
    pick.node_id = node->node_id;
    pick.slots.assign(node->free_slots.begin(), node->free_slots.begin() + request.ranks_per_node);
    result.nodes.push_back(std::move(pick));
  }
  result.outcome = PlacementOutcome::kPlaced;
  return result;
}

}  // namespace anneal::coordinator
