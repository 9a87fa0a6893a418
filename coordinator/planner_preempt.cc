// Reclaim preemption (stage 5) of coordinator/planner.h: the victim search and the claim of the freed slots.
// The victim lists it searches are built in planner_victims.cc.
#include <fmt/format.h>

#include <algorithm>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

namespace {

uint32_t Guaranteed(const TeamState& team, size_t pool) {
  const QuotaEntry* q = team.Quota(pool);
  return q == nullptr ? 0 : q->guaranteed;
}

// Reclaim for one beneficiary: which gangs to preempt so that its gang fits. `fitting_` counts the nodes of
// the job's view with enough slots once the freeing jobs and the tentative victims (pass.scratch) are gone,
// kept up to date as victims are added or dropped.
class Reclaim {
 public:
  Reclaim(PlannerPass& pass, uint32_t job, size_t pool, bool outlives)
      : pass_(pass),
        job_index_(job),
        job_(pass.in.pending[job]),
        view_(pass.views[pass.jobs[job].view]),
        team_(pass.jobs[job].team),
        index_(outlives ? *pass.guarded : pass.real),
        pool_(pool),
        per_node_(job_.gang.ranks_per_node) {
    pass_.PruneFreedNodes();
    fitting_ = index_.CountAtLeast(view_.index_view, per_node_);
    for (uint32_t node : pass_.freed_nodes) {
      if (Member(node) && index_.Free(node) < per_node_ && Avail(node) >= per_node_) ++fitting_;
    }
  }
  ~Reclaim() {
    for (uint32_t node : touched_) pass_.scratch[node] = 0;
  }
  Reclaim(const Reclaim&) = delete;
  Reclaim& operator=(const Reclaim&) = delete;

  bool Fits() const { return fitting_ >= job_.gang.nodes; }

  // The fewest victims (running job indices), in preference order, that make the gang fit (none when the
  // freeing jobs suffice); nullopt when no set of victims does.
  std::optional<std::vector<uint32_t>> ChooseVictims() {
    std::vector<uint32_t> chosen;  // entries of pass_.victims
    if (Fits()) return chosen;     // the jobs already freeing are enough: no second round of victims
    if (!pass_.victims_built) BuildVictimLists(pass_);
    const std::vector<std::pair<int64_t, uint32_t>> borrowers = Borrowers();
    // Teams that borrow equally form one group, whose candidates are taken in the pass-wide preference order.
    for (size_t i = 0; i < borrowers.size() && !Fits();) {
      size_t j = i;
      while (j < borrowers.size() && borrowers[j].first == borrowers[i].first) ++j;
      TakeFromGroup(borrowers.data() + i, borrowers.data() + j, chosen);
      i = j;
    }
    if (!Fits()) return std::nullopt;
    // Fewest: drop the least preferred victims the gang does not need. A victim with no slot on a node that
    // fits is dropped without a look at the count: nodes only lose slots as victims are dropped, so a node
    // that does not fit now never will, and dropping it changes no count (most victims of a walk are such).
    size_t kept = 0;
    for (size_t k = chosen.size(); k-- > 0;) {
      const PlannerPass::Victim& v = pass_.victims[chosen[k]];
      bool needed = false;
      if (TouchesFittingNode(v)) {
        Add(v, -1);
        needed = !Fits();
        if (needed) Add(v, +1);
      }
      if (needed) chosen[chosen.size() - 1 - kept++] = chosen[k];
    }
    chosen.erase(chosen.begin(), chosen.end() - static_cast<std::ptrdiff_t>(kept));
    for (uint32_t& c : chosen) c = pass_.victims[c].running;
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
    // The job's claimed nodes (its earlier victims' slots) first, then the most freed slots.
    const auto& facts = pass_.jobs[job_index_];
    const auto claimed_begin = facts.preferred.begin();
    const auto claimed_end = claimed_begin + facts.claimed;
    auto claimed = [&](uint32_t node) { return std::find(claimed_begin, claimed_end, node) != claimed_end; };
    std::sort(nodes.begin(), nodes.end(), [&](uint32_t a, uint32_t b) {
      const bool ca = facts.claimed > 0 && claimed(a), cb = facts.claimed > 0 && claimed(b);
      if (ca != cb) return ca;
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
    const uint32_t team = team_;
    for (uint32_t node : nodes) {
      const uint32_t from_freed = std::min(pass_.freed[node], per_node);
      pass_.freed[node] -= from_freed;
      pass_.NodeChanged(node);
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
  uint32_t Avail(uint32_t node) const { return index_.Free(node) + pass_.freed[node] + pass_.scratch[node]; }
  bool Helps(const PlannerPass::Victim& v) const {
    if (view_.members.empty()) return v.slot_end > v.slot_begin;
    for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
      if (Member(pass_.victim_slots[s].first)) return true;
    }
    return false;
  }
  bool TouchesFittingNode(const PlannerPass::Victim& v) const {
    for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
      const uint32_t node = pass_.victim_slots[s].first;
      if (Member(node) && Avail(node) >= per_node_) return true;
    }
    return false;
  }
  void Add(const PlannerPass::Victim& v, int sign) {
    for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
      const auto [node, count] = pass_.victim_slots[s];
      if (!Member(node)) continue;
      uint32_t& scratch = pass_.scratch[node];
      if (scratch == 0 && sign > 0) touched_.push_back(node);
      const uint32_t base = index_.Free(node) + pass_.freed[node];
      const bool before = base + scratch >= per_node_;
      scratch = sign > 0 ? scratch + count : scratch - count;
      const bool after = base + scratch >= per_node_;
      if (before != after) fitting_ += after ? 1 : -1;
    }
  }
  // What taking `v` takes from its team's borrowing on the reclaim's pool.
  int64_t PoolSlots(const PlannerPass::Victim& v) const {
    if (pool_ == 0) return v.all_slots;
    int64_t slots = 0;
    for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
      if (pass_.pool_members[pool_][pass_.victim_slots[s].first]) slots += pass_.victim_slots[s].second;
    }
    return slots;
  }
  // Teams above their guarantee on the pool with eligible victims, borrowing the most first (ties by team);
  // sets borrowed_left_ for each.
  std::vector<std::pair<int64_t, uint32_t>> Borrowers() {
    std::vector<std::pair<int64_t, uint32_t>> borrowers;
    borrowed_left_.assign(pass_.teams.size(), 0);
    for (uint32_t t = 0; t < pass_.teams.size(); ++t) {
      const TeamState& team = pass_.teams[t];
      const int64_t borrowed = team.held[pool_] - static_cast<int64_t>(Guaranteed(team, pool_));
      const auto [begin, end] = pass_.victims_of_team[t];
      if (borrowed > 0 && end > begin) {
        borrowers.emplace_back(borrowed, t);
        borrowed_left_[t] = borrowed;
      }
    }
    std::sort(borrowers.begin(), borrowers.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    return borrowers;
  }

  // The next entry of team `t`'s list at or after `next` that is not freeing (its end when none).
  // The next entry of team `t`'s list at or after `next` that is not freeing (its end when none).
  uint32_t SkipFreeing(uint32_t t, uint32_t next) const {
    const uint32_t end = pass_.victims_of_team[t].second;
    while (next < end && pass_.freeing[pass_.victims[next].running]) ++next;
    return next;
  }

  // Can `v` be part of a fitting node: does one of its nodes reach per_node with every eligible victim there?
  bool MayCompleteANode(const PlannerPass::Victim& v) const {
    for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
      const uint32_t node = pass_.victim_slots[s].first;
      if (Member(node) && index_.Free(node) + pass_.freed[node] + pass_.victim_slots_on[node] >= per_node_) return true;
    }
    return false;
  }

  // Takes candidate `entry` of `team`. A candidate none of whose nodes can ever fit is taken only in what it
  // counts against its team's borrowing: it would change no fit count and the fewest step would drop it.
  void Take(uint32_t entry, uint32_t team, std::vector<uint32_t>& chosen) {
    const PlannerPass::Victim& v = pass_.victims[entry];
    if (!Helps(v)) return;
    borrowed_left_[team] -= PoolSlots(v);
    if (!MayCompleteANode(v)) return;
    chosen.push_back(entry);
    Add(v, +1);
  }

  // The last entry of team t's range that the walk may take: the first at which the slots of the entries not
  // freeing, from the range's start, reach `borrowed` (a team gives while it is above its guarantee, counting
  // every candidate taken); the range's last entry when they never do.
  uint32_t Cutoff(uint32_t t, int64_t borrowed) const {
    const auto [begin, end] = pass_.victims_of_team[t];
    const uint32_t size = end - begin;
    uint32_t pos = 0;  // the entries [0, pos) of the range sum to < borrowed
    int64_t sum = 0;
    uint32_t step = 1;
    while (step * 2 <= size) step *= 2;
    for (; step > 0; step /= 2) {
      if (pos + step <= size && sum + pass_.victim_tree[begin + pos + step - 1] < borrowed) {
        pos += step;
        sum += pass_.victim_tree[begin + pos - 1];
      }
    }
    return begin + std::min(pos, size - 1);
  }

  // The entry of team t's range at which `node` fits (with the free and freed slots and t's victims there that
  // are not freeing, in preference order); UINT32_MAX when it fits already or never does.
  uint32_t NodeCost(uint32_t t, uint32_t node) const {
    const uint32_t base = index_.Free(node) + pass_.freed[node];
    if (base >= per_node_) return UINT32_MAX;
    const auto [begin, end] = pass_.victims_of_team[t];
    uint32_t have = base;
    for (uint32_t i = pass_.node_victims_begin[node]; i < pass_.node_victims_begin[node + 1]; ++i) {
      const auto [entry, slots] = pass_.node_victims[i];
      if (entry < begin || pass_.freeing[pass_.victims[entry].running]) continue;
      if (entry >= end) break;
      have += slots;
      if (have >= per_node_) return entry;
    }
    return UINT32_MAX;
  }

  // The walk of one team on pool "" over every node, found from the nodes: the walk stops at the entry where
  // the gang's last missing node fits, i.e. the (nodes still needed)-th smallest node cost, if that is within
  // the team's cutoff. The victims it took there that touch those nodes are added (the fewest step drops every
  // other one anyway: their nodes do not fit). Node costs are kept per (team, ranks per node, outlives) and
  // brought up to date from pass.changed_nodes. Returns false (nothing taken) when the walk would not fit.
  bool ByNodeCosts(uint32_t t, std::vector<uint32_t>& chosen) {
    auto [it, fresh] = pass_.node_costs.try_emplace(std::make_tuple(t, per_node_, &index_ != &pass_.real));
    PlannerPass::NodeCosts& nc = it->second;
    auto later = [](const std::pair<uint32_t, uint32_t>& a, const std::pair<uint32_t, uint32_t>& b) { return a > b; };
    if (fresh) {
      if (pass_.node_victims_begin.empty()) BuildNodeVictims(pass_);
      // Only nodes holding victims of team t can get a cost.
      nc.cost.assign(pass_.nodes.size(), UINT32_MAX);
      std::vector<char> seen(pass_.nodes.size(), 0);
      const auto [team_begin, team_end] = pass_.victims_of_team[t];
      for (uint32_t e = team_begin; e < team_end; ++e) {
        const PlannerPass::Victim& v = pass_.victims[e];
        for (uint32_t k = v.slot_begin; k < v.slot_end; ++k) {
          const uint32_t n = pass_.victim_slots[k].first;
          if (seen[n]) continue;
          seen[n] = 1;
          nc.cost[n] = NodeCost(t, n);
          if (nc.cost[n] != UINT32_MAX) nc.heap.emplace_back(nc.cost[n], n);
        }
      }
      std::make_heap(nc.heap.begin(), nc.heap.end(), later);
      nc.synced = pass_.changed_nodes.size();
    }
    for (; nc.synced < pass_.changed_nodes.size(); ++nc.synced) {
      const uint32_t n = pass_.changed_nodes[nc.synced];
      const uint32_t cost = NodeCost(t, n);
      if (cost == nc.cost[n]) continue;
      nc.cost[n] = cost;
      if (cost != UINT32_MAX) {
        nc.heap.emplace_back(cost, n);
        std::push_heap(nc.heap.begin(), nc.heap.end(), later);
      }
    }
    const uint32_t needed = job_.gang.nodes - static_cast<uint32_t>(fitting_);
    const uint32_t last = Cutoff(t, borrowed_left_[t]);
    std::vector<std::pair<uint32_t, uint32_t>> taken;  // valid heap entries popped, pushed back below
    uint32_t stop = UINT32_MAX;
    while (!nc.heap.empty()) {
      const auto top = nc.heap.front();
      if (nc.cost[top.second] != top.first) {  // stale
        std::pop_heap(nc.heap.begin(), nc.heap.end(), later);
        nc.heap.pop_back();
        continue;
      }
      if (top.first > last || (taken.size() >= needed && top.first != stop)) break;
      std::pop_heap(nc.heap.begin(), nc.heap.end(), later);
      nc.heap.pop_back();
      taken.push_back(top);
      if (taken.size() == needed) stop = top.first;
    }
    for (const auto& entry : taken) {
      nc.heap.push_back(entry);
      std::push_heap(nc.heap.begin(), nc.heap.end(), later);
    }
    if (taken.size() < needed) return false;
    const auto [begin, end] = pass_.victims_of_team[t];
    const size_t first = chosen.size();
    for (const auto& [cost, node] : taken) {
      for (uint32_t i = pass_.node_victims_begin[node]; i < pass_.node_victims_begin[node + 1]; ++i) {
        const uint32_t entry = pass_.node_victims[i].first;
        if (entry < begin || pass_.freeing[pass_.victims[entry].running]) continue;
        if (entry > stop) break;
        chosen.push_back(entry);
      }
    }
    std::sort(chosen.begin() + static_cast<std::ptrdiff_t>(first), chosen.end());
    chosen.erase(std::unique(chosen.begin() + static_cast<std::ptrdiff_t>(first), chosen.end()), chosen.end());
    for (size_t k = first; k < chosen.size(); ++k) Add(pass_.victims[chosen[k]], +1);
    return true;
  }

  // One team on pool "" over every node (the usual reclaim), with exactly the result of TakeFromGroup's walk:
  // only the entries that may still complete a node are visited (the others would only count against the
  // team's borrowing, which Cutoff sums), and the walk's next-live pointers skip the others from then on.
  void WalkLive(uint32_t t, std::vector<uint32_t>& chosen) {
    // Plain variables, not a structured binding: the lambda below captures them (clang 14 refuses bindings).
    const uint32_t begin = pass_.victims_of_team[t].first;
    const uint32_t end = pass_.victims_of_team[t].second;
    auto [it, fresh] = pass_.victims_live.try_emplace(std::make_tuple(t, per_node_, &index_ != &pass_.real));
    std::vector<uint32_t>& next = it->second;  // next[i - begin]: i when live, else an entry before the next live
    if (fresh) {
      next.resize(end - begin);
      for (uint32_t i = 0; i < next.size(); ++i) next[i] = begin + i;
    }
    auto find = [&](uint32_t i) {
      uint32_t root = i;
      while (root < end && next[root - begin] != root) root = next[root - begin];
      while (i < end && next[i - begin] != i) {  // path compression
        const uint32_t up = next[i - begin];
        next[i - begin] = root;
        i = up;
      }
      return root;
    };
    const uint32_t last = Cutoff(t, borrowed_left_[t]);
    for (uint32_t e = find(begin); e <= last && e < end && !Fits(); e = find(e + 1)) {
      const PlannerPass::Victim& v = pass_.victims[e];
      if (pass_.freeing[v.running] || !MayCompleteANode(v)) {
        next[e - begin] = e + 1;
        continue;
      }
      chosen.push_back(e);
      Add(v, +1);
    }
  }

  // Takes candidates of the teams [begin, end) (one group) until the gang fits: a merge of the teams' lists
  // by preference rank, skipping jobs already freeing, teams that would go below their own guarantee, and
  // jobs with no slot on the job's nodes.
  void TakeFromGroup(const std::pair<int64_t, uint32_t>* begin, const std::pair<int64_t, uint32_t>* end,
                     std::vector<uint32_t>& chosen) {
    for (const auto* b = begin; b != end; ++b) {
      pass_.victims_head[b->second] = SkipFreeing(b->second, pass_.victims_head[b->second]);
    }
    if (end - begin == 1 && pool_ == 0 && view_.members.empty()) {  // the usual case
      // Both give the same victims: the walk is cheaper for the first reclaims of a key, the node costs (built
      // once per key, then kept up to date) once a key has been walked a few times in the pass.
      constexpr uint32_t kWalksBeforeNodeCosts = 24;
      uint32_t& walks = pass_.walks_per_key[std::make_tuple(begin->second, per_node_, &index_ != &pass_.real)];
      if (!(++walks > kWalksBeforeNodeCosts && touched_.empty() && ByNodeCosts(begin->second, chosen))) {
        WalkLive(begin->second, chosen);
      }
      return;
    }
    if (end - begin == 1) {  // one team, its list in order
      const uint32_t t = begin->second;
      const uint32_t last = pass_.victims_of_team[t].second;
      for (uint32_t next = SkipFreeing(t, pass_.victims_head[t]); next < last && !Fits() && borrowed_left_[t] > 0;
           next = SkipFreeing(t, next + 1)) {
        Take(next, t, chosen);
      }
      return;
    }
    struct Cursor {
      uint32_t team;
      uint32_t next;
    };
    std::vector<Cursor> cursors;
    cursors.reserve(static_cast<size_t>(end - begin));
    for (const auto* b = begin; b != end; ++b) cursors.push_back({b->second, pass_.victims_head[b->second]});
    while (!Fits()) {
      Cursor* best = nullptr;
      for (Cursor& c : cursors) {
        c.next = SkipFreeing(c.team, c.next);
        if (c.next >= pass_.victims_of_team[c.team].second || borrowed_left_[c.team] <= 0) continue;
        if (best == nullptr || pass_.victims[c.next].rank < pass_.victims[best->next].rank) best = &c;
      }
      if (best == nullptr) return;
      Take(best->next++, best->team, chosen);
    }
  }

  PlannerPass& pass_;
  uint32_t job_index_;
  const PendingJob& job_;
  const View& view_;
  uint32_t team_;
  const FreeIndex& index_;
  size_t pool_;
  uint32_t per_node_;
  size_t fitting_ = 0;
  std::vector<uint32_t> touched_;
  std::vector<int64_t> borrowed_left_;  // per team: slots it borrows on the pool, less the victims taken
};

// "waiting for the preemption of a, b, c, d, e and 2 more" (built by hand: one per reclaim, thousands a pass).
std::string WaitingFor(const std::vector<std::string>& ids) {
  constexpr size_t kShown = 5;
  std::string text = "waiting for the preemption of ";
  for (size_t i = 0; i < std::min(ids.size(), kShown); ++i) {
    if (i > 0) text += ", ";
    text += ids[i];
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
  std::optional<std::vector<uint32_t>> chosen = reclaim.ChooseVictims();
  if (!chosen) {
    pass.reclaim_failed.insert(key);
    return std::nullopt;
  }
  const std::vector<uint32_t>& victims = *chosen;
  const std::string pool_name = pass.pools[pool].empty() ? "the cluster" : "pool " + pass.pools[pool];
  // Freed slots per victim node before this reclaim (see the end).
  std::vector<std::pair<uint32_t, uint32_t>> freed_before;
  for (uint32_t v : victims) {
    for (const auto& slot : pass.running[v].slots) freed_before.emplace_back(slot.first, pass.freed[slot.first]);
  }
  // "team b below its guarantee (2 of 4 slots on the cluster) reclaims 4 slots for job-...", formatted once.
  const std::string reason_head = fmt::format("team {} below its guarantee ({} of {} slots on {}) reclaims ",
                                              pending.team, held_before, guaranteed, pool_name);
  const std::string reason_tail = " slots for job " + pending.job_id;
  for (uint32_t v : victims) {
    RunningState& r = pass.running[v];
    Preemption p;
    p.victim_job_id = r.job->job_id;
    p.beneficiary_job_id = pending.job_id;
    p.kind = PreemptionKind::kReclaim;
    p.work_lost_ms = WorkLost(*r.job, pass.in.now_ms);
    p.reason.reserve(reason_head.size() + reason_tail.size() + 10);
    const fmt::format_int slots(r.total_slots);
    p.reason.append(reason_head).append(slots.data(), slots.size()).append(reason_tail);
    pass.plan.preemptions.push_back(std::move(p));
    pass.MarkFreeing(v);
    for (const auto& [node, count] : r.slots) pass.Charge(r.team, node, count, -1);
    pass.teams[r.team].held_total -= r.total_slots;
  }
  const std::vector<int64_t> team_held_before = team.held;
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
