// The scheduling pass: walk the queue (priority, then FIFO), place gangs, send the launch orders.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"

namespace anneal::coordinator {

void Coordinator::Schedule() {
  schedule_dirty_ = false;
  jobs_.TakeQueueGrew();
  if (jobs_.PendingCount() == 0) return;
  std::vector<NodeCapacity> capacities = nodes_.Capacities();
  // A copy of the order: placing a job removes it from the queue.
  for (const auto& id : jobs_.PendingInOrder()) {
    Job* job = jobs_.Find(id);
    if (job == nullptr || job->record.state() != pb::JOB_PENDING) continue;
    if (!TryPlace(*job, capacities)) break;  // strict order: the head waits, so nobody passes it
  }
}

bool Coordinator::TryPlace(Job& job, std::vector<NodeCapacity>& capacities) {
  pb::JobRecord& r = job.record;
  GangRequest request{r.resources().nodes(), r.resources().gpus_per_node(), r.resources().tensor_parallel()};
  PlacementResult result = PlaceGang(request, capacities);
  if (result.outcome != PlacementOutcome::kPlaced) {
    if (result.reason != job.wait_reason) {
      job.wait_reason = result.reason;
      jobs_.AddEvent(job, "placement", "not placed yet: " + result.reason);
    }
    return result.outcome == PlacementOutcome::kNever;  // a job no current node set can hold blocks nobody
  }
  job.wait_reason.clear();

  // Rendezvous on node rank 0: its inventory address and the lowest port of its range no running job holds.
  const Node& master = *nodes_.Find(result.nodes[0].node_id);
  const PortRange master_ports = nodes_.PortsOf(master);
  const uint32_t port = nodes_.FreePort(master);

  r.set_attempt(r.attempt() + 1);
  r.set_epoch(jobs_.NextEpoch());
  pb::Placement* placement = r.mutable_placement();
  placement->Clear();
  const std::string& address = master.record.inventory().address();
  placement->set_master_addr(address.empty() ? master.record.inventory().hostname() : address);
  placement->set_master_port(port);
  r.clear_task_states();
  job.task_last_seen_ms.clear();
  const int64_t now = clock_->NowMs();
  std::vector<std::string> names;
  uint32_t global_rank = 0;
  for (const auto& chosen : result.nodes) {
    auto* node_placement = placement->add_nodes();
    node_placement->set_node_id(chosen.node_id);
    for (uint32_t local = 0; local < chosen.slots.size(); ++local) {
      auto* rank = node_placement->add_ranks();
      rank->set_global_rank(global_rank++);
      rank->set_local_rank(local);
      rank->set_slot(chosen.slots[local]);
    }
    (*r.mutable_task_states())[chosen.node_id] = pb::TASK_LAUNCHING;
    job.task_last_seen_ms[chosen.node_id] = now;
    names.push_back(chosen.node_id);
    // Keep this pass's view current for the jobs behind this one.
    auto cap = std::find_if(capacities.begin(), capacities.end(),
                            [&](const NodeCapacity& c) { return c.node_id == chosen.node_id; });
    if (cap != capacities.end()) {
      std::vector<uint32_t> left;
      std::set_difference(cap->free_slots.begin(), cap->free_slots.end(), chosen.slots.begin(), chosen.slots.end(),
                          std::back_inserter(left));
      cap->free_slots = std::move(left);
    }
  }
  jobs_.Transition(job, pb::JOB_STARTING,
                   fmt::format("placed on {} (attempt {}, epoch {}, rendezvous {}:{}){}", fmt::join(names, ", "),
                               r.attempt(), r.epoch(), placement->master_addr(), port,
                               r.resume_checkpoint().empty() ? "" : ", resuming from " + r.resume_checkpoint()));
  nodes_.ReserveTasks(r);
  auto master_cap = std::find_if(capacities.begin(), capacities.end(),
                                 [&](const NodeCapacity& c) { return c.node_id == result.nodes[0].node_id; });
  if (master_cap != capacities.end()) {
    master_cap->has_free_port = master.used_ports.size() < master_ports.end - master_ports.begin;
  }
  for (const auto& chosen : result.nodes) SendLaunch(job, chosen.node_id);
  return true;
}

void Coordinator::SendLaunch(const Job& job, const std::string& node_id) {
  const pb::JobRecord& r = job.record;
  const Node* node = nodes_.Find(node_id);
  if (node == nullptr) return;
  pb::CoordinatorToAgent message;
  pb::LaunchTask* launch = message.mutable_launch();
  launch->set_job_id(r.job_id());
  launch->set_attempt(r.attempt());
  launch->set_epoch(r.epoch());
  launch->set_kind(r.kind());
  launch->set_world_size(r.resources().world_size());
  launch->set_master_addr(r.placement().master_addr());
  launch->set_master_port(r.placement().master_port());
  launch->set_trainer_config_yaml(r.spec_yaml());
  launch->set_output_dir(r.output_dir());
  launch->set_resume_checkpoint(r.resume_checkpoint());
  launch->set_nnodes(r.placement().nodes_size());
  for (int i = 0; i < r.placement().nodes_size(); ++i) {
    if (r.placement().nodes(i).node_id() != node_id) continue;
    launch->set_node_rank(i);
    for (const auto& rank : r.placement().nodes(i).ranks()) *launch->add_ranks() = rank;
  }
  (*launch->mutable_env())["ANNEAL_JOB_ID"] = r.job_id();
  (*launch->mutable_env())["ANNEAL_ATTEMPT"] = std::to_string(r.attempt());
  (*launch->mutable_env())["ANNEAL_EPOCH"] = std::to_string(r.epoch());
  const std::string team = JobTeam(r);
  launch->set_team(team);
  if (options_.path_policy) {
    // The agent re-checks the output directory on its own filesystem (symlinks the coordinator cannot see).
    if (auto roots = options_.path_policy->RootsFor(team); roots.ok()) {
      for (const auto& root : roots->outputs) launch->add_output_roots(root);
    }
  }
  SendToNode(*node, std::move(message));
}

}  // namespace anneal::coordinator
