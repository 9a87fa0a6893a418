// Time-limit stops (stage 1) and reclaim preemption (stage 5) of coordinator/planner.h.
#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

namespace {

int64_t WorkLost(const RunningJob& job, int64_t now_ms) {
  return std::max<int64_t>(0, now_ms - std::max(job.started_at_ms, job.last_checkpoint_ms));
}

uint32_t Guaranteed(const TeamState& team, const std::string& pool) {
  const QuotaEntry* q = team.Quota(pool);
  return q == nullptr ? 0 : q->guaranteed;
}

struct Candidate {
  uint32_t running;
  int64_t borrowed;
  int32_t priority;
  int64_t work_lost;
  std::string_view id;
};

// Reclaim for one beneficiary: which gangs to preempt so that its gang fits.
class Reclaim {
 public:
  Reclaim(PlannerPass& pass, uint32_t job, size_t pool, bool outlives)
      : pass_(pass),
        job_(pass.in.pending[job]),
        view_(pass.views[pass.ViewFor(job_.node_selector)]),
        index_(outlives ? *pass.guarded : pass.real),
        pool_(pool) {}

  // True when the gang fits the free slots plus the freeing ones plus `scratch` (tentative victims).
  bool Fits() const {
    const uint32_t per_node = job_.gang.ranks_per_node;
    size_t count = index_.CountAtLeast(view_.index_view, per_node);
    for (uint32_t node : touched_) {
      const uint32_t free = index_.Free(node);
      if (Member(node) && free < per_node && free + pass_.freed[node] + pass_.scratch[node] >= per_node) ++count;
    }
    return count >= job_.gang.nodes;
  }

  std::vector<Candidate> Candidates() const {
    std::vector<Candidate> out;
    const int64_t now = pass_.in.now_ms;
    for (uint32_t i = 0; i < pass_.running.size(); ++i) {
      const RunningState& r = pass_.running[i];
      const RunningJob& job = *r.job;
      if (r.freeing || !job.preemptible || now - job.started_at_ms < pass_.in.config.min_runtime_ms) continue;
      const TeamState& team = pass_.teams[r.team];
      const int64_t borrowed = team.held[pool_] - static_cast<int64_t>(Guaranteed(team, pass_.pools[pool_]));
      if (borrowed <= 0) continue;
      const bool helps = std::any_of(r.slots.begin(), r.slots.end(), [&](const auto& s) { return Member(s.first); });
      if (helps) out.push_back({i, borrowed, job.priority, WorkLost(job, now), job.job_id});
    }
    std::sort(out.begin(), out.end(), [](const Candidate& a, const Candidate& b) {
      if (a.borrowed != b.borrowed) return a.borrowed > b.borrowed;
      if (a.priority != b.priority) return a.priority < b.priority;
      if (a.work_lost != b.work_lost) return a.work_lost < b.work_lost;
      return a.id < b.id;
    });
    return out;
  }

  // The fewest victims, in preference order, that make the gang fit; empty when none does.
  std::vector<uint32_t> ChooseVictims() {
    for (uint32_t node : pass_.freed_nodes) Touch(node);
    std::vector<uint32_t> chosen;
    if (Fits()) return chosen;  // the jobs already freeing are enough: no second round of victims
    std::unordered_map<uint32_t, int64_t> borrowed_left;
    bool fits = false;
    for (const Candidate& c : Candidates()) {
      const RunningState& r = pass_.running[c.running];
      auto [it, inserted] = borrowed_left.emplace(r.team, c.borrowed);
      if (it->second <= 0) continue;  // taking more would put that team below its own guarantee
      chosen.push_back(c.running);
      Add(r, +1);
      for (const auto& [node, count] : r.slots) {
        if (pass_.pool_members[pool_][node]) it->second -= count;
      }
      if ((fits = Fits())) break;
    }
    if (fits) {
      // Fewest: drop the least preferred victims the gang does not need.
      for (size_t k = chosen.size(); k-- > 0;) {
        Add(pass_.running[chosen[k]], -1);
        if (Fits()) {
          chosen.erase(chosen.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          Add(pass_.running[chosen[k]], +1);
        }
      }
    }
    for (uint32_t node : touched_) pass_.scratch[node] = 0;
    if (!fits) chosen.clear();
    return chosen;
  }

  // Holds the gang's slots (freeing first, then free) so later jobs do not take them; returns the ids of the
  // jobs it waits for.
  std::vector<std::string> Claim() {
    const uint32_t per_node = job_.gang.ranks_per_node;
    std::vector<uint32_t> nodes;
    for (uint32_t node : pass_.freed_nodes) {
      if (Member(node) && pass_.freed[node] > 0 && index_.Free(node) + pass_.freed[node] >= per_node) {
        nodes.push_back(node);
      }
    }
    std::sort(nodes.begin(), nodes.end(), [&](uint32_t a, uint32_t b) {
      if (pass_.freed[a] != pass_.freed[b]) return pass_.freed[a] > pass_.freed[b];
      return a < b;
    });
    if (nodes.size() > job_.gang.nodes) nodes.resize(job_.gang.nodes);
    if (nodes.size() < job_.gang.nodes) {
      index_.WalkBestFit(view_.index_view, per_node, [&](uint32_t node) {
        if (std::find(nodes.begin(), nodes.end(), node) == nodes.end()) nodes.push_back(node);
        return nodes.size() < job_.gang.nodes;
      });
    }
    std::vector<std::string> waits_for;
    const uint32_t team = pass_.TeamOf(job_.team);
    for (uint32_t node : nodes) {
      const uint32_t from_freed = std::min(pass_.freed[node], per_node);
      pass_.freed[node] -= from_freed;
      if (from_freed > 0) waits_for.insert(waits_for.end(), pass_.freed_by[node].begin(), pass_.freed_by[node].end());
      if (per_node > from_freed) pass_.TakeFree(node, per_node - from_freed, /*outlives=*/true);
      pass_.Charge(team, node, per_node, +1);
    }
    pass_.teams[team].held_total += job_.gang.nodes * per_node;
    std::sort(waits_for.begin(), waits_for.end());
    waits_for.erase(std::unique(waits_for.begin(), waits_for.end()), waits_for.end());
    return waits_for;
  }

 private:
  bool Member(uint32_t node) const { return view_.members.empty() || view_.members[node]; }
  void Touch(uint32_t node) {
    if (std::find(touched_.begin(), touched_.end(), node) == touched_.end()) touched_.push_back(node);
  }
  void Add(const RunningState& r, int sign) {
    for (const auto& [node, count] : r.slots) {
      if (!Member(node)) continue;
      Touch(node);
      pass_.scratch[node] = static_cast<uint32_t>(static_cast<int64_t>(pass_.scratch[node]) + sign * int64_t{count});
    }
  }

  PlannerPass& pass_;
  const PendingJob& job_;
  const View& view_;
  const FreeIndex& index_;
  size_t pool_;
  std::vector<uint32_t> touched_;
};

std::string JoinIds(const std::vector<std::string>& ids) {
  constexpr size_t kShown = 5;
  std::vector<std::string> shown(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), kShown)));
  std::string text = fmt::format("{}", fmt::join(shown, ", "));
  if (ids.size() > kShown) text += fmt::format(" and {} more", ids.size() - kShown);
  return text;
}

}  // namespace

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

std::optional<std::string> TryReclaim(PlannerPass& pass, uint32_t job, size_t pool, bool outlives) {
  const PendingJob& pending = pass.in.pending[job];
  const size_t view = pass.ViewFor(pending.node_selector);
  const auto key = std::make_tuple(pool, view, pending.gang.nodes, pending.gang.ranks_per_node, outlives);
  if (pass.reclaim_failed.count(key) > 0) return std::nullopt;

  Reclaim reclaim(pass, job, pool, outlives);
  const TeamState& team = pass.teams[pass.TeamOf(pending.team)];
  const int64_t held_before = team.held[pool];
  const uint32_t guaranteed = Guaranteed(team, pass.pools[pool]);
  std::vector<uint32_t> victims = reclaim.ChooseVictims();
  if (victims.empty() && !reclaim.Fits()) {
    pass.reclaim_failed.insert(key);
    return std::nullopt;
  }
  const std::string pool_name = pass.pools[pool].empty() ? "the cluster" : "pool " + pass.pools[pool];
  for (uint32_t v : victims) {
    RunningState& r = pass.running[v];
    Preemption p;
    p.victim_job_id = r.job->job_id;
    p.beneficiary_job_id = pending.job_id;
    p.kind = PreemptionKind::kReclaim;
    p.work_lost_ms = WorkLost(*r.job, pass.in.now_ms);
    p.reason = fmt::format("team {} below its guarantee ({} of {} slots on {}) reclaims {} slots for job {}",
                           pending.team, held_before, guaranteed, pool_name, r.total_slots, pending.job_id);
    pass.plan.preemptions.push_back(std::move(p));
    pass.MarkFreeing(v);
    for (const auto& [node, count] : r.slots) pass.Charge(r.team, node, count, -1);
    pass.teams[r.team].held_total -= r.total_slots;
  }
  pass.reclaim_failed.clear();
  return "waiting for the preemption of " + JoinIds(reclaim.Claim());
}

}  // namespace anneal::coordinator::planner_detail
