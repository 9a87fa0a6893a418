// The scheduler benchmark's workload: a synthetic job trace drawn from a fixed seed (the only randomness in the
// benchmark), and the synthetic cluster snapshot for the single-pass timing.
//
// Trace: teams with weights (default a:b:c = 2:1:1) submit jobs in bursts spread over an arrival span sized so
// that the offered work is about `overload` times the cluster's capacity over that span: every team keeps a
// backlog for a long stretch. Gang shapes are whole nodes or parts of one (1x1 .. 8x8 slots), skewed to small;
// durations are lognormal (median 1 h, clipped to 5 min .. 48 h); time limits are the duration times a factor
// in [1, 3], and some jobs have none.
//
// Thread-safety: pure functions over values. Same config and seed, same trace, on every platform (the draws use
// std::mt19937_64 and our own transforms, not std::*_distribution, whose output is implementation-defined).
//
// Example:
//   TraceConfig config{.jobs = 5000, .nodes = 64, .slots_per_node = 8, .seed = 15};
//   std::vector<TraceJob> trace = MakeTrace(config);   // sorted by submit time, then id
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/planner.h"

namespace anneal::bench {

struct TeamSpec {
  std::string name;
  double weight = 1;
  double job_fraction = 1;  // share of the trace's jobs this team submits (normalised over teams)
};

struct TraceConfig {
  int jobs = 5000;
  uint32_t nodes = 64;
  uint32_t slots_per_node = 8;
  uint64_t seed = 15;
  double overload = 2.5;  // offered slot-hours / (capacity x arrival span)
  // c submits half the work with a quarter of the weight: strict FIFO hands it the cluster, fair share must not.
  std::vector<TeamSpec> teams = {{"a", 2, 0.3}, {"b", 1, 0.2}, {"c", 1, 0.5}};
};

struct TraceJob {
  std::string id;  // "job-00042"; ids sort in submit order
  int team = 0;    // index into TraceConfig::teams
  int32_t priority = 0;
  uint64_t submit_seq = 0;
  coordinator::GangRequest gang;
  int64_t submit_ms = 0;
  int64_t duration_ms = 0;    // work to do, uninterrupted
  int64_t time_limit_ms = 0;  // 0: none
  uint32_t slots() const { return gang.nodes * gang.ranks_per_node; }
};

std::vector<TraceJob> MakeTrace(const TraceConfig& config);

// Size classes for the per-size wait columns: "1", "2", "4", "8", "16", "32", "64" slots.
std::vector<uint32_t> SizeClasses();
size_t SizeClassOf(uint32_t slots);

// Offered slot-hours of a trace (sum of slots x duration).
double OfferedSlotHours(const std::vector<TraceJob>& trace);

// A one-pass snapshot for timing: `nodes` nodes of `slots_per_node`, about `fill` of the slots held by running
// jobs of mixed shapes (with start times, time limits and checkpoints), `pending` queued jobs of mixed shapes
// across the config's teams, guarantees = weighted shares of the cluster. `balanced`: the running jobs' teams
// are drawn by weight (every team near its guarantee: the steady state under fair share); otherwise by the
// teams' job fractions (some teams far below their guarantee: a pass full of reclaims).
coordinator::PlannerInput MakeSnapshot(uint32_t nodes, uint32_t slots_per_node, int pending, double fill, bool balanced,
                                       const TraceConfig& config);

// Node ids "node-0000".. (sorted order = numeric order).
std::string NodeId(uint32_t index);

}  // namespace anneal::bench
