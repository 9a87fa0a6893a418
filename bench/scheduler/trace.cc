#include "bench/scheduler/trace.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

namespace anneal::bench {
namespace {

constexpr int64_t kMinute = 60 * 1000;
constexpr int64_t kHour = 60 * kMinute;

// Draws with portable transforms over mt19937_64 (whose sequence the standard fixes).
class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  double Uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }  // [0, 1)
  int64_t Int(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(Uniform() * static_cast<double>(hi - lo + 1));
  }
  double Normal() {  // Box-Muller
    const double u1 = 1.0 - Uniform();
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
  double Exponential(double mean) { return -mean * std::log(1.0 - Uniform()); }

 private:
  std::mt19937_64 rng_;
};

// Gang shapes (nodes x ranks per node) with a skew towards small jobs, as in shared research clusters.
struct Shape {
  uint32_t nodes;
  uint32_t ranks_per_node;
  double weight;
};
const Shape kShapes[] = {{1, 1, 0.30}, {1, 2, 0.20}, {1, 4, 0.18}, {1, 8, 0.15},
                         {2, 8, 0.08}, {4, 8, 0.06}, {8, 8, 0.03}};

coordinator::GangRequest DrawShape(Draw& draw, uint32_t slots_per_node, uint32_t max_nodes) {
  double u = draw.Uniform();
  for (const Shape& s : kShapes) {
    u -= s.weight;
    if (u < 0 || &s == &kShapes[std::size(kShapes) - 1]) {
      return {std::min(s.nodes, max_nodes), std::min(s.ranks_per_node, slots_per_node), 1};
    }
  }
  return {1, 1, 1};
}

// Lognormal, median 1 h, sigma 1.2 (mean about 2 h, p99 about 16 h), clipped to [5 min, 48 h].
int64_t DrawDuration(Draw& draw) {
  const double hours = std::exp(1.2 * draw.Normal());
  return std::clamp(static_cast<int64_t>(hours * static_cast<double>(kHour)), 5 * kMinute, 48 * kHour);
}

// 15% of jobs set no limit; the rest ask for their duration times [1, 3] (users overestimate).
int64_t DrawTimeLimit(Draw& draw, int64_t duration_ms) {
  if (draw.Uniform() < 0.15) return 0;
  return static_cast<int64_t>(static_cast<double>(duration_ms) * (1.0 + 2.0 * draw.Uniform()));
}

int DrawTeam(Draw& draw, const std::vector<TeamSpec>& teams) {
  double total = 0;
  for (const auto& t : teams) total += t.job_fraction;
  double u = draw.Uniform() * total;
  for (size_t i = 0; i < teams.size(); ++i) {
    u -= teams[i].job_fraction;
    if (u < 0) return static_cast<int>(i);
  }
  return static_cast<int>(teams.size()) - 1;
}

}  // namespace

std::string NodeId(uint32_t index) {
  return fmt::format("node-{:04d}", index);
}

std::vector<uint32_t> SizeClasses() {
  return {1, 2, 4, 8, 16, 32, 64};
}

size_t SizeClassOf(uint32_t slots) {
  const auto classes = SizeClasses();
  for (size_t i = 0; i < classes.size(); ++i) {
    if (slots <= classes[i]) return i;
  }
  return classes.size() - 1;
}

double OfferedSlotHours(const std::vector<TraceJob>& trace) {
  double total = 0;
  for (const auto& j : trace) total += j.slots() * static_cast<double>(j.duration_ms) / kHour;
  return total;
}

std::vector<TraceJob> MakeTrace(const TraceConfig& config) {
  Draw draw(config.seed);
  std::vector<TraceJob> jobs(static_cast<size_t>(config.jobs));
  for (auto& j : jobs) {
    j.team = DrawTeam(draw, config.teams);
    j.gang = DrawShape(draw, config.slots_per_node, config.nodes);
    j.duration_ms = DrawDuration(draw);
    j.time_limit_ms = DrawTimeLimit(draw, j.duration_ms);
    j.priority = draw.Uniform() < 0.1 ? 1 : 0;
  }
  // Arrival span: offered work / (capacity x overload), so every team's queue grows while arrivals last.
  const double capacity = static_cast<double>(config.nodes) * config.slots_per_node;
  const double span_ms = OfferedSlotHours(jobs) / (capacity * config.overload) * kHour;
  // Bursts per team: 10-60 jobs each, starting uniformly in the span, a job every ~3 minutes inside a burst.
  for (size_t team = 0; team < config.teams.size(); ++team) {
    size_t left_in_burst = 0;
    double t = 0;
    for (auto& j : jobs) {
      if (j.team != static_cast<int>(team)) continue;
      if (left_in_burst == 0) {
        left_in_burst = static_cast<size_t>(draw.Int(10, 60));
        t = draw.Uniform() * span_ms;
      }
      t += draw.Exponential(3.0 * kMinute);
      j.submit_ms = static_cast<int64_t>(t);
      --left_in_burst;
    }
  }
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const TraceJob& a, const TraceJob& b) { return a.submit_ms < b.submit_ms; });
  for (size_t i = 0; i < jobs.size(); ++i) {
    jobs[i].id = fmt::format("job-{:05d}", i);
    jobs[i].submit_seq = i + 1;
  }
  return jobs;
}

coordinator::PlannerInput MakeSnapshot(uint32_t nodes, uint32_t slots_per_node, int pending, double fill, bool balanced,
                                       const TraceConfig& config) {
  Draw draw(config.seed ^ 0x5eed);
  std::vector<TeamSpec> running_mix = config.teams;
  if (balanced) {
    for (auto& t : running_mix) t.job_fraction = t.weight;
  }
  coordinator::PlannerInput in;
  in.now_ms = 1'000 * kHour;
  std::vector<uint32_t> used(nodes, 0);
  const uint64_t total = static_cast<uint64_t>(nodes) * slots_per_node;
  uint64_t held = 0;
  uint32_t partial = 0;     // first node that may still hold a small job
  uint32_t next_empty = 0;  // multi-node gangs take whole empty nodes from the top down
  uint32_t top = nodes;
  for (int n = 0; held < static_cast<uint64_t>(fill * static_cast<double>(total)); ++n) {
    const coordinator::GangRequest gang = DrawShape(draw, slots_per_node, nodes);
    coordinator::RunningJob r;
    r.job_id = fmt::format("run-{:06d}", n);
    r.team = config.teams[static_cast<size_t>(DrawTeam(draw, running_mix))].name;
    if (gang.ranks_per_node == slots_per_node) {
      if (top < next_empty + gang.nodes) break;
      for (uint32_t k = 0; k < gang.nodes; ++k) {
        r.slots_by_node[NodeId(--top)] = slots_per_node;
        used[top] = slots_per_node;
      }
    } else {
      while (partial < top && used[partial] + gang.ranks_per_node > slots_per_node) ++partial;
      if (partial >= top) break;
      r.slots_by_node[NodeId(partial)] = gang.ranks_per_node;
      used[partial] += gang.ranks_per_node;
      next_empty = std::max(next_empty, partial + 1);
    }
    held += gang.nodes * gang.ranks_per_node;
    const int64_t elapsed = draw.Int(kMinute, 20 * kHour);
    r.started_at_ms = in.now_ms - elapsed;
    r.time_limit_ms = draw.Uniform() < 0.15 ? 0 : elapsed + draw.Int(kMinute, 30 * kHour);
    if (elapsed >= 30 * kMinute) r.last_checkpoint_ms = r.started_at_ms + elapsed / (30 * kMinute) * (30 * kMinute);
    in.running.push_back(std::move(r));
  }
  for (uint32_t i = 0; i < nodes; ++i) {
    coordinator::PlannerNode node;
    node.node_id = NodeId(i);
    node.total_slots = slots_per_node;
    for (uint32_t s = used[i]; s < slots_per_node; ++s) node.free_slots.push_back(s);
    in.nodes.push_back(std::move(node));
  }
  for (int i = 0; i < pending; ++i) {
    coordinator::PendingJob p;
    p.job_id = fmt::format("job-{:06d}", i);
    p.team = config.teams[static_cast<size_t>(DrawTeam(draw, config.teams))].name;
    p.priority = draw.Uniform() < 0.1 ? 1 : 0;
    p.submit_seq = static_cast<uint64_t>(i) + 1;
    p.gang = DrawShape(draw, slots_per_node, nodes);
    p.time_limit_ms = DrawTimeLimit(draw, DrawDuration(draw));
    p.submitted_at_ms = in.now_ms - draw.Int(0, 10 * kHour);
    in.pending.push_back(std::move(p));
  }
  // The order the coordinator hands the queue to the planner (JobTable::PendingInOrder): priority, then submission.
  std::stable_sort(in.pending.begin(), in.pending.end(),
                   [](const auto& a, const auto& b) { return a.priority > b.priority; });
  double weights = 0;
  for (const auto& t : config.teams) weights += t.weight;
  for (const auto& t : config.teams) {
    const auto guaranteed = static_cast<uint32_t>(static_cast<double>(total) * t.weight / weights);
    in.teams.push_back({.name = t.name,
                        .weight = t.weight,
                        .decayed_usage = draw.Uniform() * static_cast<double>(total) * 3600.0,
                        .quotas = {{.label = "", .guaranteed = guaranteed, .max = 0}}});
  }
  return in;
}

}  // namespace anneal::bench
