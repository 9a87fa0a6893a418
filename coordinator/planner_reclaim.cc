// Reclaim (coordinator/planner_reclaim.h): choosing the fewest victims and claiming the freed slots.

#include "coordinator/planner_reclaim.h"

#include <algorithm>

namespace anneal::coordinator::planner_detail {

// The fewest victims (running job indices), in preference order, that make the gang fit (none when the
// freeing jobs suffice); nullptr when no set of victims does.
const std::vector<uint32_t>* Reclaim::ChooseVictims() {
  std::vector<uint32_t>& chosen = pass_.reclaim_buffers.chosen;  // entries of pass_.victims
  chosen.clear();
  if (Fits()) return &chosen;  // the jobs already freeing are enough: no second round of victims
  if (!pass_.victims_built) BuildVictimLists(pass_);
  const std::vector<std::pair<int64_t, uint32_t>>& borrowers = Borrowers();
  // Teams that borrow equally form one group, whose candidates are taken in the pass-wide preference order.
  for (size_t i = 0; i < borrowers.size() && !Fits();) {
    size_t j = i;
    while (j < borrowers.size() && borrowers[j].first == borrowers[i].first) ++j;
    TakeFromGroup(borrowers.data() + i, borrowers.data() + j, chosen);
    i = j;
  }
  if (!Fits()) return nullptr;
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
  return &chosen;
}

// Holds the gang's slots (freeing first, then free) so later jobs do not take them; returns the ids of the
// jobs it waits for.
const std::vector<const std::string*>& Reclaim::Claim() {
  const uint32_t per_node = job_.gang.ranks_per_node;
  std::vector<uint32_t>& nodes = pass_.reclaim_buffers.claim_nodes;
  nodes.clear();
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
  std::vector<const std::string*>& waits_for = pass_.reclaim_buffers.waits_for;
  waits_for.clear();
  const uint32_t team = team_;
  for (uint32_t node : nodes) {
    const uint32_t from_freed = std::min(pass_.freed[node], per_node);
    pass_.freed[node] -= from_freed;
    pass_.NodeChanged(node);
    if (from_freed > 0) {
      for (const std::string& id : pass_.freed_by[node]) waits_for.push_back(&id);
    }
    if (per_node > from_freed) pass_.TakeFree(node, per_node - from_freed, /*outlives=*/true);
    pass_.Charge(team, node, per_node, +1);
  }
  pass_.teams[team].held_total += job_.gang.nodes * per_node;
  std::sort(waits_for.begin(), waits_for.end(), [](const std::string* a, const std::string* b) { return *a < *b; });
  waits_for.erase(std::unique(waits_for.begin(), waits_for.end(),
                              [](const std::string* a, const std::string* b) { return *a == *b; }),
                  waits_for.end());
  return waits_for;
}

bool Reclaim::Helps(const PlannerPass::Victim& v) const {
  if (view_.members.empty()) return v.slot_end > v.slot_begin;
  for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
    if (Member(pass_.victim_slots[s].first)) return true;
  }
  return false;
}

bool Reclaim::TouchesFittingNode(const PlannerPass::Victim& v) const {
  for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
    const uint32_t node = pass_.victim_slots[s].first;
    if (Member(node) && Avail(node) >= per_node_) return true;
  }
  return false;
}

void Reclaim::Add(const PlannerPass::Victim& v, int sign) {
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
int64_t Reclaim::PoolSlots(const PlannerPass::Victim& v) const {
  if (pool_ == 0) return v.all_slots;
  int64_t slots = 0;
  for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
    if (pass_.pool_members[pool_][pass_.victim_slots[s].first]) slots += pass_.victim_slots[s].second;
  }
  return slots;
}

// Teams above their guarantee on the pool with eligible victims, borrowing the most first (ties by team);
// sets borrowed_left_ for each.
const std::vector<std::pair<int64_t, uint32_t>>& Reclaim::Borrowers() {
  std::vector<std::pair<int64_t, uint32_t>>& borrowers = pass_.reclaim_buffers.borrowers;
  borrowers.clear();
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
  std::sort(borrowers.begin(), borrowers.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  return borrowers;
}

uint32_t Reclaim::SkipFreeing(uint32_t t, uint32_t next) const {
  const uint32_t end = pass_.victims_of_team[t].second;
  while (next < end && pass_.freeing[pass_.victims[next].running]) ++next;
  return next;
}

// Can `v` be part of a fitting node: does one of its nodes reach per_node with every eligible victim there?
bool Reclaim::MayCompleteANode(const PlannerPass::Victim& v) const {
  for (uint32_t s = v.slot_begin; s < v.slot_end; ++s) {
    const uint32_t node = pass_.victim_slots[s].first;
    if (Member(node) && index_.Free(node) + pass_.freed[node] + pass_.victim_slots_on[node] >= per_node_) return true;
  }
  return false;
}

// Takes candidate `entry` of `team`. A candidate none of whose nodes can ever fit is taken only in what it
// counts against its team's borrowing: it would change no fit count and the fewest step would drop it.
void Reclaim::Take(uint32_t entry, uint32_t team, std::vector<uint32_t>& chosen) {
  const PlannerPass::Victim& v = pass_.victims[entry];
  if (!Helps(v)) return;
  borrowed_left_[team] -= PoolSlots(v);
  if (!MayCompleteANode(v)) return;
  chosen.push_back(entry);
  Add(v, +1);
}

// Takes candidates of the teams [begin, end) (one group) until the gang fits: a merge of the teams' lists
// by preference rank, skipping jobs already freeing, teams that would go below their own guarantee, and
// jobs with no slot on the job's nodes.
void Reclaim::TakeFromGroup(const std::pair<int64_t, uint32_t>* begin, const std::pair<int64_t, uint32_t>* end,
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

}  // namespace anneal::coordinator::planner_detail
