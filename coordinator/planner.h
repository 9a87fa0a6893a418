// Planner: the scheduling decision as a pure function from plain values (queue, team quotas and usage, node
// capacity, running jobs, now) to a plan (start, preempt, reserve, and a reason for each pending job). The
// coordinator builds a PlannerInput from its state, calls PlanSchedule, and applies the plan separately
// (coordinator/scheduling.cc); bench/scheduler drives the same function with an injected clock.
//
// Stages (docs/coordinator.md "Scheduling"):
//   1. Time limits: a running job past started_at + time_limit is stopped (Preemption{kind = kTimeLimit}).
//   2. Order: pending jobs interleaved across teams by fair share. The next job comes from the team furthest
//      below its weighted share (lowest (decayed usage + slots held now x share_horizon_s) / weight, ties by
//      team name); within a team, priority (higher first) then submit_seq (FIFO). A job is charged to its team
//      in this ordering as soon as it is ordered, so one pass interleaves teams instead of draining one.
//      Claims first: jobs with claimed_nodes (victims were preempted for them in earlier passes and they have
//      not started) lead the order, in that fair-share order, each charged to its team's matching pools like a
//      covered job (below): the slots their victims free reach them, and their preemptions are not wasted.
//      Then guarantees first: the jobs their team's guarantee covers (held + the job <= guaranteed on one of its
//      matching pools, see stage 3; each covered job is charged to every matching pool of its team as it is
//      taken, in the fair-share order above) lead the order, in that fair-share order; every other job follows
//      in fair-share order. So slots that free for a team below its guarantee (its victims' or any job's) go to
//      it, not to a borrowing team with lower usage, which would make it reclaim again. A job that can never
//      be placed (stage 3's kNever, a missing label) is never covered.
//   3. Feasibility per job: node_selector (every key=value on the node), quota (the team's slots held on each
//      matching pool, plus the job's, within `max`; a job's matching pools are "" and every pool whose label
//      is one of its node_selector pairs), the gang shape (PlaceGang's kNever is reported, never blocks
//      anyone).
//   4. Placement in order, EASY backfill. A gang takes its claimed nodes that fit first, then its preferred nodes
//      that fit (the nodes holding its checkpoint and data cache: a resumed job does not copy them again), rank 0 on
//      the first of them with a free rendezvous port; the rest best fit (fewest free slots first). The first job that
//      fits quota but not the free capacity gets a reservation (the earliest time enough slots free, from running jobs'
//      expected ends = started_at
//      + time_limit; nodes and slots named). Later jobs start now only if they fit the free capacity and either end
//      before the reservation (now + time_limit <= reserved_at) or use no slot the reservation needs. A job without a
//      time limit backfills only into slots the reservation does not need. When no reservation time is known (some
//      needed slots are held by jobs without a time limit), the reservation still holds the slots it would take first
//      (the nodes whose holders end soonest, unknown ends last) and has no time.
//   5. Preemption: a job whose team is within its guarantee (held + job <= guaranteed on a matching pool) and that
//      cannot be placed may reclaim slots from jobs of teams above their own guarantee (borrowers). Victims are
//      whole gangs (never part of one), chosen in order: jobs of teams borrowing the most first, then lowest
//      priority, then least work lost (now - last checkpoint or start), ties by job id; a job that started less
//      than min_runtime_ms ago, one whose preemption budget is spent, or one already being preempted is never a
//      victim. Victims are taken in that order until the job's gang fits (a team stops giving once it is no
//      longer above its guarantee), then every victim the gang does not need is dropped, least
//      preferred first (the fewest victims); if no such set exists, nobody is preempted. The beneficiary does not start
//      in this pass (the victims still hold their slots); it keeps its place, holds the slots it will take (freeing
//      slots on its claimed nodes first, then the nodes with the most freeing slots)
//      (later jobs of the pass do not get them) and is reported as waiting for them. Slots of jobs already
//      being preempted or stopped count as freed for this decision (no second round of victims for the same
//      need).
//   6. Explanations: every pending job not started gets a reason (over quota; behind K jobs of teams within
//      their guarantee and/or L jobs of teams with lower usage; waiting for N nodes with M free slots; reserved for job
//      X until T; no node has label k=v; waiting for the preemption of X) and an estimated start (0: unknown): the
//      reservation's time for the reserved job and for jobs that fit only the slots it holds; for other jobs waiting
//      for capacity the earliest time enough slots of matching nodes free from expected ends (a lower bound: the jobs
//      ahead are not counted); 0 for jobs waiting for a preemption, over quota, or that can never fit.
//
// Pools and quotas: a quota entry names a label ("gpu=h100") or "" for the whole cluster; a slot on a node
// counts toward every entry whose label the node has (and toward ""). A team without an entry for a pool has
// guaranteed 0 and max unlimited there; a team with no entry at all is unlimited and guaranteed nothing.
//
// Thread-safety: pure function over values; safe to call concurrently on different inputs. A SchedulePlan is a
// value: its const members may be called from several threads at once.
// Complexity goal: one pass <= 10 ms p99 at 5,000 nodes and 10,000 pending jobs (bench/scheduler).
//
// Example:
//   PlannerInput in{.now_ms = clock.NowMs(), .nodes = ..., .running = ..., .pending = ..., .teams = ...};
//   SchedulePlan plan = PlanSchedule(in);
//   for (const auto& s : plan.starts) launch(s.job_id, s.placement.nodes);
//   for (const auto& p : plan.preemptions) preempt(p.victim_job_id, p.reason);
//   for (const auto& why : plan.pending) record(why.job_id, plan.Reason(why), why.estimated_start_ms);
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coordinator/scheduler.h"

namespace anneal::coordinator {

struct PlannerNode {
  std::string node_id;
  std::map<std::string, std::string> labels;
  uint32_t total_slots = 0;
  std::vector<uint32_t> free_slots;  // ascending, not held by any running job
  bool has_free_port = true;         // a rendezvous port is free (node rank 0 only)
};

struct QuotaEntry {
  std::string label;        // "key=value", or "" for the whole cluster
  uint32_t guaranteed = 0;  // slots the team may always reclaim (by preemption of borrowers)
  uint32_t max = 0;         // slots the team may hold at most on the pool (guaranteed + borrowing); 0: no limit
};

struct TeamPolicy {
  std::string name;
  double weight = 1.0;             // > 0; fair share is weight / sum of weights of teams with pending jobs
  double decayed_usage = 0;        // slot-seconds, decayed with the usage half-life (coordinator/usage.h)
  std::vector<QuotaEntry> quotas;  // at most one entry per label
};

struct RunningJob {
  std::string job_id;
  std::string team;
  int32_t priority = 0;
  std::map<std::string, uint32_t> slots_by_node;  // node id -> slots this job holds there
  int64_t started_at_ms = 0;
  int64_t time_limit_ms = 0;       // 0: none
  int64_t last_checkpoint_ms = 0;  // commit time of its latest checkpoint of this attempt; 0: none
  bool preemptible = true;         // false once its preemption budget is spent
  bool being_preempted = false;    // a preemption (or a stop) is under way: its slots are about to free
  int64_t expected_end_ms() const { return time_limit_ms > 0 ? started_at_ms + time_limit_ms : 0; }
};

struct PendingJob {
  std::string job_id;
  std::string team;
  int32_t priority = 0;
  uint64_t submit_seq = 0;
  GangRequest gang;
  std::map<std::string, std::string> node_selector;  // every pair must be among the node's labels
  int64_t time_limit_ms = 0;                         // 0: none
  int64_t submitted_at_ms = 0;
  // Nodes that already hold the job's files (its latest checkpoint, its previous attempt's dataset cache), most
  // preferred first: placement takes those that fit before any other (stage 4).
  std::vector<std::string> preferred_nodes;
  // The nodes of the jobs preempted for this job in earlier passes (a reclaim's victims), while it has not started:
  // their slots are freeing or freed for it. Such a job leads the order (stage 2) and takes these nodes before
  // any other (before preferred_nodes), so the slots its victims free reach it, not a job ahead of it.
  std::vector<std::string> claimed_nodes;
};

struct PlannerConfig {
  bool preemption = true;
  int64_t min_runtime_ms = 10 * 60 * 1000;  // a job younger than this is never a victim
  double share_horizon_s = 3600;            // weight of slots held now against decayed usage (stage 2)
  bool backfill = true;                     // false: strict order, the first job that cannot start blocks all
};

struct PlannerInput {
  int64_t now_ms = 0;
  std::vector<PlannerNode> nodes;  // schedulable nodes only (UP and connected)
  std::vector<RunningJob> running;
  std::vector<PendingJob> pending;
  std::vector<TeamPolicy> teams;  // teams with no entry: weight 1, usage 0, no quota
  PlannerConfig config;
};

struct PlannedStart {
  std::string job_id;
  std::vector<ChosenNode> nodes;  // nodes[0] is node rank 0 (has a free rendezvous port)
};

enum class PreemptionKind {
  kReclaim,    // a team within its guarantee takes back borrowed slots
  kTimeLimit,  // the job ran past its time_limit: checkpoint and stop (it ends, it is not requeued)
};

struct Preemption {
  std::string victim_job_id;
  std::string beneficiary_job_id;  // empty for kTimeLimit
  PreemptionKind kind = PreemptionKind::kReclaim;
  int64_t work_lost_ms = 0;  // now - max(started_at, last_checkpoint): what a kill now would cost
  std::string reason;        // for events: "team b below its guarantee (2 of 4 slots) reclaims 4 slots for job-..."
};

struct Reservation {
  std::string job_id;
  int64_t at_ms = 0;                              // 0: unknown (some needed slots have no expected end)
  std::map<std::string, uint32_t> slots_by_node;  // what it will take
};

// Why a pending job did not start. The reason's text is rendered from the plan (SchedulePlan::Reason or
// AppendReason), not stored per job: one pass explains up to every queued job, and a text of its own for each (an
// allocation each, "behind 1234 job(s) of teams with lower usage; waiting for ...") was a quarter of a pass without
// preemptions (docs/benchmarks.md). A caller that keeps reasons renders into one buffer and copies only those that
// changed (coordinator/scheduling.cc).
struct PendingExplanation {
  std::string job_id;
  int64_t estimated_start_ms = 0;  // 0: unknown
  uint32_t position = 0;           // 1-based place in the fair-share order of this pass
  // The reason: "behind G job(s) of teams within their guarantee and L job(s) of teams with lower usage; " when G
  // or L is not 0 (either part alone when the other is 0), then SchedulePlan::reason_texts[text].
  uint32_t text = 0;
  uint32_t behind_guaranteed = 0;  // G: jobs of other teams ahead, of teams within their guarantee
  uint32_t behind_lower = 0;       // L: jobs of other teams ahead, of teams with lower usage
};

struct SchedulePlan {
  std::vector<PlannedStart> starts;        // in order; each fits the capacity left by the ones before it
  std::vector<Preemption> preemptions;     // time limits first, then reclaims
  std::optional<Reservation> reservation;  // the first job that could not start (EASY: one reservation)
  // Every pending job not in `starts`, in input order (PlannerInput::pending): a flat vector, not a map by id, since
  // one pass explains up to every queued job and a map node per job was a tenth of the pass (docs/benchmarks.md).
  // A job id that appears twice in the input gets two entries.
  std::vector<PendingExplanation> pending;
  std::vector<std::string> reason_texts;  // shared by the explanations: many jobs wait for the same thing
  std::vector<std::string> order;         // the fair-share order of the pending jobs (stage 2)

  // The reason of `why` (an entry of `pending`), e.g. "behind 3 job(s) of teams with lower usage; waiting for 2
  // node(s) with 8 free slot(s); 0 have them now".
  std::string Reason(const PendingExplanation& why) const;
  // Appends the same text to `out`: no allocation once `out` has the room (the coordinator renders every pending
  // job's reason into one buffer and compares it with the one it stored).
  void AppendReason(const PendingExplanation& why, std::string& out) const;
};

SchedulePlan PlanSchedule(const PlannerInput& input);

// The explanation of pending job `job_id` in `plan`, or nullptr when the job started or was not in the input. A
// linear search, for tests and tools that look up a few jobs; a caller explaining every job iterates plan.pending.
const PendingExplanation* FindPending(const SchedulePlan& plan, std::string_view job_id);

// Does `node` carry every label of `selector`? Also "key=value" labels of quota pools ("" matches every node).
bool NodeMatches(const std::map<std::string, std::string>& node_labels,
                 const std::map<std::string, std::string>& selector);
bool NodeInPool(const std::map<std::string, std::string>& node_labels, const std::string& pool_label);

}  // namespace anneal::coordinator
