// Reclaim (coordinator/planner_reclaim.h): the fast walks of the usual reclaim (one team, pool "", every
// node): the borrowing cutoff (a Fenwick sum), node costs kept in a heap, and the walk over live entries.

#include <algorithm>
#include <tuple>

#include "coordinator/planner_reclaim.h"

namespace anneal::coordinator::planner_detail {

// The last entry of team t's range that the walk may take: the first at which the slots of the entries not
// freeing, from the range's start, reach `borrowed` (a team gives while it is above its guarantee, counting
// every candidate taken); the range's last entry when they never do.
uint32_t Reclaim::Cutoff(uint32_t t, int64_t borrowed) const {
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
uint32_t Reclaim::NodeCost(uint32_t t, uint32_t node) const {
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
bool Reclaim::ByNodeCosts(uint32_t t, std::vector<uint32_t>& chosen) {
  auto [it, fresh] = pass_.node_costs.try_emplace(std::make_tuple(t, per_node_, &index_ != &pass_.real));
  PlannerPass::NodeCosts& nc = it->second;
  auto later = [](const std::pair<uint32_t, uint32_t>& a, const std::pair<uint32_t, uint32_t>& b) { return a > b; };
  if (fresh) {
    if (pass_.node_victims_begin.empty()) BuildNodeVictims(pass_);
    // Only nodes holding victims of team t can get a cost. NodeCost's answer for all of them in one sweep over the
    // team's entries in preference order (not freeing), adding each one's slots to its nodes until a node reaches
    // the ranks per node: the entries of each node come in the same order as NodeCost reads them.
    nc.cost.assign(pass_.nodes.size(), UINT32_MAX);
    constexpr uint32_t kUnseen = UINT32_MAX, kDone = UINT32_MAX - 1;
    std::vector<uint32_t>& have = pass_.reclaim_buffers.have;  // per node: the slots found so far
    have.assign(pass_.nodes.size(), kUnseen);
    const auto [team_begin, team_end] = pass_.victims_of_team[t];
    for (uint32_t e = team_begin; e < team_end; ++e) {
      const PlannerPass::Victim& v = pass_.victims[e];
      if (pass_.freeing[v.running]) continue;
      for (uint32_t k = v.slot_begin; k < v.slot_end; ++k) {
        const auto [n, slots] = pass_.victim_slots[k];
        uint32_t& found = have[n];
        if (found == kDone) continue;
        if (found == kUnseen) {
          found = index_.Free(n) + pass_.freed[n];
          if (found >= per_node_) {  // fits already: no cost
            found = kDone;
            continue;
          }
        }
        found += slots;
        if (found >= per_node_) {
          nc.cost[n] = e;
          nc.heap.emplace_back(e, n);
          found = kDone;
        }
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
  std::vector<std::pair<uint32_t, uint32_t>>& taken =
      pass_.reclaim_buffers.taken;  // valid entries popped, pushed back below
  taken.clear();
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
void Reclaim::WalkLive(uint32_t t, std::vector<uint32_t>& chosen) {
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

}  // namespace anneal::coordinator::planner_detail
