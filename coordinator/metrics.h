// CoordinatorMetrics: what the coordinator's /metrics exports beyond the counts it reads from its state at
// render time: the scheduling pass latency, each team's wait from submit to first start, preemptions by kind.
// RenderCoordinatorMetrics writes the whole exposition (coordinator/http.h serves it).
//
// The event loop feeds it (Coordinator::RunSchedulingPass, coordinator/metrics_hooks.cc):
//   ObservePass(seconds)    the wall time of one scheduling pass (steady clock, not the injected one)
//   ObserveJobs(records)    after every pass, the active jobs: a job seen placed for the first time (attempt 1)
//                           adds (attempt_started_at_ms - submitted_at_ms) to its team's wait histogram; a job
//                           seen PREEMPTED that was not at the previous look counts one preemption of its kind
//                           (reclaim / time_limit).
//   Recovered(record)       a job loaded by Recover(): its placement and preemption happened before this
//                           process, so they are never counted.
// Placements and preemptions only happen inside a pass, so looking after each pass sees every one. Counters
// start at 0 with the process (Prometheus handles the reset).
//
// Exported (docs/coordinator.md, "Metrics"; names follow Prometheus conventions):
//   anneal_jobs{state}                              gauge      active jobs by state (every team)
//   anneal_queue_length                             gauge      pending jobs (every team)
//   anneal_nodes{state}, anneal_slots_up            gauge      nodes by state, slots on nodes that are up
//   anneal_team_jobs{team,state}                    gauge      active jobs by team and state
//   anneal_queue_jobs{team}                         gauge      queue depth: PENDING jobs per team
//   anneal_job_wait_seconds{team}                   histogram  submit -> first placement
//   anneal_scheduling_pass_seconds                  histogram  one scheduling pass
//   anneal_preemptions_total{kind}                  counter    kind = reclaim | time_limit
//   anneal_team_usage_slot_seconds{team}            gauge      decayed fair-share usage
//   anneal_team_weight{team}                        gauge      fair-share weight
//   anneal_team_guaranteed_slots{team,label}        gauge      guarantee per GPU-type label ("" = any)
//   anneal_team_max_slots{team,label}               gauge      borrowing limit per label (0 = none)
//   anneal_team_slots_held{team}                    gauge      slots the team's placed jobs hold now
//
// Thread-safety: none; the event loop owns it. The rendered text is handed to the HTTP thread as a snapshot.
//
// Example:
//   CoordinatorMetrics m;
//   m.ObservePass(0.0004);
//   m.ObserveJobs(records);
//   std::string text = RenderCoordinatorMetrics(core);   // core.metrics() is m
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/prometheus_text.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

class Coordinator;

// Upper bounds of the histograms (seconds).
std::vector<double> WaitSecondsBuckets();
std::vector<double> PassSecondsBuckets();

class CoordinatorMetrics {
 public:
  void ObservePass(double seconds) { pass_seconds_.Observe(seconds); }
  void ObserveJobs(const std::vector<const pb::JobRecord*>& active);
  void Recovered(const pb::JobRecord& record);

  // Writes the wait histograms (one per team in `teams` and per team observed), the pass histogram and the
  // preemption counters.
  void Write(prom::TextWriter& out, const std::set<std::string>& teams) const;

  const prom::Histogram& pass_seconds() const { return pass_seconds_; }
  const std::map<std::string, prom::Histogram>& wait_seconds() const { return wait_seconds_; }
  uint64_t preemptions(const std::string& kind) const;

 private:
  prom::Histogram pass_seconds_{PassSecondsBuckets()};
  std::map<std::string, prom::Histogram> wait_seconds_;  // team -> histogram
  std::map<std::string, uint64_t> preemptions_{{"reclaim", 0}, {"time_limit", 0}};
  std::set<std::string> placed_;     // active jobs already counted (or recovered placed)
  std::set<std::string> preempted_;  // active jobs PREEMPTED at the last look
};

// The full /metrics text of `core` (its state counts and core.metrics()). Event loop only.
std::string RenderCoordinatorMetrics(const Coordinator& core);

}  // namespace anneal::coordinator
