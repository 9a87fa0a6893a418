#include "coordinator/metrics.h"

#include <fmt/format.h>

#include <algorithm>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/http.h"
#include "protocol/states.h"

namespace anneal::coordinator {
namespace {

void WriteTeamGauges(prom::TextWriter& out, const pb::QueueReply& queue) {
  std::map<std::string, double> usage;
  for (const auto& u : queue.usage()) usage[u.team()] = u.decayed_slot_seconds();
  out.Family("anneal_team_usage_slot_seconds", "gauge",
             "Decayed fair-share usage of the team in slot-seconds (the planner's ordering key).");
  for (const auto& t : queue.teams())
    out.Sample("anneal_team_usage_slot_seconds", {{"team", t.name()}}, usage[t.name()]);
  out.Family("anneal_team_weight", "gauge", "Fair-share weight of the team (1 when unset).");
  for (const auto& t : queue.teams()) {
    out.Sample("anneal_team_weight", {{"team", t.name()}}, t.weight() == 0 ? 1.0 : t.weight());
  }
  out.Family("anneal_team_guaranteed_slots", "gauge", "Slots guaranteed to the team per GPU-type label.");
  for (const auto& t : queue.teams()) {
    for (const auto& q : t.quotas()) {
      out.Sample("anneal_team_guaranteed_slots", {{"team", t.name()}, {"label", q.label()}}, q.guaranteed());
    }
  }
  out.Family("anneal_team_max_slots", "gauge", "Most slots the team may hold per GPU-type label (0: no limit).");
  for (const auto& t : queue.teams()) {
    for (const auto& q : t.quotas()) {
      out.Sample("anneal_team_max_slots", {{"team", t.name()}, {"label", q.label()}}, q.max());
    }
  }
  out.Family("anneal_team_slots_held", "gauge", "Slots the team's placed jobs hold now.");
  for (const auto& t : queue.teams()) {
    auto held = queue.slots_held().find(t.name());
    out.Sample("anneal_team_slots_held", {{"team", t.name()}},
               held == queue.slots_held().end() ? 0.0 : static_cast<double>(held->second));
  }
}

}  // namespace

std::vector<double> WaitSecondsBuckets() {
  return {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400};
}

std::vector<double> PassSecondsBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
}

void CoordinatorMetrics::ObserveJobs(const std::vector<const pb::JobRecord*>& active) {
  std::set<std::string> seen;
  for (const pb::JobRecord* r : active) {
    seen.insert(r->job_id());
    if (r->attempt() >= 1 && placed_.insert(r->job_id()).second && r->attempt() == 1) {
      const double waited = static_cast<double>(r->attempt_started_at_ms() - r->submitted_at_ms()) / 1000.0;
      wait_seconds_.try_emplace(JobTeam(*r), WaitSecondsBuckets()).first->second.Observe(std::max(0.0, waited));
    }
    if (r->state() == pb::JOB_PREEMPTED) {
      if (preempted_.insert(r->job_id()).second) ++preemptions_[r->preempt_for_time_limit() ? "time_limit" : "reclaim"];
    } else {
      preempted_.erase(r->job_id());
    }
  }
  std::erase_if(placed_, [&](const std::string& id) { return !seen.count(id); });
  std::erase_if(preempted_, [&](const std::string& id) { return !seen.count(id); });
}

void CoordinatorMetrics::Recovered(const pb::JobRecord& record) {
  if (record.attempt() >= 1) placed_.insert(record.job_id());
  if (record.state() == pb::JOB_PREEMPTED) preempted_.insert(record.job_id());
}

uint64_t CoordinatorMetrics::preemptions(const std::string& kind) const {
  auto it = preemptions_.find(kind);
  return it == preemptions_.end() ? 0 : it->second;
}

void CoordinatorMetrics::Write(prom::TextWriter& out, const std::set<std::string>& teams) const {
  out.Family("anneal_job_wait_seconds", "histogram",
             "Time from a job's submission to its first placement, per team (jobs placed since this coordinator "
             "started).");
  std::map<std::string, const prom::Histogram*> by_team;
  const prom::Histogram empty(WaitSecondsBuckets());
  for (const auto& team : teams) by_team[team] = &empty;
  for (const auto& [team, histogram] : wait_seconds_) by_team[team] = &histogram;
  for (const auto& [team, histogram] : by_team) histogram->Write(out, "anneal_job_wait_seconds", {{"team", team}});
  out.Family("anneal_scheduling_pass_seconds", "histogram", "Wall time of one scheduling pass.");
  pass_seconds_.Write(out, "anneal_scheduling_pass_seconds", {});
  out.Family("anneal_preemptions_total", "counter",
             "Jobs told to checkpoint and stop, by kind (reclaim: a team takes back its guarantee; time_limit).");
  for (const auto& [kind, n] : preemptions_)
    out.Sample("anneal_preemptions_total", {{"kind", kind}}, static_cast<double>(n));
}

std::string RenderCoordinatorMetrics(const Coordinator& core) {
  prom::TextWriter out;
  out.Family("anneal_jobs", "gauge", "Active (non-terminal) jobs by state.");
  auto by_state = core.ActiveJobsByState();
  constexpr pb::JobState kActive[] = {pb::JOB_PENDING,    pb::JOB_STARTING,   pb::JOB_RUNNING,
                                      pb::JOB_RESTARTING, pb::JOB_CANCELLING, pb::JOB_PREEMPTED};
  for (auto state : kActive) {
    out.Sample("anneal_jobs", {{"state", std::string(protocol::StateName(state))}},
               static_cast<double>(by_state[state]));
  }
  out.Family("anneal_queue_length", "gauge", "Jobs waiting for a placement.");
  out.Sample("anneal_queue_length", {}, static_cast<double>(core.PendingJobCount()));
  std::map<pb::NodeState, size_t> nodes;
  uint64_t slots = 0;
  for (const auto& node : core.Nodes()) {
    ++nodes[node.state()];
    if (node.state() == pb::NODE_UP) slots += node.inventory().slots();
  }
  out.Family("anneal_nodes", "gauge", "Registered nodes by state.");
  for (auto state : {pb::NODE_UP, pb::NODE_DRAINING, pb::NODE_DOWN}) {
    out.Sample("anneal_nodes", {{"state", std::string(protocol::StateName(state))}}, static_cast<double>(nodes[state]));
  }
  out.Family("anneal_slots_up", "gauge", "Rank slots on nodes that are up.");
  out.Sample("anneal_slots_up", {}, static_cast<double>(slots));

  Principal everyone;  // the endpoint is a cluster admin's (ClusterAdminTokenAuthenticator)
  everyone.cluster_admin = true;
  auto queue = core.Queue(everyone, "");
  std::set<std::string> teams;
  if (queue.ok()) {
    for (const auto& t : queue->teams()) teams.insert(t.name());
  }
  std::map<std::pair<std::string, pb::JobState>, size_t> team_jobs;
  for (const auto& r : core.ActiveJobs()) {
    teams.insert(JobTeam(r));
    ++team_jobs[{JobTeam(r), r.state()}];
  }
  out.Family("anneal_team_jobs", "gauge", "Active jobs by team and state.");
  for (const auto& team : teams) {
    for (auto state : kActive) {
      auto it = team_jobs.find({team, state});
      out.Sample("anneal_team_jobs", {{"team", team}, {"state", std::string(protocol::StateName(state))}},
                 it == team_jobs.end() ? 0.0 : static_cast<double>(it->second));
    }
  }
  out.Family("anneal_queue_jobs", "gauge", "Queue depth: PENDING jobs per team.");
  for (const auto& team : teams) {
    auto it = team_jobs.find({team, pb::JOB_PENDING});
    out.Sample("anneal_queue_jobs", {{"team", team}}, it == team_jobs.end() ? 0.0 : static_cast<double>(it->second));
  }
  core.metrics().Write(out, teams);
  if (queue.ok()) WriteTeamGauges(out, *queue);
  return out.Take();
}

}  // namespace anneal::coordinator
