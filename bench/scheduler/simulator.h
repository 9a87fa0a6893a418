// Trace-driven, event-driven simulation of the coordinator's scheduling with the real scheduling code and
// simulated time (no sleeping, no threads): the only fakes are the clock and the trace's random draws.
//
// Events, in time order (at one instant: job ends, then preemption grace expiries, then arrivals, then ticks):
//   arrival  -> the job joins the queue;
//   end      -> the job finished its remaining work: its slots free;
//   free     -> a preempted job's grace period (SimConfig::grace_ms) is over: its slots free, and it goes back to
//               the queue with remaining work = remaining - work up to its last checkpoint (checkpoints every
//               checkpoint_every_ms of an attempt); a job stopped at its time limit ends instead;
//   tick     -> every tick_ms while jobs wait (time limits and minimum runtimes expire between events).
// After the events of an instant, one scheduling pass:
//   Policy::kFifo    - today's coordinator (coordinator/scheduling.cc Schedule()): the queue by priority then
//                      submit order, PlaceGang for each, the first job that waits blocks all behind it (a job
//                      that can never fit is skipped); no fair share, no backfill, no preemption, no time limits.
//   Policy::kPlanner - PlanSchedule (coordinator/planner.h) over a PlannerInput built from the simulated state:
//                      nodes' free slots, running jobs (started_at, time_limit, last checkpoint, budget), the
//                      queue, teams' weights, decayed usage (coordinator/usage.h AccrueUsage) and quotas
//                      (guaranteed = the weighted share of the cluster, max = the whole cluster), and with
//                      SimConfig::carry_claims, for each beneficiary of a reclaim that has not started, the nodes
//                      of its victims (PendingJob::claimed_nodes). The plan is
//                      applied as the coordinator would: starts take their slots now, preemptions free the
//                      victims' slots after the grace period.
// Every plan is checked against the state (a start must be a queued job on free slots; a victim must be a
// running job not already being preempted); a violation is recorded and the action skipped.
//
// Thread-safety: Simulate is a pure function of its arguments (it reads the steady clock only to time passes).
//
// Example:
//   SimResult fifo = Simulate(trace, config, Policy::kFifo);
//   SimResult planner = Simulate(trace, config, Policy::kPlanner);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bench/scheduler/trace.h"
#include "coordinator/planner.h"

namespace anneal::bench {

enum class Policy { kFifo, kPlanner };

struct SimConfig {
  uint32_t nodes = 64;
  uint32_t slots_per_node = 8;
  std::vector<TeamSpec> teams;
  int64_t tick_ms = 10 * 60 * 1000;
  int64_t checkpoint_every_ms = 30 * 60 * 1000;
  int64_t grace_ms = 60 * 1000;
  int64_t usage_half_life_ms = 12LL * 3600 * 1000;
  uint32_t preemption_budget = 5;  // preemptions a job may take before it is no longer a victim
  bool carry_claims = false;       // hand a beneficiary its victims' nodes (PendingJob::claimed_nodes) until it starts
  coordinator::PlannerConfig planner;
};

struct JobOutcome {
  int64_t first_start_ms = -1;  // -1: never started
  int64_t end_ms = -1;          // -1: never ended
  bool time_limited = false;    // stopped at its time limit
  uint32_t preemptions = 0;
};

// A stretch of simulated time with constant holdings.
struct Segment {
  int64_t begin_ms = 0;
  int64_t end_ms = 0;
  bool any_pending = false;
  bool all_teams_pending = false;
  std::vector<uint32_t> held_by_team;  // slots held (including jobs in their grace period)
};

struct SimResult {
  Policy policy = Policy::kFifo;
  std::vector<JobOutcome> jobs;  // by trace index
  std::vector<Segment> timeline;
  double lost_slot_ms = 0;  // slots x (preemption - last checkpoint or start), for reclaims
  uint64_t preemptions = 0;
  uint64_t time_limit_stops = 0;
  std::vector<double> pass_ms;  // wall time of each scheduling decision (PlanSchedule, or the FIFO walk)
  uint64_t max_pending = 0;
  // Reclaim diagnostics: victim team x beneficiary team; beneficiaries; passes that named a beneficiary again
  // (its earlier victims' slots went to someone else); delay from the first reclaim for a job to its start.
  std::vector<std::vector<uint64_t>> reclaims_by_team;
  uint64_t beneficiaries = 0;
  uint64_t repeated_reclaim_passes = 0;
  uint64_t repeated_during_grace = 0;  // ... while an earlier victim for it was still in its grace period
  std::vector<double> beneficiary_delay_ms;
  std::vector<std::string> violations;  // plan checks that failed (at most 20 kept) and a stuck queue
  uint64_t violation_count = 0;
};

SimResult Simulate(const std::vector<TraceJob>& trace, const SimConfig& config, Policy policy);

}  // namespace anneal::bench
