// Scheduler benchmark (docs/benchmarks.md "Scheduler", issue 15): a trace-driven simulation of the coordinator's
// scheduling with the real code (coordinator/planner.h PlanSchedule; today's strict FIFO walk over PlaceGang as
// the baseline in the same run) and simulated time, then the timing of one PlanSchedule pass over a large
// synthetic snapshot. Prints markdown tables with PASS/FAIL per goal.
//
//   build/bin/scheduler_bench                 # 5,000 jobs, 64 nodes x 8, timing at 5,000 nodes / 10,000 pending
//   build/bin/scheduler_bench --quick         # CI: 600 jobs on 16 nodes, 5 timing reps (ctest bench.scheduler_quick)
//
// Exit status: 0; 2 when a plan was invalid against the simulated state (or the queue got stuck); 3 with
// --check-goals when the utilization or fairness goal is missed. Timing never fails the run.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string_view>

#include "bench/scheduler/report.h"
#include "bench/scheduler/simulator.h"
#include "bench/scheduler/trace.h"

namespace {

using namespace anneal::bench;

struct Options {
  bool quick = false;
  int jobs = 5000;
  uint32_t nodes = 64;
  uint64_t seed = 15;
  double overload = 2.5;
  int reps = 200;
  uint32_t timing_nodes = 5000;
  int timing_pending = 10000;
  double timing_fill = 0.9;
  bool skip_timing = false;
  bool skip_simulation = false;
  bool digest = false;
  bool claims = false;
  int snapshot = 0;  // 0: all three timed snapshots; 1-3: only that one (for callgrind)
  bool check_goals = false;
};

// FNV-1a over everything a plan says (starts with their slots, preemptions, reservation, explanations by id).
uint64_t PlanDigest(const anneal::coordinator::SchedulePlan& plan) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](std::string_view text) {
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  };
  for (const auto& s : plan.starts) {
    mix(s.job_id);
    for (const auto& n : s.nodes) {
      mix(n.node_id);
      for (uint32_t slot : n.slots) mix(std::to_string(slot));
    }
  }
  for (const auto& p : plan.preemptions) {
    mix(p.victim_job_id);
    mix(p.beneficiary_job_id);
    mix(p.reason);
  }
  if (plan.reservation) {
    mix(plan.reservation->job_id);
    mix(std::to_string(plan.reservation->at_ms));
    for (const auto& [node, slots] : plan.reservation->slots_by_node) mix(node + std::to_string(slots));
  }
  std::vector<const anneal::coordinator::PendingExplanation*> by_id;  // by id: the digest does not depend on order
  for (const auto& why : plan.pending) by_id.push_back(&why);
  std::sort(by_id.begin(), by_id.end(), [](const auto* a, const auto* b) { return a->job_id < b->job_id; });
  for (const auto* entry : by_id) {
    const auto& why = *entry;
    mix(why.job_id);
    mix(plan.Reason(why));
    mix(std::to_string(why.estimated_start_ms) + "/" + std::to_string(why.position));
  }
  for (const auto& id : plan.order) mix(id);
  return h;
}

// What the coordinator does with every pending job's reason after a pass (coordinator/scheduling.cc): renders it
// into one buffer to compare it with the one it stored. Timed with the pass, since the plan carries reasons as texts
// shared by many jobs plus counts, rendered here (the pass used to build one text per job itself). Its
// own function so that callgrind can count it too (--toggle-collect='*RenderReasons*').
[[gnu::noinline]] size_t RenderReasons(const anneal::coordinator::SchedulePlan& plan) {
  std::string reason;
  size_t total = 0;
  for (const auto& why : plan.pending) {
    reason.clear();
    plan.AppendReason(why, reason);
    total += reason.size();
  }
  return total;
}

TimingMeasures TimeOnePass(const Options& o, const TraceConfig& trace_config, bool balanced, bool preemption) {
  anneal::coordinator::PlannerInput in = MakeSnapshot(o.timing_nodes, trace_config.slots_per_node, o.timing_pending,
                                                      o.timing_fill, balanced, trace_config);
  in.config.preemption = preemption;
  TimingMeasures t;
  t.snapshot = balanced ? "teams near their guarantees" : "teams a and b far below their guarantees";
  if (!preemption) t.snapshot += ", preemption off (order, placement, backfill, reasons only)";
  t.nodes = o.timing_nodes;
  t.running = in.running.size();
  t.pending = in.pending.size();
  t.reps = o.reps;
  uint64_t held = 0;
  for (const auto& r : in.running) {
    for (const auto& [node, slots] : r.slots_by_node) held += slots;
  }
  t.fill = static_cast<double>(held) / (static_cast<double>(o.timing_nodes) * trace_config.slots_per_node);
  std::vector<double> samples, cpu_samples;
  auto cpu_now = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
  };
  // At most `reps` repetitions, and no more than a minute of them (a slow planner must not stall the run).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; i < o.reps && (i < 3 || std::chrono::steady_clock::now() < deadline); ++i) {
    const double cpu_begin = cpu_now();
    const auto begin = std::chrono::steady_clock::now();
    anneal::coordinator::SchedulePlan plan = anneal::coordinator::PlanSchedule(in);
    t.reason_chars = RenderReasons(plan);
    samples.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count());
    cpu_samples.push_back(cpu_now() - cpu_begin);
    t.starts = plan.starts.size();
    t.preemptions = plan.preemptions.size();
    if (o.digest && i == 0) fmt::print("plan digest ({}): {:016x}\n", t.snapshot, PlanDigest(plan));
  }
  t.reps = static_cast<int>(samples.size());
  t.pass_ms = PercentilesOf(std::move(samples));
  t.cpu_ms = PercentilesOf(std::move(cpu_samples));
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Anneal scheduler benchmark: fair share, backfill and preemption vs strict FIFO (simulated)"};
  app.add_flag("--quick", o.quick, "small trace (600 jobs, 16 nodes) and 5 timing reps, for CI");
  app.add_option("--jobs", o.jobs, "jobs in the trace")->check(CLI::Range(10, 1'000'000));
  app.add_option("--nodes", o.nodes, "nodes of 8 slots in the simulated cluster")->check(CLI::Range(8, 100'000));
  app.add_option("--seed", o.seed, "the trace's random seed");
  app.add_option("--overload", o.overload, "offered work / capacity over the arrival span")
      ->check(CLI::Range(0.1, 100.0));
  app.add_option("--reps", o.reps, "repetitions of the timed pass (at most a minute of them, at least 3)")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--timing-nodes", o.timing_nodes, "nodes in the timing snapshot")->check(CLI::Range(1, 1'000'000));
  app.add_option("--timing-pending", o.timing_pending, "pending jobs in the timing snapshot")
      ->check(CLI::Range(0, 10'000'000));
  app.add_flag("--skip-timing", o.skip_timing, "only the simulation");
  app.add_flag("--skip-simulation", o.skip_simulation, "only the timed passes (for profiling)");
  app.add_option("--snapshot", o.snapshot,
                 "time only one snapshot: 1 near guarantees, 2 far below, 3 preemption off (0: all)")
      ->check(CLI::Range(0, 3));
  app.add_flag("--claims", o.claims, "carry a beneficiary's claim on its victims' nodes across passes (claimed_nodes)");
  app.add_flag("--digest", o.digest, "print a digest of each timed snapshot's plan (to compare planner versions)");
  app.add_flag("--check-goals", o.check_goals, "exit 3 when the utilization or fairness goal is missed");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    if (app.count("--jobs") == 0) o.jobs = 600;
    if (app.count("--nodes") == 0) o.nodes = 16;
    if (app.count("--reps") == 0) o.reps = 5;
  }

  TraceConfig trace_config{.jobs = o.jobs, .nodes = o.nodes, .seed = o.seed, .overload = o.overload};
  const std::vector<TraceJob> trace = MakeTrace(trace_config);
  SimConfig sim;
  sim.nodes = o.nodes;
  sim.slots_per_node = trace_config.slots_per_node;
  sim.teams = trace_config.teams;
  sim.carry_claims = o.claims;

  fmt::print("## Scheduler benchmark (seed {}, offered {:.0f} slot-hours, {:.1f}x capacity while jobs arrive)\n",
             o.seed, OfferedSlotHours(trace), o.overload);
  Goals goals{true, true};
  uint64_t violations = 0;
  if (!o.skip_simulation) {
    const auto wall = std::chrono::steady_clock::now();
    const SimResult fifo = Simulate(trace, sim, Policy::kFifo);
    const SimResult planner = Simulate(trace, sim, Policy::kPlanner);
    const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
    goals = PrintComparison(stdout, Measure("FIFO (today)", fifo, trace, sim),
                            Measure("Anneal planner", planner, trace, sim), sim, trace.size());
    PrintReclaims(stdout, planner, sim);
    fmt::print("\n(both simulations: {:.1f} s of wall time)\n", wall_s);
    for (const SimResult* r : {&fifo, &planner}) {
      for (const auto& v : r->violations) {
        fmt::print("violation ({}): {}\n", r->policy == Policy::kFifo ? "FIFO" : "planner", v);
      }
    }
    violations = fifo.violation_count + planner.violation_count;
  }
  if (!o.skip_timing) {
    std::vector<TimingMeasures> rows;
    if (o.snapshot == 0 || o.snapshot == 1) rows.push_back(TimeOnePass(o, trace_config, true, true));
    if (o.snapshot == 0 || o.snapshot == 2) rows.push_back(TimeOnePass(o, trace_config, false, true));
    if (o.snapshot == 0 || o.snapshot == 3) rows.push_back(TimeOnePass(o, trace_config, true, false));
    PrintTiming(stdout, rows);
  }
  std::fflush(stdout);
  if (violations > 0) return 2;
  if (o.check_goals && !(goals.utilization && goals.fairness)) return 3;
  return 0;
}
