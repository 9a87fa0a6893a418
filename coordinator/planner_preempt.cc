// Reclaim preemption (stage 5) of coordinator/planner.h: TryReclaim preempts the victims a Reclaim
// (coordinator/planner_reclaim.h) chooses and claims the freed slots for the beneficiary.
#include <fmt/format.h>

#include <algorithm>

#include "coordinator/planner_reclaim.h"

namespace anneal::coordinator::planner_detail {

namespace {

// "waiting for the preemption of a, b, c, d, e and 2 more" (built by hand: one per reclaim, thousands a pass).
std::string WaitingFor(const std::vector<const std::string*>& ids) {
  constexpr size_t kShown = 5;
  std::string text = "waiting for the preemption of ";
  for (size_t i = 0; i < std::min(ids.size(), kShown); ++i) {
    if (i > 0) text += ", ";
    text += *ids[i];
  }
  if (ids.size() > kShown) {
    const fmt::format_int more(ids.size() - kShown);
    text.append(" and ").append(more.data(), more.size()).append(" more");
  }
  return text;
}

}  // namespace

std::optional<std::string> TryReclaim(PlannerPass& pass, uint32_t job, size_t pool, bool outlives) {
  const PendingJob& pending = pass.in.pending[job];
  const size_t view = pass.jobs[job].view;
  const auto key = std::make_tuple(pool, view, pending.gang.nodes, pending.gang.ranks_per_node, outlives);
  if (pass.reclaim_failed.count(key) > 0) return std::nullopt;

  Reclaim reclaim(pass, job, pool, outlives);
  const TeamState& team = pass.teams[pass.jobs[job].team];
  const int64_t held_before = team.held[pool];
  const uint32_t guaranteed = Guaranteed(team, pool);
  const std::vector<uint32_t>* chosen = reclaim.ChooseVictims();
  if (chosen == nullptr) {
    pass.reclaim_failed.insert(key);
    return std::nullopt;
  }
  const std::vector<uint32_t>& victims = *chosen;
  const std::string_view pool_name = pass.pools[pool];
  // Freed slots per victim node before this reclaim (see the end).
  auto& freed_before = pass.reclaim_buffers.freed_before;
  freed_before.clear();
  for (uint32_t v : victims) {
    for (const auto& slot : pass.running[v].slots) freed_before.emplace_back(slot.first, pass.freed[slot.first]);
  }
  // "team b below its guarantee (2 of 4 slots on the cluster) reclaims 4 slots for job-...", built once per reclaim
  // by hand (fmt::format was a tenth of a reclaim's cost).
  const fmt::format_int held_text(held_before), guaranteed_text(guaranteed);
  std::string& reason_head = pass.reclaim_buffers.reason_head;
  reason_head.clear();
  reason_head.append("team ").append(pending.team).append(" below its guarantee (");
  reason_head.append(held_text.data(), held_text.size()).append(" of ");
  reason_head.append(guaranteed_text.data(), guaranteed_text.size()).append(" slots on ");
  if (pool_name.empty()) {
    reason_head.append("the cluster");
  } else {
    reason_head.append("pool ").append(pool_name);
  }
  reason_head.append(") reclaims ");
  constexpr std::string_view kFor = " slots for job ";
  for (uint32_t v : victims) {
    RunningState& r = pass.running[v];
    Preemption p;
    p.victim_job_id = r.job->job_id;
    p.beneficiary_job_id = pending.job_id;
    p.kind = PreemptionKind::kReclaim;
    p.work_lost_ms = WorkLost(*r.job, pass.in.now_ms);
    p.reason.reserve(reason_head.size() + kFor.size() + pending.job_id.size() + 10);
    const fmt::format_int slots(r.total_slots);
    p.reason.append(reason_head).append(slots.data(), slots.size()).append(kFor).append(pending.job_id);
    pass.plan.preemptions.push_back(std::move(p));
    pass.MarkFreeing(v);
    for (const auto& [node, count] : r.slots) pass.Charge(r.team, node, count, -1);
    pass.teams[r.team].held_total -= r.total_slots;
  }
  auto& team_held_before = pass.reclaim_buffers.held_before;
  team_held_before.assign(team.held.begin(), team.held.end());
  std::string why = WaitingFor(reclaim.Claim());
  // A reclaim that failed before can succeed now only if this one left freed slots unclaimed, or if the claim
  // made the beneficiary's team borrow more on some pool (its running jobs become victims there, or more of
  // them): everything else it changed (fewer free slots, fewer eligible victims, the victims' teams borrowing
  // less) only makes a reclaim harder.
  const bool left_some = std::any_of(freed_before.begin(), freed_before.end(),
                                     [&](const auto& before) { return pass.freed[before.first] > before.second; });
  bool now_borrows = false;
  for (size_t p = 0; p < team.held.size(); ++p) {
    now_borrows = now_borrows || (team.held[p] > team_held_before[p] && team.held[p] > Guaranteed(team, p));
  }
  if (left_some || now_borrows) pass.reclaim_failed.clear();
  return why;
}

}  // namespace anneal::coordinator::planner_detail
