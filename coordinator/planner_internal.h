// Internals of PlanSchedule (coordinator/planner.h), shared by planner*.cc. Not a public contract.
//
// One pass builds a PlannerPass from the input, then runs the stages in order: time limits
// (planner_victims.cc), fair-share order (planner.cc), the placement walk with EASY backfill (planner.cc,
// planner_reserve.cc), reclaim preemption (planner_preempt.cc) and explanations (planner.cc).
//
// Speed (goal: 10 ms at 5,000 nodes x 8 slots and 10,000 pending jobs): nodes are bucketed by free-slot count
// (FreeIndex), so "how many nodes of this selector have >= r free slots" costs O(max slots) and best fit walks
// only the nodes that fit; nothing scans every node per job.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "coordinator/planner.h"

namespace anneal::coordinator::planner_detail {

// Free-slot count per node (nodes numbered in node-id order), bucketed by count, with cumulative counts per view (a
// node subset: the nodes matching one node_selector; view 0 is every node): "how many nodes of the view have >= r
// free" is one read (a pass asks it about three times per pending job).
class FreeIndex {
 public:
  FreeIndex(std::vector<uint32_t> free, uint32_t max_slots);

  uint32_t Free(uint32_t node) const { return free_[node]; }
  void Set(uint32_t node, uint32_t count);
  // Registers `members` (one flag per node) as the next view; returns its number.
  size_t AddView(const std::vector<char>* members);
  size_t CountAtLeast(size_t view, uint32_t slots) const {
    return slots < at_least_[view].size() ? at_least_[view][slots] : 0;
  }
  // Nodes of `view` with >= `slots` free, fewest free first then node id (best fit), until fn returns false.
  template <typename Fn>
  void WalkBestFit(size_t view, uint32_t slots, Fn&& fn) const;

 private:
  std::vector<uint32_t> free_;
  std::vector<std::vector<uint64_t>> buckets_;   // buckets_[k]: bitset of the nodes with exactly k free
  std::vector<const std::vector<char>*> views_;  // nullptr: every node
  std::vector<std::vector<uint32_t>> at_least_;  // at_least_[view][k]: nodes of the view with >= k free (k <= max + 1)
};

template <typename Fn>
void FreeIndex::WalkBestFit(size_t view, uint32_t slots, Fn&& fn) const {
  const std::vector<char>* members = views_[view];
  for (size_t k = slots; k < buckets_.size(); ++k) {
    if (at_least_[view][k] == at_least_[view][k + 1]) continue;  // none with exactly k free
    const auto& words = buckets_[k];
    for (size_t w = 0; w < words.size(); ++w) {
      uint64_t bits = words[w];
      while (bits != 0) {
        const uint32_t node = static_cast<uint32_t>(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
        bits &= bits - 1;
        if (members != nullptr && !(*members)[node]) continue;
        if (!fn(node)) return;
      }
    }
  }
}

// Node id -> node number over one flat open-addressing table: a hash-map node per node (5,000 of them) was a
// fifth of a pass's allocations. Built once per pass; duplicate ids keep the first (lowest) number.
class NodeIndex {
 public:
  explicit NodeIndex(const std::vector<const PlannerNode*>& nodes);
  static constexpr uint32_t kNone = UINT32_MAX;
  uint32_t Find(std::string_view id) const;  // kNone: not a schedulable node

 private:
  static uint64_t Hash(std::string_view id);
  const std::vector<const PlannerNode*>& nodes_;
  std::vector<uint32_t> table_;  // node number + 1; 0: empty
  uint64_t mask_ = 0;
};

struct TeamState {
  std::string name;
  double weight = 1.0;
  double usage = 0;
  std::vector<const QuotaEntry*> quota;  // per pool; nullptr: no entry (guaranteed 0, no max)
  std::vector<int64_t> held;             // per pool (PlannerPass::pools); pool of "" counts every held slot
  uint64_t held_total = 0;
  const QuotaEntry* Quota(size_t pool) const { return quota[pool]; }
};

// A node subset for one node_selector, with what follows from it.
struct View {
  std::vector<char> members;            // empty for view 0 (every node)
  size_t index_view = 0;                // the number FreeIndex knows it by (the same in every index)
  std::vector<size_t> pools;            // the job's matching pools ("" and the selector's labels that are pools)
  std::vector<uint32_t> idle_at_least;  // idle_at_least[r]: member nodes with total_slots >= r
  std::string missing_label;            // non-empty: no node has it ("k=v", or all pairs joined)
};

struct RunningState {
  const RunningJob* job = nullptr;
  uint32_t team = 0;
  std::span<const std::pair<uint32_t, uint32_t>> slots;  // (node, slots) on schedulable nodes (in running_slots)
  uint32_t total_slots = 0;
  int64_t end_ms = 0;    // expected end; 0: unknown
  bool freeing = false;  // being preempted or stopped (for its time limit, or chosen as a victim now)
};

struct ReservationState {
  uint32_t pending = 0;  // index into input.pending
  int64_t at_ms = 0;
  std::vector<uint32_t> nodes;
};

struct PlannerPass {
  explicit PlannerPass(const PlannerInput& input);

  const PlannerInput& in;
  std::vector<const PlannerNode*> nodes;  // by node id
  NodeIndex node_index;
  std::vector<const std::vector<uint32_t>*> slots;  // free slot indices per node, ascending; taken from slot_taken on
  std::vector<uint32_t> slot_taken;
  uint32_t max_slots = 0;
  FreeIndex real;                    // free slots now
  std::optional<FreeIndex> guarded;  // free slots a job that may outlive the reservation can use
  std::vector<uint32_t> spare;       // per node: what the reservation leaves (UINT32_MAX: not reserved)

  std::vector<View> views;
  std::map<std::map<std::string, std::string>, size_t> view_of_selector;
  std::deque<std::vector<char>> view_members_storage;  // stable addresses for the indexes' views
  std::vector<std::string> pools;
  std::vector<std::vector<char>> pool_members;

  std::vector<TeamState> teams;
  std::unordered_map<std::string, uint32_t> team_index;
  std::vector<RunningState> running;
  std::vector<std::pair<uint32_t, uint32_t>> running_slots;  // every RunningState::slots, one allocation
  std::vector<uint32_t> freed;                               // per node: slots of freeing jobs not yet claimed
  std::vector<std::vector<std::string>> freed_by;            // per node: ids of the freeing jobs there
  std::vector<uint32_t> freed_nodes;                         // nodes with freed > 0 (and, until pruned, ones now at 0)
  std::vector<char> freed_listed;                            // per node: in freed_nodes

  struct Started {
    std::vector<std::pair<uint32_t, uint32_t>> slots;  // (node, slots)
    int64_t end_ms = 0;                                // 0: unknown
  };
  std::vector<Started> started;          // jobs started in this pass, for the reservation's forecast
  std::vector<uint32_t> running_by_end;  // running jobs by expected end, sorted once (planner_reserve.cc)

  // Reclaims that found no victims, by (pool, view, nodes, ranks per node, outlives); cleared when held slots
  // or freeing jobs change, so identical shapes are answered at once while nothing changes.
  std::set<std::tuple<size_t, size_t, uint32_t, uint32_t, bool>> reclaim_failed;
  std::vector<uint32_t> scratch;  // per node, zero between uses
  // Eligible victims, built at the first reclaim (planner_victims.cc): one packed entry per eligible running job,
  // grouped by team, each team's entries in preference order (lowest priority, least work lost, job id), with
  // their (node, slots) pairs in one flat array, so the victim walk reads memory in order.
  struct Victim {
    uint32_t running;     // index into `running`
    uint32_t rank;        // place in the pass-wide preference order
    uint32_t all_slots;   // slots on schedulable nodes (what it gives back on pool 0)
    uint32_t slot_begin;  // its pairs: victim_slots[slot_begin, slot_end)
    uint32_t slot_end;
  };
  bool victims_built = false;
  std::vector<Victim> victims;
  std::vector<std::pair<uint32_t, uint32_t>> victim_slots;     // (node, slots)
  std::vector<std::pair<uint32_t, uint32_t>> victims_of_team;  // per team: [begin, end) in `victims`
  std::vector<uint32_t> victims_head;                          // per team: its entries before this one are all freeing
  std::vector<char> freeing;           // per running job: RunningState::freeing, packed (set by MarkFreeing)
  std::vector<char> eligible;          // per running job: has an entry in `victims` (until it is freeing)
  std::vector<uint32_t> victim_entry;  // per running job: its entry in `victims` (UINT32_MAX: none)
  std::vector<int64_t> victim_tree;    // Fenwick tree over each team's range of `victims`: all_slots, 0 once freeing
  // The entries that may still complete a node, per (team, ranks per node, outlives): next-live pointers over
  // the team's range (an entry that is freeing or whose nodes can never reach the ranks per node points past
  // itself; both stay so for the rest of the pass, as free slots and victims only go down).
  std::map<std::tuple<uint32_t, uint32_t, bool>, std::vector<uint32_t>> victims_live;
  // Per node, its eligible victims' entries ascending with their slots there (CSR: node_victims_begin[n] ..
  // node_victims_begin[n + 1]), and a log of the nodes whose free or freed slots or victims changed since the
  // victims were built: the per-key node costs (planner_preempt.cc) are brought up to date from it.
  std::vector<uint32_t> node_victims_begin;
  std::vector<std::pair<uint32_t, uint32_t>> node_victims;  // (entry, slots on the node)
  std::vector<uint32_t> changed_nodes;
  struct NodeCosts {
    std::vector<uint32_t> cost;                       // per node: the entry at which it fits; UINT32_MAX: never
    std::vector<std::pair<uint32_t, uint32_t>> heap;  // (cost, node), min first; stale when cost[node] differs
    size_t synced = 0;                                // changed_nodes seen
  };
  std::map<std::tuple<uint32_t, uint32_t, bool>, NodeCosts> node_costs;  // per (team, ranks per node, outlives)
  std::map<std::tuple<uint32_t, uint32_t, bool>, uint32_t> walks_per_key;
  void NodeChanged(uint32_t node) {
    if (victims_built) changed_nodes.push_back(node);
  }
  std::vector<uint32_t> victim_slots_on;  // per node: slots of eligible victims not freeing (an upper bound on
                                          // what victims can add there)
  // The temporary vectors of one reclaim (planner_reclaim.h, planner_preempt.cc), kept for the next: a pass makes
  // about a thousand reclaims, and allocating these each time was a tenth of a reclaim's cost. One reclaim at a time.
  struct ReclaimBuffers {
    std::vector<uint32_t> touched;                            // nodes whose `scratch` the reclaim set
    std::vector<int64_t> borrowed_left;                       // per team
    std::vector<std::pair<int64_t, uint32_t>> borrowers;      // (borrowed, team)
    std::vector<uint32_t> chosen;                             // victims' entries, then running indices
    std::vector<std::pair<uint32_t, uint32_t>> taken;         // ByNodeCosts: (cost, node) popped from the heap
    std::vector<uint32_t> have;                               // ByNodeCosts: per node, slots found by a fresh build
    std::vector<std::pair<uint32_t, uint32_t>> freed_before;  // (node, freed slots) before the claim
    std::vector<int64_t> held_before;                         // the beneficiary's team's held slots per pool
    std::vector<uint32_t> claim_nodes;                        // the nodes the claim takes
    std::vector<const std::string*> waits_for;                // ids of the jobs the claim waits for
    std::string reason_head;                                  // "team b below its guarantee (...) reclaims "
  };
  ReclaimBuffers reclaim_buffers;

  SchedulePlan plan;
  std::optional<ReservationState> reservation;

  // The fields of each pending job the walk reads, packed (the walk visits jobs out of input order).
  struct JobFacts {
    GangRequest gang;
    int32_t priority = 0;
    uint32_t team = 0;
    uint32_t view = 0;
    uint64_t submit_seq = 0;
    int64_t time_limit_ms = 0;
    std::vector<uint32_t> preferred;  // claimed_nodes then preferred_nodes that are schedulable, as node numbers
    uint32_t claimed = 0;             // how many of `preferred` are claimed nodes (they come first)
  };
  std::vector<JobFacts> jobs;  // per pending job, in input order

  uint32_t TeamOf(const std::string& name);
  void IndexPending();  // fills `jobs`
  size_t ViewFor(const std::map<std::string, std::string>& selector);
  size_t PoolIndex(const std::string& label) const;  // pools.size() when not a pool
  // Adds `sign * slots` on `node` to the team's held slots on every pool holding that node.
  void Charge(uint32_t team, uint32_t node, uint32_t slots, int sign);
  // Takes `count` free slots on `node` (lowest first); `outlives` says the taker may run past the reservation.
  std::vector<uint32_t> TakeFree(uint32_t node, uint32_t count, bool outlives);
  void MarkFreeing(uint32_t running_index);
  void PruneFreedNodes();  // drops the nodes whose freed slots are all claimed from freed_nodes
};

// Stage 1 (planner_victims.cc): time-limit stops.
void StopJobsPastTimeLimit(PlannerPass& pass);
// now - max(started_at, last checkpoint): what a kill now would cost (planner_victims.cc).
int64_t WorkLost(const RunningJob& job, int64_t now_ms);
// Stage 5's victim lists (planner_victims.cc): the eligible victims per team in preference order, built at the
// first reclaim of a pass; and, per node, its victims' entries (built at the first reclaim found from the nodes).
void BuildVictimLists(PlannerPass& pass);
void BuildNodeVictims(PlannerPass& pass);
// Stage 5 (planner_preempt.cc): reclaim for `job` (a pending index) on pool `pool`, placing with `index`.
// Returns the reason ("waiting for the preemption of ...") when the job's gang will fit once the freeing
// jobs (already freeing, or victims chosen now) have ended; the job's slots are then claimed.
std::optional<std::string> TryReclaim(PlannerPass& pass, uint32_t job, size_t pool, bool outlives);
// Stage 4 (planner_reserve.cc): the EASY reservation for `job`, which fits no free capacity now.
void Reserve(PlannerPass& pass, uint32_t job);
// Stage 6 (planner_reserve.cc): for each job of `waiting`, the earliest time enough nodes of its view have its
// slots free, from expected ends (0: a needed end is unknown). A lower bound: the jobs ahead are not counted.
void EstimateStarts(PlannerPass& pass, const std::vector<uint32_t>& waiting, std::vector<int64_t>& estimate);
// Placement on `index`: the `preferred` nodes that fit first, then best fit; node numbers, rank 0 first (with a
// free port); nullopt when it does not fit.
std::optional<std::vector<uint32_t>> PlaceOn(const PlannerPass& pass, const FreeIndex& index, size_t view,
                                             const GangRequest& gang, const std::vector<uint32_t>& preferred = {});
std::string FormatWhen(int64_t at_ms, int64_t now_ms);

}  // namespace anneal::coordinator::planner_detail
