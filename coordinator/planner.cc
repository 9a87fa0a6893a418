// PlanSchedule: fair-share order, the placement walk with EASY backfill, and the explanations
// (coordinator/planner.h). Time limits and reclaims are in planner_preempt.cc, the reservation in
// planner_reserve.cc, the per-pass state in planner_state.cc.
#include "coordinator/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <span>
#include <unordered_map>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator {

using planner_detail::FreeIndex;
using planner_detail::PlannerPass;
using planner_detail::TeamState;
using planner_detail::View;

namespace planner_detail {

std::optional<std::vector<uint32_t>> PlaceOn(const PlannerPass& pass, const FreeIndex& index, size_t view,
                                             const GangRequest& gang, const std::vector<uint32_t>& preferred) {
  const View& v = pass.views[view];
  if (index.CountAtLeast(v.index_view, gang.ranks_per_node) < gang.nodes) return std::nullopt;
  // PlaceGang's rule with a preference: rank 0 is the first node with a free port (preferred nodes first, then
  // best fit), the others follow in that order.
  std::optional<uint32_t> master;
  std::vector<uint32_t> others;
  others.reserve(gang.nodes);
  auto taken = [&](uint32_t node) {
    return master == node || std::find(others.begin(), others.end(), node) != others.end();
  };
  auto consider = [&](uint32_t node) {  // false once the gang is complete
    if (!master && pass.nodes[node]->has_free_port) {
      master = node;
    } else if (others.size() + 1 < gang.nodes) {
      others.push_back(node);
    }
    return !(master && others.size() + 1 >= gang.nodes);
  };
  bool more = true;
  for (uint32_t node : preferred) {
    const bool member = v.members.empty() || v.members[node];
    if (more && member && index.Free(node) >= gang.ranks_per_node) more = consider(node);
  }
  if (more) {
    index.WalkBestFit(v.index_view, gang.ranks_per_node, [&](uint32_t node) { return taken(node) || consider(node); });
  }
  if (!master || others.size() + 1 < gang.nodes) return std::nullopt;
  std::vector<uint32_t> chosen = {*master};
  chosen.insert(chosen.end(), others.begin(), others.end());
  return chosen;
}

}  // namespace planner_detail

namespace {

uint32_t GangSlots(const GangRequest& gang) {
  return gang.nodes * gang.ranks_per_node;
}

// Can the job ever be placed on its view's nodes? (the cheap part of NeverReason, without the text)
bool CanEverFit(const GangRequest& g, const View& view, uint32_t max_slots) {
  return view.missing_label.empty() && g.nodes > 0 && g.ranks_per_node > 0 && g.tensor_parallel > 0 &&
         g.ranks_per_node % g.tensor_parallel == 0 &&
         view.idle_at_least[std::min(g.ranks_per_node, max_slots + 1)] >= g.nodes;
}

// Stage 2, second half: the jobs with claimed nodes (their victims' slots are freeing or freed for them) go
// first, then the jobs their team's guarantee covers (held + job <= guaranteed on a matching pool, charged to
// every matching pool as they are taken, in fair-share order; claimants are charged too), then the others in
// fair-share order. Slots freed for a team below its guarantee (by preemption or by jobs ending) thus reach it
// instead of a borrowing team with lower usage, which would make it reclaim again.
// `covered` is set to how many jobs lead the order that way (claimants included).
std::vector<uint32_t> GuaranteedFirst(const PlannerPass& pass, const std::vector<uint32_t>& fair, size_t& covered) {
  std::vector<std::vector<int64_t>> charged(pass.teams.size());
  bool any = false;
  for (uint32_t t = 0; t < pass.teams.size(); ++t) {
    charged[t] = pass.teams[t].held;
    for (const QuotaEntry* q : pass.teams[t].quota) any = any || (q != nullptr && q->guaranteed > 0);
  }
  covered = 0;
  const bool claims = std::any_of(fair.begin(), fair.end(), [&](uint32_t job) { return pass.jobs[job].claimed > 0; });
  if (!any && !claims) return fair;
  std::vector<uint32_t> order;
  std::vector<uint32_t> borrowing;
  order.reserve(fair.size());
  borrowing.reserve(fair.size());
  for (uint32_t job : claims ? fair : std::vector<uint32_t>{}) {  // claims first, charged like covered jobs
    const auto& facts = pass.jobs[job];
    if (facts.claimed == 0) continue;
    order.push_back(job);
    for (size_t p : pass.views[facts.view].pools) charged[facts.team][p] += GangSlots(facts.gang);
  }
  for (uint32_t job : fair) {
    if (claims && pass.jobs[job].claimed > 0) continue;
    const auto& facts = pass.jobs[job];
    const View& view = pass.views[facts.view];
    const TeamState& team = pass.teams[facts.team];
    std::vector<int64_t>& held = charged[facts.team];
    const int64_t need = GangSlots(facts.gang);
    const bool covered = CanEverFit(facts.gang, view, pass.max_slots) &&
                         std::any_of(view.pools.begin(), view.pools.end(), [&](size_t p) {
                           const QuotaEntry* q = team.Quota(p);
                           return q != nullptr && q->guaranteed > 0 && held[p] + need <= int64_t{q->guaranteed};
                         });
    if (!covered) {
      borrowing.push_back(job);
      continue;
    }
    order.push_back(job);
    for (size_t p : view.pools) held[p] += need;
  }
  covered = order.size();
  order.insert(order.end(), borrowing.begin(), borrowing.end());
  return order;
}

// Sorts one team's jobs by priority (high first), then submit_seq, then job id, on packed keys (a comparison
// reads no job record unless priority and submit_seq tie).
void SortByPriorityThenFifo(const PlannerPass& pass, std::vector<uint32_t>::iterator begin,
                            std::vector<uint32_t>::iterator end) {
  const std::span<uint32_t> jobs(begin, end);
  struct Key {
    int64_t priority;  // negated: ascending order puts the highest first
    uint64_t seq;
    uint32_t job;
  };
  std::vector<Key> keys;
  keys.reserve(jobs.size());
  for (uint32_t j : jobs) keys.push_back({-int64_t{pass.jobs[j].priority}, pass.jobs[j].submit_seq, j});
  std::sort(keys.begin(), keys.end(), [&](const Key& a, const Key& b) {
    if (a.priority != b.priority) return a.priority < b.priority;
    if (a.seq != b.seq) return a.seq < b.seq;
    return pass.in.pending[a.job].job_id < pass.in.pending[b.job].job_id;
  });
  for (size_t i = 0; i < keys.size(); ++i) jobs[i] = keys[i].job;
}

// Stage 2: teams interleaved by fair share; within a team, priority then FIFO; then guaranteed jobs first.
std::vector<uint32_t> FairShareOrder(PlannerPass& pass, size_t& covered) {
  const auto& facts = pass.jobs;
  // Each team's jobs in one flat array (a counting sort by team keeps input order within a team).
  std::vector<uint32_t> team_begin(pass.teams.size() + 1, 0);
  for (const auto& f : facts) ++team_begin[f.team + 1];
  for (size_t t = 1; t < team_begin.size(); ++t) team_begin[t] += team_begin[t - 1];
  std::vector<uint32_t> by_team(facts.size());
  {
    std::vector<uint32_t> fill(team_begin.begin(), team_begin.end() - 1);
    for (uint32_t i = 0; i < facts.size(); ++i) by_team[fill[facts[i].team]++] = i;
  }

  struct Turn {
    double key;
    uint32_t team;
    uint32_t next;  // into by_team
  };
  std::vector<Turn> turns;  // one per team with jobs left; the next job comes from the lowest (key, name)
  const double horizon = pass.in.config.share_horizon_s;
  for (uint32_t t = 0; t < pass.teams.size(); ++t) {
    const auto jobs_begin = by_team.begin() + team_begin[t];
    const auto jobs_end = by_team.begin() + team_begin[t + 1];
    if (jobs_begin == jobs_end) continue;
    auto before = [&](uint32_t a, uint32_t b) {
      const auto& x = facts[a];
      const auto& y = facts[b];
      if (x.priority != y.priority) return x.priority > y.priority;
      if (x.submit_seq != y.submit_seq) return x.submit_seq < y.submit_seq;
      return pass.in.pending[a].job_id < pass.in.pending[b].job_id;
    };
    // The coordinator hands the queue in this order already (JobTable::PendingInOrder): one linear check.
    if (!std::is_sorted(jobs_begin, jobs_end, before)) SortByPriorityThenFifo(pass, jobs_begin, jobs_end);
    const auto& team = pass.teams[t];
    turns.push_back({(team.usage + static_cast<double>(team.held_total) * horizon) / team.weight, t, team_begin[t]});
  }
  // A few teams are the rule: a scan of the turns is cheaper than a heap, and gives the same order.
  auto earlier = [&](const Turn& a, const Turn& b) {
    if (a.key != b.key) return a.key < b.key;
    return pass.teams[a.team].name < pass.teams[b.team].name;
  };
  std::vector<uint32_t> order;
  order.reserve(facts.size());
  while (!turns.empty()) {
    size_t best = 0;
    for (size_t k = 1; k < turns.size(); ++k) {
      if (earlier(turns[k], turns[best])) best = k;
    }
    Turn& turn = turns[best];
    const uint32_t job = by_team[turn.next];
    order.push_back(job);
    turn.key += static_cast<double>(GangSlots(facts[job].gang)) * horizon / pass.teams[turn.team].weight;
    if (++turn.next == team_begin[turn.team + 1]) turns.erase(turns.begin() + static_cast<std::ptrdiff_t>(best));
  }
  return GuaranteedFirst(pass, order, covered);
}

// Why a job can never be placed on these nodes (PlaceGang's kNever), or empty.
std::string NeverReason(const GangRequest& g, const View& view, uint32_t max_slots) {
  if (g.nodes == 0 || g.ranks_per_node == 0 || g.tensor_parallel == 0) {
    return "the job asks for zero nodes, ranks or tensor-parallel size";
  }
  if (g.ranks_per_node % g.tensor_parallel != 0) {
    return fmt::format(
        "tensor_parallel {} does not divide the {} ranks per node, so a tensor-parallel group would "
        "span nodes",
        g.tensor_parallel, g.ranks_per_node);
  }
  const uint32_t idle = view.idle_at_least[std::min(g.ranks_per_node, max_slots + 1)];
  if (idle < g.nodes) {
    return fmt::format("needs {} node(s) with {} slot(s) each; only {} schedulable node(s){} have that many slots",
                       g.nodes, g.ranks_per_node, idle, view.members.empty() ? "" : " matching its node_selector");
  }
  return "";
}

std::string OverQuotaReason(const PlannerPass& pass, const GangRequest& gang, uint32_t team, const View& view) {
  const auto& t = pass.teams[team];
  const uint32_t need = GangSlots(gang);
  for (size_t p : view.pools) {
    const QuotaEntry* q = t.Quota(p);
    if (q == nullptr || q->max == 0 || t.held[p] + need <= q->max) continue;
    return fmt::format("over quota: team {} holds {} of its max {} slots on {} and the job needs {}", t.name, t.held[p],
                       q->max, pass.pools[p].empty() ? "the cluster" : "pool " + pass.pools[p], need);
  }
  return "";
}

// The matching pool on which the job's team is within its guarantee, if any (stage 5).
std::optional<size_t> GuaranteedPool(const PlannerPass& pass, const GangRequest& gang, uint32_t team,
                                     const View& view) {
  const auto& t = pass.teams[team];
  for (size_t p : view.pools) {
    const QuotaEntry* q = t.Quota(p);
    if (q != nullptr && q->guaranteed > 0 && t.held[p] + GangSlots(gang) <= q->guaranteed) return p;
  }
  return std::nullopt;
}

// The pending jobs' reasons: texts in the plan (SchedulePlan::reason_texts), shared by the jobs that wait for the
// same thing, and per job the counts of its "behind ..." prefix (planner.h PendingExplanation).
struct Why {
  uint32_t text = 0;
  uint32_t behind_guaranteed = 0;
  uint32_t behind_lower = 0;
};

uint32_t AddText(SchedulePlan& plan, std::string text) {
  plan.reason_texts.push_back(std::move(text));
  return static_cast<uint32_t>(plan.reason_texts.size() - 1);
}

// "waiting for N node(s) with M free slot(s); K have them now", one text per shape and K (most passes explain
// thousands of jobs of a few shapes on a full cluster, and a start rarely changes K).
class WaitingTexts {
 public:
  uint32_t Get(PlannerPass& pass, const GangRequest& gang, const View& view) {
    const uint64_t key = (uint64_t{view.index_view} << 40) ^ (uint64_t{gang.nodes} << 20) ^ gang.ranks_per_node;
    auto [it, fresh] = cache_.try_emplace(key);
    auto& [have, text] = it->second;
    const size_t have_now = pass.real.CountAtLeast(view.index_view, gang.ranks_per_node);
    if (fresh || have != have_now) {
      have = have_now;
      text = AddText(pass.plan, fmt::format("waiting for {} node(s) with {} free slot(s); {} have them now", gang.nodes,
                                            gang.ranks_per_node, have_now));
    }
    return text;
  }

 private:
  std::unordered_map<uint64_t, std::pair<uint64_t, uint32_t>> cache_;  // shape -> (K, its text)
};

struct Walk {
  explicit Walk(PlannerPass& p) : pass(p) {}
  PlannerPass& pass;
  std::vector<Why> reason;
  std::vector<int64_t> estimate;
  std::vector<char> started;
  uint32_t blocked = 0;  // jobs ahead that wait for capacity
  std::vector<uint32_t> blocked_of_team;
  uint32_t blocked_covered = 0;  // of those, jobs their team's guarantee covers (stage 2)
  std::vector<uint32_t> blocked_covered_of_team;
  bool covered = false;  // the job being visited is covered by its team's guarantee
  std::string strict_blocker;
  std::optional<uint32_t> strict_text;   // "behind job X (backfill is off: strict order)"
  std::optional<uint32_t> reserved_for;  // the reason of jobs that fit only the slots the reservation holds
  WaitingTexts waiting;
  std::vector<uint32_t> waiting_jobs;  // jobs that wait for capacity: estimated after the walk
  std::vector<int64_t> held_before;    // Start: the team's held slots per pool before the start

  void Start(uint32_t i, const std::vector<uint32_t>& nodes, bool outlives, uint32_t team) {
    const auto& job = pass.jobs[i];
    PlannedStart start;
    start.job_id = pass.in.pending[i].job_id;
    PlannerPass::Started held;
    held.end_ms = job.time_limit_ms > 0 ? pass.in.now_ms + job.time_limit_ms : 0;
    TeamState& t = pass.teams[team];
    held_before.assign(t.held.begin(), t.held.end());
    start.nodes.reserve(nodes.size());
    held.slots.reserve(nodes.size());
    for (uint32_t node : nodes) {
      start.nodes.push_back({pass.nodes[node]->node_id, pass.TakeFree(node, job.gang.ranks_per_node, outlives)});
      pass.Charge(team, node, job.gang.ranks_per_node, +1);
      held.slots.emplace_back(node, job.gang.ranks_per_node);
    }
    for (size_t p = 0; p < t.held.size(); ++p) {
      const int64_t guaranteed = t.Quota(p) == nullptr ? 0 : t.Quota(p)->guaranteed;
      // The team now borrows on that pool: its running jobs may become victims, so failed reclaims may not be.
      if (held_before[p] <= guaranteed && t.held[p] > guaranteed) pass.reclaim_failed.clear();
    }
    pass.teams[team].held_total += GangSlots(job.gang);
    pass.plan.starts.push_back(std::move(start));
    pass.started.push_back(std::move(held));
    started[i] = 1;
  }

  uint32_t Text(std::string text) { return AddText(pass.plan, std::move(text)); }

  void Block(uint32_t i, uint32_t team, Why why, int64_t when) {
    reason[i] = why;
    estimate[i] = when;
    ++blocked;
    ++blocked_of_team[team];
    if (covered) {
      ++blocked_covered;
      ++blocked_covered_of_team[team];
    }
  }

  void Visit(uint32_t i) {
    const auto& job = pass.jobs[i];
    const PlannerInput& in = pass.in;
    const uint32_t team = job.team;
    const size_t v = job.view;
    const View& view = pass.views[v];
    if (!view.missing_label.empty()) {
      reason[i].text = Text("no node has label " + view.missing_label);
      return;
    }
    if (std::string never = NeverReason(job.gang, view, pass.max_slots); !never.empty()) {
      reason[i].text = Text(std::move(never));
      return;
    }
    if (std::string over = OverQuotaReason(pass, job.gang, team, view); !over.empty()) {
      reason[i].text = Text(std::move(over));
      return;
    }
    if (!strict_blocker.empty()) {
      if (!strict_text)
        strict_text = Text(fmt::format("behind job {} (backfill is off: strict order)", strict_blocker));
      Block(i, team, {*strict_text}, 0);
      return;
    }
    const auto& res = pass.reservation;
    const bool ends_before =
        res && res->at_ms > 0 && job.time_limit_ms > 0 && in.now_ms + job.time_limit_ms <= res->at_ms;
    const bool outlives = res.has_value() && !ends_before;
    const FreeIndex& index = outlives ? *pass.guarded : pass.real;
    if (auto nodes = planner_detail::PlaceOn(pass, index, v, job.gang, job.preferred)) {
      Start(i, *nodes, outlives, team);
      return;
    }
    if (in.config.preemption) {
      if (auto pool = GuaranteedPool(pass, job.gang, team, view)) {
        if (auto why = planner_detail::TryReclaim(pass, i, *pool, outlives)) {
          reason[i].text = Text(std::move(*why));
          return;
        }
      }
    }
    // Jobs of other teams ahead: a covered job is behind covered jobs of lower usage only; an uncovered one
    // is behind every covered job, then uncovered ones of lower usage.
    const uint32_t ahead = blocked - blocked_of_team[team];
    const uint32_t ahead_covered = covered ? 0 : blocked_covered - blocked_covered_of_team[team];
    if (!res) {
      planner_detail::Reserve(pass, i);
      if (!in.config.backfill) strict_blocker = in.pending[i].job_id;
      const uint32_t waits = waiting.Get(pass, job.gang, view);
      const uint32_t text = Text(pass.plan.reason_texts[waits] + "; its slots are reserved from " +
                                 planner_detail::FormatWhen(pass.reservation->at_ms, in.now_ms));
      Block(i, team, {text, ahead_covered, ahead - ahead_covered}, pass.reservation->at_ms);
      return;
    }
    if (outlives && pass.real.CountAtLeast(view.index_view, job.gang.ranks_per_node) >= job.gang.nodes) {
      if (!reserved_for) {
        reserved_for = Text(fmt::format("reserved for job {} until {}", in.pending[res->pending].job_id,
                                        planner_detail::FormatWhen(res->at_ms, in.now_ms)));
      }
      Block(i, team, {*reserved_for}, res->at_ms);
      return;
    }
    Block(i, team, {waiting.Get(pass, job.gang, view), ahead_covered, ahead - ahead_covered}, 0);
    waiting_jobs.push_back(i);
  }
};

}  // namespace

SchedulePlan PlanSchedule(const PlannerInput& input) {
  PlannerPass pass(input);
  planner_detail::StopJobsPastTimeLimit(pass);
  pass.IndexPending();
  size_t covered = 0;
  const std::vector<uint32_t> order = FairShareOrder(pass, covered);
  const size_t count = input.pending.size();
  Walk walk{pass};
  walk.reason.resize(count);
  walk.estimate.assign(count, 0);
  walk.started.assign(count, 0);
  walk.blocked_of_team.assign(pass.teams.size(), 0);
  walk.blocked_covered_of_team.assign(pass.teams.size(), 0);
  for (size_t k = 0; k < order.size(); ++k) {
    walk.covered = k < covered;
    walk.Visit(order[k]);
  }
  planner_detail::EstimateStarts(pass, walk.waiting_jobs, walk.estimate);

  SchedulePlan& plan = pass.plan;
  if (pass.reservation) {
    Reservation r;
    r.job_id = input.pending[pass.reservation->pending].job_id;
    r.at_ms = pass.reservation->at_ms;
    const uint32_t per_node = input.pending[pass.reservation->pending].gang.ranks_per_node;
    for (uint32_t node : pass.reservation->nodes) r.slots_by_node[pass.nodes[node]->node_id] = per_node;
    plan.reservation = std::move(r);
  }
  // Written in input order: the pending jobs are read sequentially, not in the walk's order.
  std::vector<uint32_t> position(count);
  for (uint32_t p = 0; p < order.size(); ++p) position[order[p]] = p;
  plan.order.resize(count);
  size_t unstarted = 0;
  for (uint32_t i = 0; i < count; ++i) {
    plan.order[position[i]] = input.pending[i].job_id;
    unstarted += walk.started[i] ? 0 : 1;
  }
  plan.pending.reserve(unstarted);
  for (uint32_t i = 0; i < count; ++i) {
    if (walk.started[i]) continue;
    const Why& why = walk.reason[i];
    plan.pending.push_back({input.pending[i].job_id, walk.estimate[i], position[i] + 1, why.text, why.behind_guaranteed,
                            why.behind_lower});
  }
  return std::move(plan);
}

std::string SchedulePlan::Reason(const PendingExplanation& why) const {
  std::string out;
  AppendReason(why, out);
  return out;
}

void SchedulePlan::AppendReason(const PendingExplanation& why, std::string& out) const {
  if (why.behind_guaranteed > 0 || why.behind_lower > 0) {
    // The prefix is put together on the stack and appended at once: every pending job's reason is rendered
    // after each pass.
    constexpr std::string_view kBehind = "behind ", kGuaranteed = " job(s) of teams within their guarantee",
                               kAnd = " and ", kLower = " job(s) of teams with lower usage", kEnd = "; ";
    char prefix[160];  // at most 106: two 10-digit counts and the words
    size_t size = 0;
    auto put = [&](std::string_view part) {
      std::memcpy(prefix + size, part.data(), part.size());
      size += part.size();
    };
    put(kBehind);
    if (why.behind_guaranteed > 0) {
      const fmt::format_int digits(why.behind_guaranteed);
      put({digits.data(), digits.size()});
      put(kGuaranteed);
    }
    if (why.behind_guaranteed > 0 && why.behind_lower > 0) put(kAnd);
    if (why.behind_lower > 0) {
      const fmt::format_int digits(why.behind_lower);
      put({digits.data(), digits.size()});
      put(kLower);
    }
    put(kEnd);
    out.append(prefix, size);
  }
  if (why.text < reason_texts.size()) out += reason_texts[why.text];
}

const PendingExplanation* FindPending(const SchedulePlan& plan, std::string_view job_id) {
  for (const PendingExplanation& why : plan.pending) {
    if (why.job_id == job_id) return &why;
  }
  return nullptr;
}

}  // namespace anneal::coordinator
