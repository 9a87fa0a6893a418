// Reclaim (internal to the planner): the victim search of one reclaim preemption (stage 5 of
// coordinator/planner.h) and the claim of the freed slots. TryReclaim (planner_preempt.cc) drives it; the
// victim lists it searches are built in planner_victims.cc; its member functions are in planner_reclaim.cc
// and, for the fast walks of the usual case (one team, pool "", every node), planner_reclaim_walks.cc.
//
// Thread-safety: none (one planner pass). Ownership: borrows the pass; its destructor clears the scratch
// counts it touched.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/planner_internal.h"

namespace anneal::coordinator::planner_detail {

inline uint32_t Guaranteed(const TeamState& team, size_t pool) {
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
        per_node_(job_.gang.ranks_per_node),
        touched_(pass.reclaim_buffers.touched),
        borrowed_left_(pass.reclaim_buffers.borrowed_left) {
    touched_.clear();
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
  // freeing jobs suffice); nullptr when no set of victims does. The vector is the pass's reclaim buffer: valid
  // until the next reclaim.
  const std::vector<uint32_t>* ChooseVictims();
  // Holds the gang's slots (freeing first, then free) so later jobs do not take them; returns the ids of the
  // jobs it waits for, sorted and distinct (a reclaim buffer of the pass, valid until the next reclaim).
  const std::vector<const std::string*>& Claim();

 private:
  bool Member(uint32_t node) const { return view_.members.empty() || view_.members[node]; }
  uint32_t Avail(uint32_t node) const { return index_.Free(node) + pass_.freed[node] + pass_.scratch[node]; }
  bool Helps(const PlannerPass::Victim& v) const;
  bool TouchesFittingNode(const PlannerPass::Victim& v) const;
  void Add(const PlannerPass::Victim& v, int sign);
  // What taking `v` takes from its team's borrowing on the reclaim's pool.
  int64_t PoolSlots(const PlannerPass::Victim& v) const;
  // Teams above their guarantee on the pool with eligible victims, borrowing the most first (ties by team);
  // sets borrowed_left_ for each. Fills the pass's reclaim buffer `borrowers`.
  const std::vector<std::pair<int64_t, uint32_t>>& Borrowers();
  // The next entry of team `t`'s list at or after `next` that is not freeing (its end when none).
  uint32_t SkipFreeing(uint32_t t, uint32_t next) const;
  // Can `v` be part of a fitting node: does one of its nodes reach per_node with every eligible victim there?
  bool MayCompleteANode(const PlannerPass::Victim& v) const;
  // Takes candidate `entry` of `team`. A candidate none of whose nodes can ever fit is taken only in what it
  // counts against its team's borrowing: it would change no fit count and the fewest step would drop it.
  void Take(uint32_t entry, uint32_t team, std::vector<uint32_t>& chosen);
  // The last entry of team t's range that the walk may take: the first at which the slots of the entries not
  // freeing, from the range's start, reach `borrowed` (a team gives while it is above its guarantee, counting
  // every candidate taken); the range's last entry when they never do.
  uint32_t Cutoff(uint32_t t, int64_t borrowed) const;
  // The entry of team t's range at which `node` fits (with the free and freed slots and t's victims there that
  // are not freeing, in preference order); UINT32_MAX when it fits already or never does.
  uint32_t NodeCost(uint32_t t, uint32_t node) const;
  // The walk of one team on pool "" over every node, found from the nodes: the walk stops at the entry where
  // the gang's last missing node fits, i.e. the (nodes still needed)-th smallest node cost, if that is within
  // the team's cutoff. The victims it took there that touch those nodes are added (the fewest step drops every
  // other one anyway: their nodes do not fit). Node costs are kept per (team, ranks per node, outlives) and
  // brought up to date from pass.changed_nodes. Returns false (nothing taken) when the walk would not fit.
  bool ByNodeCosts(uint32_t t, std::vector<uint32_t>& chosen);
  // One team on pool "" over every node (the usual reclaim), with exactly the result of TakeFromGroup's walk:
  // only the entries that may still complete a node are visited (the others would only count against the
  // team's borrowing, which Cutoff sums), and the walk's next-live pointers skip the others from then on.
  void WalkLive(uint32_t t, std::vector<uint32_t>& chosen);
  // Takes candidates of the teams [begin, end) (one group) until the gang fits: a merge of the teams' lists
  // by preference rank, skipping jobs already freeing, teams that would go below their own guarantee, and
  // jobs with no slot on the job's nodes.
  void TakeFromGroup(const std::pair<int64_t, uint32_t>* begin, const std::pair<int64_t, uint32_t>* end,
                     std::vector<uint32_t>& chosen);

  PlannerPass& pass_;
  uint32_t job_index_;
  const PendingJob& job_;
  const View& view_;
  uint32_t team_;
  const FreeIndex& index_;
  size_t pool_;
  uint32_t per_node_;
  size_t fitting_ = 0;
  std::vector<uint32_t>& touched_;       // the pass's reclaim buffer
  std::vector<int64_t>& borrowed_left_;  // per team: slots it borrows on the pool, less the victims taken
};

}  // namespace anneal::coordinator::planner_detail
