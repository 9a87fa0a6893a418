// The scheduler benchmark's measures and its markdown tables.
//
// Measures per policy, from a SimResult:
//   - utilization: busy slot-time / capacity, while any job waits (the stretch where the scheduler decides how
//     much of the cluster is used) and over the makespan (first arrival to last end);
//   - fair share: the longest stretch in which every team has a job waiting ("all backlogged"); each team's
//     share of the slot-hours used in it against its weight share, and Jain's index over share/weight
//     (1 = exactly weighted, 1/n = one team has everything);
//   - waits (first start - submit) p50/p99 per team and per size class;
//   - slot-hours lost to preemption, preemptions, time-limit stops, the pass's own wall time.
// Goals: the planner's utilization while jobs wait >= FIFO's + 10 points; its Jain index >= 0.95; one pass at
// 5,000 nodes and 10,000 pending jobs <= 10 ms p99 (the timing table).
//
// Thread-safety: pure functions; Print* write to the given FILE.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "bench/scheduler/simulator.h"
#include "bench/scheduler/trace.h"

namespace anneal::bench {

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
  size_t count = 0;
};

// Nearest-rank percentiles (count 0: no samples).
Percentiles PercentilesOf(std::vector<double> samples);

struct PolicyMeasures {
  std::string name;
  double utilization_waiting = 0;  // fraction
  double utilization_makespan = 0;
  double utilization_window = 0;        // in the all-backlogged window
  double net_utilization_makespan = 0;  // less the slot-hours lost to preemption
  double makespan_h = 0;
  double waiting_h = 0;  // simulated hours with a job waiting
  // The makespan's tail: the job that ends last ("job-04809 (team c, 8 slots, 22.4 h): submitted 58.2 h, first started
  // 152.8 h") and the hours from the last moment a job waited to the last end (the cluster drains).
  std::string last_job;
  double drain_h = 0;
  double window_begin_h = 0;
  double window_end_h = 0;
  std::vector<double> team_share;  // of slot-hours used in the window
  double jain = 0;
  std::vector<Percentiles> wait_by_team_h;
  std::vector<Percentiles> wait_by_size_h;
  double lost_slot_hours = 0;
  uint64_t preemptions = 0;
  uint64_t time_limit_stops = 0;
  Percentiles pass_ms;
  uint64_t max_pending = 0;
  uint64_t violations = 0;
};

PolicyMeasures Measure(const std::string& name, const SimResult& result, const std::vector<TraceJob>& trace,
                       const SimConfig& config);

// Jain's fairness index over x_i = share_i / weight_share_i.
double JainIndex(const std::vector<double>& shares, const std::vector<double>& weight_shares);

struct Goals {
  bool utilization = false;
  bool fairness = false;
};

// The comparison table; returns whether the planner met the utilization and fairness goals.
Goals PrintComparison(std::FILE* out, const PolicyMeasures& fifo, const PolicyMeasures& planner,
                      const SimConfig& config, size_t jobs);

struct TimingMeasures {
  std::string snapshot;  // what the snapshot is
  uint32_t nodes = 0;
  size_t running = 0;
  size_t pending = 0;
  double fill = 0;
  int reps = 0;
  Percentiles pass_ms;  // wall clock
  Percentiles cpu_ms;   // the thread's CPU time (less sensitive to other processes on a loaded machine)
  size_t starts = 0;
  size_t preemptions = 0;
  size_t reason_chars = 0;  // the pending jobs' reasons, rendered with the pass (their total length)
};

// Who preempted whom and whether the reclaimed slots reached their beneficiary.
void PrintReclaims(std::FILE* out, const SimResult& planner, const SimConfig& config);

// One row per snapshot; the goal (p99 <= 10 ms) is judged on each.
void PrintTiming(std::FILE* out, const std::vector<TimingMeasures>& timings);

}  // namespace anneal::bench
