#include "bench/scheduler/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace anneal::bench {
namespace {

constexpr double kHourMs = 3600.0 * 1000.0;

std::string Pct(double fraction) {
  return fmt::format("{:.1f}%", 100.0 * fraction);
}

std::string Hours(double h) {
  if (h < 1.0) return fmt::format("{:.0f} min", h * 60.0);
  return fmt::format("{:.1f} h", h);
}

std::string Waits(const Percentiles& p) {
  if (p.count == 0) return "-";
  return fmt::format("{} / {} (n={})", Hours(p.p50), Hours(p.p99), p.count);
}

std::string Verdict(bool ok) {
  return ok ? "PASS" : "FAIL";
}

std::vector<double> WeightShares(const SimConfig& config) {
  double total = 0;
  for (const auto& t : config.teams) total += t.weight;
  std::vector<double> out;
  for (const auto& t : config.teams) out.push_back(t.weight / total);
  return out;
}

// The longest run of consecutive segments in which every team has a job waiting: [first, last] indices.
std::pair<size_t, size_t> LongestAllBacklogged(const std::vector<Segment>& timeline) {
  std::pair<size_t, size_t> best{1, 0};
  int64_t best_len = 0;
  for (size_t i = 0; i < timeline.size();) {
    if (!timeline[i].all_teams_pending) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < timeline.size() && timeline[j + 1].all_teams_pending) ++j;
    const int64_t len = timeline[j].end_ms - timeline[i].begin_ms;
    if (len > best_len) best_len = len, best = {i, j};
    i = j + 1;
  }
  return best;
}

}  // namespace

Percentiles PercentilesOf(std::vector<double> samples) {
  Percentiles p;
  p.count = samples.size();
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double q) {
    const auto idx = static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
    return samples[std::clamp<size_t>(idx, 1, samples.size()) - 1];
  };
  p.p50 = rank(0.50);
  p.p99 = rank(0.99);
  return p;
}

double JainIndex(const std::vector<double>& shares, const std::vector<double>& weight_shares) {
  double sum = 0, sum_sq = 0;
  for (size_t i = 0; i < shares.size(); ++i) {
    const double x = shares[i] / weight_shares[i];
    sum += x;
    sum_sq += x * x;
  }
  return sum_sq > 0 ? sum * sum / (static_cast<double>(shares.size()) * sum_sq) : 0;
}

PolicyMeasures Measure(const std::string& name, const SimResult& result, const std::vector<TraceJob>& trace,
                       const SimConfig& config) {
  PolicyMeasures m;
  m.name = name;
  const double capacity = static_cast<double>(config.nodes) * config.slots_per_node;
  int64_t first_arrival = trace.empty() ? 0 : trace.front().submit_ms, last_end = 0;
  for (const auto& j : result.jobs) last_end = std::max(last_end, j.end_ms);
  double busy = 0, busy_waiting = 0, waiting_ms = 0;
  for (const auto& s : result.timeline) {
    double held = 0;
    for (uint32_t h : s.held_by_team) held += h;
    const auto len = static_cast<double>(s.end_ms - s.begin_ms);
    if (s.end_ms > first_arrival) busy += held * len;
    if (s.any_pending) busy_waiting += held * len, waiting_ms += len;
  }
  m.makespan_h = static_cast<double>(last_end - first_arrival) / kHourMs;
  m.waiting_h = waiting_ms / kHourMs;
  int64_t last_waiting = first_arrival;
  for (const auto& s : result.timeline) {
    if (s.any_pending) last_waiting = std::max(last_waiting, s.end_ms);
  }
  m.drain_h = static_cast<double>(last_end - last_waiting) / kHourMs;
  for (size_t i = 0; i < result.jobs.size() && i < trace.size(); ++i) {
    const JobOutcome& o = result.jobs[i];
    if (o.end_ms != last_end || last_end == 0) continue;
    const TraceJob& j = trace[i];
    m.last_job = fmt::format(
        "{} (team {}, {} slots, {:.1f} h): submitted {:.1f} h, first started {:.1f} h, {} preemption(s)", j.id,
        config.teams[static_cast<size_t>(j.team)].name, j.slots(), static_cast<double>(j.duration_ms) / kHourMs,
        static_cast<double>(j.submit_ms - first_arrival) / kHourMs,
        static_cast<double>(o.first_start_ms - first_arrival) / kHourMs, o.preemptions);
    break;
  }
  m.utilization_makespan = busy / (capacity * static_cast<double>(std::max<int64_t>(last_end - first_arrival, 1)));
  m.utilization_waiting = waiting_ms > 0 ? busy_waiting / (capacity * waiting_ms) : 0;

  const auto [first, last] = LongestAllBacklogged(result.timeline);
  std::vector<double> team_slot_ms(config.teams.size(), 0);
  if (first <= last) {
    m.window_begin_h = static_cast<double>(result.timeline[first].begin_ms) / kHourMs;
    m.window_end_h = static_cast<double>(result.timeline[last].end_ms) / kHourMs;
    for (size_t i = first; i <= last; ++i) {
      const auto& s = result.timeline[i];
      for (size_t t = 0; t < team_slot_ms.size(); ++t) {
        team_slot_ms[t] += s.held_by_team[t] * static_cast<double>(s.end_ms - s.begin_ms);
      }
    }
  }
  double window_total = 0;
  for (double v : team_slot_ms) window_total += v;
  const double window_ms = (m.window_end_h - m.window_begin_h) * kHourMs;
  m.utilization_window = window_ms > 0 ? window_total / (capacity * window_ms) : 0;
  m.net_utilization_makespan =
      (busy - result.lost_slot_ms) / (capacity * static_cast<double>(std::max<int64_t>(last_end - first_arrival, 1)));
  for (double v : team_slot_ms) m.team_share.push_back(window_total > 0 ? v / window_total : 0);
  m.jain = JainIndex(m.team_share, WeightShares(config));

  std::vector<std::vector<double>> by_team(config.teams.size()), by_size(SizeClasses().size());
  for (size_t i = 0; i < trace.size(); ++i) {
    const JobOutcome& o = result.jobs[i];
    if (o.first_start_ms < 0) continue;
    const double wait_h = static_cast<double>(o.first_start_ms - trace[i].submit_ms) / kHourMs;
    by_team[static_cast<size_t>(trace[i].team)].push_back(wait_h);
    by_size[SizeClassOf(trace[i].slots())].push_back(wait_h);
  }
  for (auto& v : by_team) m.wait_by_team_h.push_back(PercentilesOf(std::move(v)));
  for (auto& v : by_size) m.wait_by_size_h.push_back(PercentilesOf(std::move(v)));
  m.lost_slot_hours = result.lost_slot_ms / kHourMs;
  m.preemptions = result.preemptions;
  m.time_limit_stops = result.time_limit_stops;
  m.pass_ms = PercentilesOf(result.pass_ms);
  m.max_pending = result.max_pending;
  m.violations = result.violation_count;
  return m;
}

Goals PrintComparison(std::FILE* out, const PolicyMeasures& fifo, const PolicyMeasures& planner,
                      const SimConfig& config, size_t jobs) {
  Goals goals;
  goals.utilization = planner.utilization_waiting >= fifo.utilization_waiting + 0.10;
  goals.fairness = planner.jain >= 0.95;
  const std::vector<double> weight_shares = WeightShares(config);
  fmt::print(out, "\n### Trace: {} jobs, {} nodes x {} slots, teams", jobs, config.nodes, config.slots_per_node);
  for (size_t t = 0; t < config.teams.size(); ++t) {
    fmt::print(out, " {} (weight {:g})", config.teams[t].name, config.teams[t].weight);
  }
  fmt::print(out, "\n\n| measure | {} | {} | goal | result |\n|---|---:|---:|---|---|\n", fifo.name, planner.name);
  auto row = [&](const std::string& what, const std::string& a, const std::string& b, const std::string& goal = "",
                 const std::string& verdict = "") {
    fmt::print(out, "| {} | {} | {} | {} | {} |\n", what, a, b, goal, verdict);
  };
  row("utilization while jobs wait", Pct(fifo.utilization_waiting), Pct(planner.utilization_waiting),
      fmt::format(">= FIFO + 10 points ({})", Pct(fifo.utilization_waiting + 0.10)), Verdict(goals.utilization));
  const bool makespan_goal = planner.utilization_makespan >= fifo.utilization_makespan + 0.10;
  row("utilization over the makespan", Pct(fifo.utilization_makespan), Pct(planner.utilization_makespan),
      fmt::format("(same goal read over the makespan: {})", Pct(fifo.utilization_makespan + 0.10)),
      Verdict(makespan_goal));
  row("utilization over the makespan, less work lost to preemption", Pct(fifo.net_utilization_makespan),
      Pct(planner.net_utilization_makespan));
  row("utilization while all teams are backlogged (window below)", Pct(fifo.utilization_window),
      Pct(planner.utilization_window));
  row("makespan (first arrival to last end)", Hours(fifo.makespan_h), Hours(planner.makespan_h));
  row("time with jobs waiting", Hours(fifo.waiting_h), Hours(planner.waiting_h));
  row("drain: last time a job waited to the last end", Hours(fifo.drain_h), Hours(planner.drain_h));
  row("job that ends last (sets the makespan)", fifo.last_job, planner.last_job);
  row("all teams backlogged (window)", fmt::format("{:.1f}-{:.1f} h", fifo.window_begin_h, fifo.window_end_h),
      fmt::format("{:.1f}-{:.1f} h", planner.window_begin_h, planner.window_end_h));
  for (size_t t = 0; t < config.teams.size(); ++t) {
    row(fmt::format("team {} share of slot-hours in window (weight share {})", config.teams[t].name,
                    Pct(weight_shares[t])),
        Pct(fifo.team_share[t]), Pct(planner.team_share[t]));
  }
  row("Jain index of share / weight in window", fmt::format("{:.3f}", fifo.jain), fmt::format("{:.3f}", planner.jain),
      ">= 0.95", Verdict(goals.fairness));
  for (size_t t = 0; t < config.teams.size(); ++t) {
    row(fmt::format("wait p50 / p99, team {}", config.teams[t].name), Waits(fifo.wait_by_team_h[t]),
        Waits(planner.wait_by_team_h[t]));
  }
  const auto classes = SizeClasses();
  for (size_t c = 0; c < classes.size(); ++c) {
    row(fmt::format("wait p50 / p99, {}-slot jobs", classes[c]), Waits(fifo.wait_by_size_h[c]),
        Waits(planner.wait_by_size_h[c]));
  }
  row("slot-hours lost to preemption (since last checkpoint)", fmt::format("{:.1f}", fifo.lost_slot_hours),
      fmt::format("{:.1f} ({} preemptions)", planner.lost_slot_hours, planner.preemptions));
  row("jobs stopped at their time limit", std::to_string(fifo.time_limit_stops),
      std::to_string(planner.time_limit_stops));
  row("decision time per pass in the run p50 / p99",
      fmt::format("{:.3f} / {:.3f} ms", fifo.pass_ms.p50, fifo.pass_ms.p99),
      fmt::format("{:.3f} / {:.3f} ms", planner.pass_ms.p50, planner.pass_ms.p99));
  row("passes / most jobs waiting at once", fmt::format("{} / {}", fifo.pass_ms.count, fifo.max_pending),
      fmt::format("{} / {}", planner.pass_ms.count, planner.max_pending));
  row("plan violations (invalid starts or victims, stuck queue)", std::to_string(fifo.violations),
      std::to_string(planner.violations), "0", Verdict(fifo.violations + planner.violations == 0));
  return goals;
}

void PrintReclaims(std::FILE* out, const SimResult& r, const SimConfig& config) {
  const Percentiles delay = PercentilesOf(r.beneficiary_delay_ms);
  fmt::print(out,
             "\nReclaims: {} preemptions for {} beneficiaries; {} passes named a beneficiary again (its earlier "
             "victims' slots went elsewhere; {} of them while an earlier victim was still in its grace period); first "
             "reclaim to the beneficiary's start p50 {:.1f} min, p99 {:.1f} "
             "min (n={}).\n",
             r.preemptions, r.beneficiaries, r.repeated_reclaim_passes, r.repeated_during_grace, delay.p50 / 60000.0,
             delay.p99 / 60000.0, delay.count);
  fmt::print(out, "\n| victim team \\ beneficiary team |");
  for (const auto& t : config.teams) fmt::print(out, " {} |", t.name);
  fmt::print(out, "\n|---|");
  for (size_t t = 0; t < config.teams.size(); ++t) fmt::print(out, "---:|");
  for (size_t v = 0; v < config.teams.size(); ++v) {
    fmt::print(out, "\n| {} |", config.teams[v].name);
    for (size_t b = 0; b < config.teams.size(); ++b) fmt::print(out, " {} |", r.reclaims_by_team[v][b]);
  }
  fmt::print(out, "\n");
}

void PrintTiming(std::FILE* out, const std::vector<TimingMeasures>& timings) {
  if (timings.empty()) return;
  const TimingMeasures& first = timings.front();
  fmt::print(out,
             "\n### One scheduling pass (PlanSchedule): {} nodes x 8 slots, {:.0f}% of slots held, {} pending\n\n"
             "| snapshot | running jobs | reps | p50 | p99 | CPU p50 / p99 | plan: starts / preemptions | goal p99 <= "
             "10 ms |\n"
             "|---|---:|---:|---:|---:|---:|---:|---|\n",
             first.nodes, 100.0 * first.fill, first.pending);
  for (const auto& t : timings) {
    fmt::print(out, "| {} | {} | {} | {:.2f} ms | {:.2f} ms | {:.2f} / {:.2f} ms | {} / {} | {} |\n", t.snapshot,
               t.running, t.reps, t.pass_ms.p50, t.pass_ms.p99, t.cpu_ms.p50, t.cpu_ms.p99, t.starts, t.preemptions,
               Verdict(t.pass_ms.p99 <= 10.0));
  }
}

}  // namespace anneal::bench
