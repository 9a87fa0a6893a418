// Victim lists for reclaims (stage 5) and time-limit stops (stage 1) of coordinator/planner.h.
#include <fmt/format.h>

#include <algorithm>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

int64_t WorkLost(const RunningJob& job, int64_t now_ms) {
  return std::max<int64_t>(0, now_ms - std::max(job.started_at_ms, job.last_checkpoint_ms));
}

// Eligible victims (not freeing, preemptible, past the minimum runtime), grouped by team, each team's entries in
// preference order (lowest priority, least work lost, job id); built once per pass, at the first reclaim.
void BuildVictimLists(PlannerPass& pass) {
  pass.victims_built = true;
  const int64_t now = pass.in.now_ms;
  struct Candidate {
    int32_t priority;
    int64_t lost;
    uint32_t running;
  };
  std::vector<Candidate> eligible;
  eligible.reserve(pass.running.size());
  for (uint32_t i = 0; i < pass.running.size(); ++i) {
    const RunningState& r = pass.running[i];
    if (r.freeing || !r.job->preemptible || now - r.job->started_at_ms < pass.in.config.min_runtime_ms) continue;
    eligible.push_back({r.job->priority, WorkLost(*r.job, now), i});
  }
  std::sort(eligible.begin(), eligible.end(), [&](const Candidate& x, const Candidate& y) {
    if (x.priority != y.priority) return x.priority < y.priority;
    if (x.lost != y.lost) return x.lost < y.lost;
    return pass.running[x.running].job->job_id < pass.running[y.running].job->job_id;
  });
  // Counting sort by team keeps each team's entries in preference order.
  std::vector<uint32_t> count(pass.teams.size() + 1, 0);
  for (const Candidate& c : eligible) ++count[pass.running[c.running].team + 1];
  for (size_t t = 1; t < count.size(); ++t) count[t] += count[t - 1];
  pass.victims_of_team.resize(pass.teams.size());
  for (size_t t = 0; t < pass.teams.size(); ++t) pass.victims_of_team[t] = {count[t], count[t + 1]};
  pass.victims.resize(eligible.size());
  pass.victim_slots.clear();
  pass.victim_slots.reserve(eligible.size() + eligible.size() / 4);
  std::vector<uint32_t> next(count.begin(), count.end() - 1);
  for (uint32_t rank = 0; rank < eligible.size(); ++rank) {
    const RunningState& r = pass.running[eligible[rank].running];
    PlannerPass::Victim& v = pass.victims[next[r.team]++];
    v.running = eligible[rank].running;
    v.rank = rank;
    v.all_slots = 0;
    v.slot_begin = static_cast<uint32_t>(pass.victim_slots.size());
    for (const auto& slot : r.slots) {
      v.all_slots += slot.second;
      pass.victim_slots.push_back(slot);
    }
    v.slot_end = static_cast<uint32_t>(pass.victim_slots.size());
  }
  pass.victim_entry.assign(pass.running.size(), UINT32_MAX);
  for (uint32_t e = 0; e < pass.victims.size(); ++e) pass.victim_entry[pass.victims[e].running] = e;
  // Fenwick trees, one per team's range: node i (1-based within the range) sums the i & -i entries ending at i.
  pass.victim_tree.assign(pass.victims.size(), 0);
  for (const auto& [begin, end] : pass.victims_of_team) {
    for (uint32_t i = 1; i <= end - begin; ++i) {
      pass.victim_tree[begin + i - 1] += pass.victims[begin + i - 1].all_slots;
      const uint32_t parent = i + (i & (~i + 1));
      if (parent <= end - begin) pass.victim_tree[begin + parent - 1] += pass.victim_tree[begin + i - 1];
    }
  }
  pass.victims_live.clear();
  pass.node_costs.clear();
  pass.node_victims_begin.clear();
  pass.walks_per_key.clear();
  pass.changed_nodes.clear();
  pass.eligible.assign(pass.running.size(), 0);
  pass.victim_slots_on.assign(pass.nodes.size(), 0);
  for (const Candidate& c : eligible) {
    pass.eligible[c.running] = 1;
    for (const auto& [node, count] : pass.running[c.running].slots) pass.victim_slots_on[node] += count;
  }
  pass.victims_head.assign(pass.teams.size(), 0);
  for (size_t t = 0; t < pass.teams.size(); ++t) pass.victims_head[t] = pass.victims_of_team[t].first;
}

// Per node, its eligible victims' entries ascending (built at the first reclaim found from the nodes).
void BuildNodeVictims(PlannerPass& pass) {
  pass.node_victims_begin.assign(pass.nodes.size() + 1, 0);
  for (const auto& [node, count] : pass.victim_slots) ++pass.node_victims_begin[node + 1];
  for (size_t n = 1; n < pass.node_victims_begin.size(); ++n)
    pass.node_victims_begin[n] += pass.node_victims_begin[n - 1];
  pass.node_victims.resize(pass.victim_slots.size());
  {
    std::vector<uint32_t> fill(pass.node_victims_begin.begin(), pass.node_victims_begin.end() - 1);
    for (uint32_t e = 0; e < pass.victims.size(); ++e) {  // entries ascending: each node's list comes out sorted
      const auto& v = pass.victims[e];
      for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
        pass.node_victims[fill[pass.victim_slots[s].first]++] = {e, pass.victim_slots[s].second};
      }
    }
  }
}

void StopJobsPastTimeLimit(PlannerPass& pass) {
  const int64_t now = pass.in.now_ms;
  for (uint32_t i = 0; i < pass.running.size(); ++i) {
    const RunningJob& job = *pass.running[i].job;
    const int64_t end = job.expected_end_ms();
    if (job.being_preempted || end == 0 || now < end) continue;
    Preemption stop;
    stop.victim_job_id = job.job_id;
    stop.kind = PreemptionKind::kTimeLimit;
    stop.work_lost_ms = WorkLost(job, now);
    stop.reason = fmt::format("job {} ran past its time limit of {} s: checkpoint and stop", job.job_id,
                              job.time_limit_ms / 1000);
    pass.plan.preemptions.push_back(std::move(stop));
    pass.MarkFreeing(i);
  }
}

}  // namespace anneal::coordinator::planner_detail
