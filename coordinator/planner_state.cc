// The planner's per-pass state: the free-slot index, views per node_selector, quota pools, teams' held slots.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <set>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator {

bool NodeMatches(const std::map<std::string, std::string>& node_labels,
                 const std::map<std::string, std::string>& selector) {
  for (const auto& [key, value] : selector) {
    auto it = node_labels.find(key);
    if (it == node_labels.end() || it->second != value) return false;
  }
  return true;
}

bool NodeInPool(const std::map<std::string, std::string>& node_labels, const std::string& pool_label) {
  if (pool_label.empty()) return true;
  const size_t eq = pool_label.find('=');
  if (eq == std::string::npos) return false;
  auto it = node_labels.find(pool_label.substr(0, eq));
  return it != node_labels.end() && it->second == std::string_view(pool_label).substr(eq + 1);
}

namespace planner_detail {

FreeIndex::FreeIndex(std::vector<uint32_t> free, uint32_t max_slots) : free_(std::move(free)) {
  const size_t words = (free_.size() + 63) / 64;
  buckets_.assign(max_slots + 1, std::vector<uint64_t>(words, 0));
  for (uint32_t node = 0; node < free_.size(); ++node) buckets_[free_[node]][node / 64] |= uint64_t{1} << (node % 64);
  AddView(nullptr);
}

size_t FreeIndex::AddView(const std::vector<char>* members) {
  views_.push_back(members);
  std::vector<uint32_t> at_least(buckets_.size() + 1, 0);
  for (uint32_t node = 0; node < free_.size(); ++node) {
    if (members == nullptr || (*members)[node]) ++at_least[free_[node]];
  }
  for (size_t k = buckets_.size(); k-- > 0;) at_least[k] += at_least[k + 1];
  at_least_.push_back(std::move(at_least));
  return views_.size() - 1;
}

void FreeIndex::Set(uint32_t node, uint32_t count) {
  const uint32_t old = free_[node];
  if (old == count) return;
  buckets_[old][node / 64] &= ~(uint64_t{1} << (node % 64));
  buckets_[count][node / 64] |= uint64_t{1} << (node % 64);
  free_[node] = count;
  for (size_t v = 0; v < views_.size(); ++v) {
    if (views_[v] != nullptr && !(*views_[v])[node]) continue;
    uint32_t* at_least = at_least_[v].data();
    if (count < old) {
      for (uint32_t k = count + 1; k <= old; ++k) --at_least[k];
    } else {
      for (uint32_t k = old + 1; k <= count; ++k) ++at_least[k];
    }
  }
}

namespace {

std::vector<uint32_t> FreeCounts(const std::vector<const PlannerNode*>& nodes) {
  std::vector<uint32_t> counts;
  counts.reserve(nodes.size());
  for (const auto* n : nodes) counts.push_back(static_cast<uint32_t>(n->free_slots.size()));
  return counts;
}

uint32_t MaxSlots(const std::vector<PlannerNode>& nodes) {
  uint32_t max = 0;
  for (const auto& n : nodes) max = std::max({max, n.total_slots, static_cast<uint32_t>(n.free_slots.size())});
  return max;
}

std::vector<const PlannerNode*> SortedNodes(const std::vector<PlannerNode>& nodes) {
  std::vector<const PlannerNode*> sorted;
  sorted.reserve(nodes.size());
  for (const auto& n : nodes) sorted.push_back(&n);
  auto by_id = [](const auto* a, const auto* b) { return a->node_id < b->node_id; };
  if (!std::is_sorted(sorted.begin(), sorted.end(), by_id)) std::sort(sorted.begin(), sorted.end(), by_id);
  return sorted;
}

}  // namespace

NodeIndex::NodeIndex(const std::vector<const PlannerNode*>& nodes) : nodes_(nodes) {
  size_t size = 16;
  while (size < nodes.size() * 2) size *= 2;  // at most half full: short probes
  table_.assign(size, 0);
  mask_ = size - 1;
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    for (uint64_t at = Hash(nodes[i]->node_id) & mask_;; at = (at + 1) & mask_) {
      if (table_[at] == 0) {
        table_[at] = i + 1;
        break;
      }
      if (nodes[table_[at] - 1]->node_id == nodes[i]->node_id) break;  // a duplicate id: the first keeps it
    }
  }
}

uint32_t NodeIndex::Find(std::string_view id) const {
  for (uint64_t at = Hash(id) & mask_;; at = (at + 1) & mask_) {
    const uint32_t entry = table_[at];
    if (entry == 0) return kNone;
    if (nodes_[entry - 1]->node_id == id) return entry - 1;
  }
}

uint64_t NodeIndex::Hash(std::string_view id) {
  // Eight bytes at a time (node ids are short: one or two words), then a final mix so the low bits (the table
  // index) vary.
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ id.size();
  size_t at = 0;
  for (; at + 8 <= id.size(); at += 8) {
    uint64_t word;
    std::memcpy(&word, id.data() + at, 8);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
  }
  if (at < id.size()) {  // the last one to seven bytes, without a call to memcpy
    uint64_t word = 0;
    for (size_t k = 0; at + k < id.size(); ++k) word |= uint64_t{static_cast<unsigned char>(id[at + k])} << (8 * k);
    h = (h ^ word) * 0xff51afd7ed558ccdULL;
  }
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 29);
}

PlannerPass::PlannerPass(const PlannerInput& input)
    : in(input), nodes(SortedNodes(input.nodes)), node_index(nodes), real(FreeCounts(nodes), MaxSlots(input.nodes)) {
  max_slots = MaxSlots(input.nodes);
  slots.reserve(nodes.size());
  for (uint32_t i = 0; i < nodes.size(); ++i) slots.push_back(&nodes[i]->free_slots);
  slot_taken.assign(nodes.size(), 0);
  freed.assign(nodes.size(), 0);
  freed_by.resize(nodes.size());
  freed_listed.assign(nodes.size(), 0);
  scratch.assign(nodes.size(), 0);

  std::set<std::string> labels = {""};
  for (const auto& t : input.teams) {
    for (const auto& q : t.quotas) labels.insert(q.label);
  }
  pools.assign(labels.begin(), labels.end());  // "" sorts first: pool 0
  for (const auto& label : pools) {
    std::vector<char> members(nodes.size(), label.empty() ? 1 : 0);
    const size_t eq = label.find('=');
    if (!label.empty() && eq != std::string::npos) {
      const std::string key = label.substr(0, eq);
      const std::string_view value = std::string_view(label).substr(eq + 1);
      for (uint32_t i = 0; i < nodes.size(); ++i) {
        auto it = nodes[i]->labels.find(key);
        members[i] = it != nodes[i]->labels.end() && it->second == value ? 1 : 0;
      }
    }
    pool_members.push_back(std::move(members));
  }

  for (const auto& t : input.teams) {
    TeamState& team = teams[TeamOf(t.name)];
    team.weight = t.weight > 0 ? t.weight : 1.0;  // the contract says > 0; anything else gets the default
    team.usage = t.decayed_usage;
    for (const auto& q : t.quotas) team.quota[PoolIndex(q.label)] = &q;
  }
  running.reserve(input.running.size());
  size_t pairs = 0;
  for (const auto& job : input.running) pairs += job.slots_by_node.size();
  running_slots.reserve(pairs);                 // exact: the spans into it stay valid
  const std::string* last_team_name = nullptr;  // running jobs come grouped by team more often than not
  uint32_t last_team = 0;
  for (const auto& job : input.running) {
    RunningState r;
    r.job = &job;
    if (last_team_name == nullptr || *last_team_name != job.team) last_team = TeamOf(job.team);
    last_team_name = &job.team;
    r.team = last_team;
    r.end_ms = job.expected_end_ms();
    const size_t begin = running_slots.size();
    for (const auto& [node_id, count] : job.slots_by_node) {
      r.total_slots += count;
      teams[r.team].held_total += count;
      const uint32_t node = node_index.Find(node_id);
      if (node == NodeIndex::kNone) {  // a node that is not schedulable now: held, but not where we place
        teams[r.team].held[0] += count;
        continue;
      }
      running_slots.emplace_back(node, count);
      Charge(r.team, node, count, +1);
    }
    r.slots = std::span(running_slots).subspan(begin, running_slots.size() - begin);
    running.push_back(r);
  }
  freeing.assign(running.size(), 0);
  for (uint32_t i = 0; i < running.size(); ++i) {
    if (running[i].job->being_preempted) MarkFreeing(i);
  }

  views.emplace_back();
  View& all = views.back();
  all.index_view = 0;
  all.pools = {0};
  all.idle_at_least.assign(max_slots + 2, 0);
  for (const auto* n : nodes) ++all.idle_at_least[std::min(n->total_slots, max_slots)];
  for (size_t r = max_slots; r-- > 0;) all.idle_at_least[r] += all.idle_at_least[r + 1];
  view_of_selector.emplace(std::map<std::string, std::string>{}, 0);
}

uint32_t PlannerPass::TeamOf(const std::string& name) {
  // A few teams are the rule: comparing their names is cheaper than hashing one per running job.
  constexpr size_t kScanned = 16;
  if (teams.size() <= kScanned && !name.empty()) {
    for (uint32_t t = 0; t < teams.size(); ++t) {
      // Size and last character first (names of a few teams mostly differ there), inline, before the full compare.
      const std::string& known = teams[t].name;
      if (known.size() == name.size() && known.back() == name.back() && known == name) return t;
    }
  }
  auto [it, inserted] = team_index.emplace(name, static_cast<uint32_t>(teams.size()));
  if (inserted) {
    TeamState t;
    t.name = name;
    t.held.assign(pools.size(), 0);
    t.quota.assign(pools.size(), nullptr);
    teams.push_back(std::move(t));
  }
  return it->second;
}

void PlannerPass::IndexPending() {
  jobs.reserve(in.pending.size());
  const std::string* last_name = nullptr;
  uint32_t last_team = 0;
  for (const auto& job : in.pending) {
    if (last_name == nullptr || *last_name != job.team) last_team = TeamOf(job.team);
    last_name = &job.team;
    jobs.push_back({job.gang,
                    job.priority,
                    last_team,
                    static_cast<uint32_t>(job.node_selector.empty() ? 0 : ViewFor(job.node_selector)),
                    job.submit_seq,
                    job.time_limit_ms,
                    {}});
    auto& preferred = jobs.back().preferred;
    auto prefer = [&](const std::string& id) {
      const uint32_t node = node_index.Find(id);
      if (node != NodeIndex::kNone && std::find(preferred.begin(), preferred.end(), node) == preferred.end()) {
        preferred.push_back(node);
      }
    };
    for (const std::string& id : job.claimed_nodes) prefer(id);
    jobs.back().claimed = static_cast<uint32_t>(preferred.size());
    for (const std::string& id : job.preferred_nodes) prefer(id);
  }
}

size_t PlannerPass::PoolIndex(const std::string& label) const {
  auto it = std::lower_bound(pools.begin(), pools.end(), label);
  return it != pools.end() && *it == label ? static_cast<size_t>(it - pools.begin()) : pools.size();
}

size_t PlannerPass::ViewFor(const std::map<std::string, std::string>& selector) {
  if (selector.empty()) return 0;
  if (auto it = view_of_selector.find(selector); it != view_of_selector.end()) return it->second;
  View view;
  view.members.assign(nodes.size(), 0);
  view.idle_at_least.assign(max_slots + 2, 0);
  for (uint32_t i = 0; i < nodes.size(); ++i) {
    if (!NodeMatches(nodes[i]->labels, selector)) continue;
    view.members[i] = 1;
    ++view.idle_at_least[std::min(nodes[i]->total_slots, max_slots)];
  }
  for (size_t r = max_slots; r-- > 0;) view.idle_at_least[r] += view.idle_at_least[r + 1];
  view.pools = {0};
  std::vector<std::string> missing;
  for (const auto& pair : selector) {
    // Named, not a structured binding: lambdas may not capture those before clang 16 (the sanitizer build).
    const std::string& key = pair.first;
    const std::string& value = pair.second;
    const std::string label = key + "=" + value;
    if (size_t p = PoolIndex(label); p < pools.size()) view.pools.push_back(p);
    const bool somewhere = std::any_of(nodes.begin(), nodes.end(), [&](const PlannerNode* n) {
      auto it = n->labels.find(key);
      return it != n->labels.end() && it->second == value;
    });
    if (!somewhere) missing.push_back(label);
  }
  if (view.idle_at_least[0] == 0) {
    if (!missing.empty()) {
      view.missing_label = missing.front();
    } else {
      std::vector<std::string> all;
      for (const auto& [key, value] : selector) all.push_back(key + "=" + value);
      view.missing_label = fmt::format("{}", fmt::join(all, ","));
    }
  }
  views.push_back(std::move(view));
  const size_t id = views.size() - 1;
  // The view's members live in `views`, which may grow: the indexes keep pointers to a stable copy.
  view_members_storage.push_back(views[id].members);
  views[id].index_view = real.AddView(&view_members_storage.back());
  if (guarded) guarded->AddView(&view_members_storage.back());
  view_of_selector.emplace(selector, id);
  return id;
}

void PlannerPass::Charge(uint32_t team, uint32_t node, uint32_t count, int sign) {
  TeamState& t = teams[team];
  for (size_t p = 0; p < pools.size(); ++p) {
    if (p == 0 || pool_members[p][node]) t.held[p] += sign * static_cast<int64_t>(count);
  }
}

std::vector<uint32_t> PlannerPass::TakeFree(uint32_t node, uint32_t count, bool outlives) {
  const uint32_t begin = slot_taken[node];
  std::vector<uint32_t> taken(slots[node]->begin() + begin, slots[node]->begin() + begin + count);
  slot_taken[node] += count;
  const uint32_t left = static_cast<uint32_t>(slots[node]->size()) - slot_taken[node];
  real.Set(node, left);
  NodeChanged(node);
  if (guarded) {
    if (outlives && spare[node] != UINT32_MAX) spare[node] -= std::min(spare[node], count);
    guarded->Set(node, std::min(left, spare[node]));
  }
  return taken;
}

void PlannerPass::MarkFreeing(uint32_t running_index) {
  RunningState& r = running[running_index];
  if (r.freeing) return;
  r.freeing = true;
  freeing[running_index] = 1;
  if (!eligible.empty() && eligible[running_index]) {
    eligible[running_index] = 0;
    for (const auto& [node, count] : r.slots) victim_slots_on[node] -= count;
    // Its slots no longer count in its team's Fenwick tree (planner_preempt.cc Cutoff).
    const uint32_t entry = victim_entry[running_index];
    const uint32_t team_begin = victims_of_team[r.team].first;
    const uint32_t size = victims_of_team[r.team].second - team_begin;
    const int64_t value = victims[entry].all_slots;
    for (uint32_t i = entry - team_begin + 1; i <= size; i += i & (~i + 1)) victim_tree[team_begin + i - 1] -= value;
  }
  for (const auto& [node, count] : r.slots) {
    if (!freed_listed[node]) {
      freed_listed[node] = 1;
      freed_nodes.push_back(node);
    }
    freed[node] += count;
    freed_by[node].push_back(r.job->job_id);
    NodeChanged(node);
  }
}

void PlannerPass::PruneFreedNodes() {
  size_t kept = 0;
  for (uint32_t node : freed_nodes) {
    if (freed[node] > 0) {
      freed_nodes[kept++] = node;
    } else {
      freed_listed[node] = 0;
    }
  }
  freed_nodes.resize(kept);
}

std::string FormatWhen(int64_t at_ms, int64_t now_ms) {
  if (at_ms <= 0) return "an unknown time (some needed slots are held by jobs without a time limit)";
  return fmt::format("{} ms (in {} s)", at_ms, (std::max<int64_t>(at_ms - now_ms, 0) + 999) / 1000);
}

}  // namespace planner_detail
}  // namespace anneal::coordinator
