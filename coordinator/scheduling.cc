// The scheduling pass: build the planner's input from the loop's state, decide (coordinator/planner.h, pure),
// apply the plan (preempt, launch, explain), and send the launch orders.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/sharing.h"
#include "protocol/states.h"

namespace anneal::coordinator {
namespace {

std::string Seconds(int64_t ms) {
  return ms >= 120000 ? fmt::format("{} min", ms / 60000) : fmt::format("{} s", ms / 1000);
}

}  // namespace

std::map<std::string, uint32_t> Coordinator::SlotsHeldByTeam() const {
  std::map<std::string, uint32_t> held;
  for (const auto& [id, job] : jobs_.all()) {
    if (const uint32_t slots = HeldSlots(job.record); slots > 0) held[JobTeam(job.record)] += slots;
  }
  return held;
}

PlannerInput Coordinator::BuildPlannerInput(int64_t now) const {
  PlannerInput in;
  in.now_ms = now;
  in.config = options_.planner;
  for (auto& cap : nodes_.Capacities()) {
    const Node* node = nodes_.Find(cap.node_id);
    PlannerNode n{cap.node_id, {}, cap.total_slots, std::move(cap.free_slots), cap.has_free_port};
    if (node != nullptr && node->record.state() == pb::NODE_UP) {
      n.labels.insert(node->record.inventory().labels().begin(), node->record.inventory().labels().end());
    }
    in.nodes.push_back(std::move(n));
  }
  for (const auto& [id, job] : jobs_.all()) {
    const pb::JobRecord& r = job.record;
    std::map<std::string, uint32_t> held = HeldSlotsByNode(r);
    if (held.empty()) continue;
    RunningJob run;
    run.job_id = id;
    run.team = JobTeam(r);
    run.priority = r.priority();
    run.slots_by_node = std::move(held);
    run.started_at_ms = r.attempt_started_at_ms() > 0 ? r.attempt_started_at_ms() : r.started_at_ms();
    run.time_limit_ms = r.time_limit_ms();
    if (const pb::CheckpointRecord* latest = checkpoints_.LatestCommitted(id)) {
      run.last_checkpoint_ms = latest->committed_at_ms();
    }
    // Only a running gang can checkpoint on request; a starting one is protected until it runs.
    run.preemptible = r.state() == pb::JOB_RUNNING && r.preemptions() < r.max_preemptions();
    run.being_preempted = r.state() != pb::JOB_RUNNING && r.state() != pb::JOB_STARTING;
    in.running.push_back(std::move(run));
  }
  for (const auto& id : jobs_.PendingInOrder()) {
    const Job* job = jobs_.Find(id);
    if (job == nullptr || job->record.state() != pb::JOB_PENDING) continue;
    const pb::JobRecord& r = job->record;
    PendingJob p;
    p.job_id = id;
    p.team = JobTeam(r);
    p.priority = r.priority();
    p.submit_seq = r.submit_seq();
    p.gang = {r.resources().nodes(), r.resources().gpus_per_node(), r.resources().tensor_parallel()};
    p.node_selector.insert(r.node_selector().begin(), r.node_selector().end());
    p.time_limit_ms = r.time_limit_ms();
    p.submitted_at_ms = r.submitted_at_ms();
    // A requeued job's files are where it ran: the latest checkpoint's node first, then its last placement.
    if (const pb::CheckpointRecord* latest = checkpoints_.LatestCommitted(id); latest != nullptr) {
      if (!latest->node_id().empty()) p.preferred_nodes.push_back(latest->node_id());
    }
    for (const auto& node : r.placement().nodes()) p.preferred_nodes.push_back(node.node_id());
    in.pending.push_back(std::move(p));
  }
  for (const auto& team : identity_.Teams()) {
    TeamPolicy policy;
    policy.name = team.name();
    policy.weight = team.weight() > 0 ? team.weight() : 1.0;
    policy.decayed_usage = usage_.Of(team.name());
    for (const auto& q : team.quotas()) policy.quotas.push_back({q.label(), q.guaranteed(), q.max()});
    in.teams.push_back(std::move(policy));
  }
  return in;
}

void Coordinator::Schedule() {
  const int64_t now = clock_->NowMs();
  schedule_dirty_ = false;
  last_schedule_ms_ = now;
  jobs_.TakeQueueGrew();
  usage_.Accrue(SlotsHeldByTeam(), now);
  PlannerInput input = BuildPlannerInput(now);
  if (input.pending.empty() &&
      std::none_of(input.running.begin(), input.running.end(), [](const RunningJob& r) { return r.time_limit_ms; })) {
    return;
  }
  const SchedulePlan plan = PlanSchedule(input);
  for (const Preemption& p : plan.preemptions) ApplyPreemption(p);
  for (const PlannedStart& start : plan.starts) {
    Job* job = jobs_.Find(start.job_id);
    if (job != nullptr && job->record.state() == pb::JOB_PENDING) Launch(*job, start.nodes);
  }
  std::string reason;  // every pending job's reason is rendered here; only the ones that changed are copied
  for (const PendingExplanation& why : plan.pending) {
    Job* job = jobs_.Find(why.job_id);
    if (job == nullptr || job->record.state() != pb::JOB_PENDING) continue;
    reason.clear();
    plan.AppendReason(why, reason);
    Explain(*job, why, reason);
  }
}

void Coordinator::ApplyPreemption(const Preemption& p) {
  Job* victim = jobs_.Find(p.victim_job_id);
  if (victim == nullptr || victim->record.state() != pb::JOB_RUNNING) return;
  pb::JobRecord& r = victim->record;
  const bool time_limit = p.kind == PreemptionKind::kTimeLimit;
  r.set_preempt_for_time_limit(time_limit);
  r.set_preempt_reason(time_limit ? fmt::format("time limit {} reached", Seconds(r.time_limit_ms())) : p.reason);
  const std::string lost = fmt::format("up to {} of work since the last checkpoint if it cannot checkpoint in time",
                                       Seconds(p.work_lost_ms));
  if (time_limit) {
    jobs_.AddEvent(*victim, "preemption", fmt::format("{}: checkpoint and stop ({})", r.preempt_reason(), lost));
  } else if (p.beneficiary_job_id.empty()) {  // an eviction (a drain): back to the queue, for nobody in particular
    jobs_.AddEvent(*victim, "preemption", fmt::format("{}: checkpoint and requeue", p.reason));
  } else {
    Job* beneficiary = jobs_.Find(p.beneficiary_job_id);
    const std::string their_team = beneficiary == nullptr ? "?" : JobTeam(beneficiary->record);
    jobs_.AddEvent(*victim, "preemption",
                   fmt::format("victim of job {} (team {}): {}; {}", p.beneficiary_job_id, their_team, p.reason, lost));
    if (beneficiary != nullptr) {
      jobs_.AddEvent(*beneficiary, "preemption",
                     fmt::format("preempting job {} (team {}): {}", p.victim_job_id, JobTeam(r), p.reason));
    }
  }
  spdlog::info("preempting job {}: {}", p.victim_job_id, r.preempt_reason());
  Reconcile(*victim, JobReport::kPreemptRequested);
}

void Coordinator::Explain(Job& job, const PendingExplanation& why, const std::string& reason) {
  pb::JobRecord& r = job.record;
  r.set_queue_position(why.position);
  const bool estimate_moved = std::abs(r.estimated_start_ms() - why.estimated_start_ms) > 60000 ||
                              (r.estimated_start_ms() == 0) != (why.estimated_start_ms == 0);
  r.set_estimated_start_ms(why.estimated_start_ms);
  if (reason == r.wait_reason() && !estimate_moved) return;  // shown from memory; stored when it matters
  if (reason != r.wait_reason()) jobs_.AddEvent(job, "placement", "not placed yet: " + reason);
  r.set_wait_reason(reason);
  job.wait_reason = reason;
  jobs_.MarkChanged(job);
}

void Coordinator::Launch(Job& job, const std::vector<ChosenNode>& chosen_nodes) {
  pb::JobRecord& r = job.record;
  job.wait_reason.clear();
  r.clear_wait_reason();
  r.clear_estimated_start_ms();
  r.clear_queue_position();
  r.clear_preempt_reason();
  r.clear_preempt_for_time_limit();

  // Rendezvous on node rank 0: its inventory address and the lowest port of its range no running job holds.
  const Node& master = *nodes_.Find(chosen_nodes[0].node_id);
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
  r.set_attempt_started_at_ms(now);
  std::vector<std::string> names;
  uint32_t global_rank = 0;
  for (const auto& chosen : chosen_nodes) {
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
  }
  jobs_.Transition(job, pb::JOB_STARTING,
                   fmt::format("placed on {} (attempt {}, epoch {}, rendezvous {}:{}){}", fmt::join(names, ", "),
                               r.attempt(), r.epoch(), placement->master_addr(), port,
                               r.resume_checkpoint().empty() ? "" : ", resuming from " + r.resume_checkpoint()));
  nodes_.ReserveTasks(r);
  for (const auto& chosen : chosen_nodes) SendLaunch(job, chosen.node_id);
}

void Coordinator::SendLaunch(Job& job, const std::string& node_id) {
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
  AddStaging(job, node_id, launch);  // no shared filesystem: inputs and the resume checkpoint (artifacts.h)
  SendToNode(*node, std::move(message));
}

}  // namespace anneal::coordinator
