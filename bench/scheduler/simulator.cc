#include "bench/scheduler/simulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <queue>
#include <set>
#include <tuple>

#include "coordinator/scheduler.h"
#include "coordinator/usage.h"

namespace anneal::bench {
namespace {

using coordinator::ChosenNode;

enum class EventKind { kEnd = 0, kFree = 1, kArrival = 2, kTick = 3 };  // order within one instant

struct Event {
  int64_t at_ms;
  EventKind kind;
  uint64_t seq;  // insertion order: ties are deterministic
  size_t job;
  uint32_t attempt;
  bool operator>(const Event& o) const { return std::tie(at_ms, kind, seq) > std::tie(o.at_ms, o.kind, o.seq); }
};

struct Running {
  std::vector<ChosenNode> placement;
  int64_t started_at_ms = 0;
  int64_t remaining_at_start_ms = 0;
  uint32_t attempt = 0;
  bool being_preempted = false;
  bool time_limit_stop = false;
  int64_t preempted_at_ms = 0;
};

class Sim {
 public:
  Sim(const std::vector<TraceJob>& trace, const SimConfig& config, Policy policy)
      : trace_(trace), config_(config), policy_(policy) {
    result_.policy = policy;
    result_.reclaims_by_team.assign(config.teams.size(), std::vector<uint64_t>(config.teams.size(), 0));
    result_.jobs.resize(trace.size());
    remaining_ms_.resize(trace.size());
    attempts_.resize(trace.size(), 0);
    for (uint32_t i = 0; i < config.nodes; ++i) node_ids_.push_back(NodeId(i));
    free_.assign(config.nodes, std::vector<bool>(config.slots_per_node, true));
    held_.assign(config.teams.size(), 0);
    usage_.assign(config.teams.size(), 0);
    double weights = 0;
    for (const auto& t : config.teams) weights += t.weight;
    for (const auto& t : config.teams) {
      guaranteed_.push_back(
          static_cast<uint32_t>(config.nodes * config.slots_per_node * t.weight / std::max(weights, 1e-9)));
    }
    for (size_t i = 0; i < trace.size(); ++i) {
      remaining_ms_[i] = trace[i].duration_ms;
      Push(trace[i].submit_ms, EventKind::kArrival, i, 0);
    }
  }

  SimResult Run() {
    size_t done = 0;
    while (!events_.empty() && done < trace_.size()) {
      const int64_t now = events_.top().at_ms;
      Advance(now);
      while (!events_.empty() && events_.top().at_ms == now) {
        Event e = events_.top();
        events_.pop();
        done += Handle(e);
      }
      if (!pending_.empty()) Pass();
      if (!pending_.empty() && next_tick_ms_ <= now) {
        next_tick_ms_ = now + config_.tick_ms;
        Push(next_tick_ms_, EventKind::kTick, 0, 0);
      }
    }
    if (done < trace_.size())
      Violation(fmt::format("{} jobs never finished: the queue is stuck", trace_.size() - done));
    return std::move(result_);
  }

 private:
  void Push(int64_t at, EventKind kind, size_t job, uint32_t attempt) {
    events_.push({at, kind, seq_++, job, attempt});
  }

  void Violation(std::string what) {
    ++result_.violation_count;
    if (result_.violations.size() < 20) result_.violations.push_back(std::move(what));
  }

  // Integrates holdings up to `now` (timeline, decayed usage); holdings only change at events.
  void Advance(int64_t now) {
    if (now > last_ms_) {
      Segment s{.begin_ms = last_ms_, .end_ms = now, .any_pending = !pending_.empty(), .held_by_team = held_};
      std::vector<bool> waiting(config_.teams.size(), false);
      for (size_t j : pending_) waiting[static_cast<size_t>(trace_[j].team)] = true;
      s.all_teams_pending = std::all_of(waiting.begin(), waiting.end(), [](bool w) { return w; });
      result_.timeline.push_back(std::move(s));
      for (size_t t = 0; t < usage_.size(); ++t) {
        usage_[t] = coordinator::AccrueUsage(usage_[t], held_[t], now - last_ms_, config_.usage_half_life_ms);
      }
    }
    last_ms_ = now;
  }

  // Returns 1 when the event finished a job for good.
  size_t Handle(const Event& e) {
    const int64_t now = e.at_ms;
    if (e.kind == EventKind::kArrival) {
      pending_.insert(e.job);
      result_.max_pending = std::max<uint64_t>(result_.max_pending, pending_.size());
      return 0;
    }
    if (e.kind == EventKind::kTick) return 0;
    auto it = running_.find(e.job);
    if (it == running_.end() || it->second.attempt != e.attempt) return 0;  // superseded
    Running& r = it->second;
    JobOutcome& out = result_.jobs[e.job];
    if (e.kind == EventKind::kEnd) {
      Release(e.job);
      remaining_ms_[e.job] = 0;
      out.end_ms = now;
      return 1;
    }
    if (!r.being_preempted) return 0;
    if (r.time_limit_stop) {
      Release(e.job);
      out.end_ms = now;
      out.time_limited = true;
      return 1;
    }
    // Conservative: the work after the last periodic checkpoint before the decision is lost (the checkpoint
    // the trainer takes on the preempt request is not counted).
    const int64_t saved = LastCheckpoint(r, r.preempted_at_ms) - r.started_at_ms;
    remaining_ms_[e.job] = r.remaining_at_start_ms - saved;
    // Counted here, not at the decision: a victim that finishes within its grace period loses nothing.
    result_.lost_slot_ms += static_cast<double>(trace_[e.job].slots()) *
                            static_cast<double>(r.preempted_at_ms - LastCheckpoint(r, r.preempted_at_ms));
    Release(e.job);
    ++out.preemptions;
    pending_.insert(e.job);
    return 0;
  }

  // Commit time of the latest periodic checkpoint at or before `at` (started_at when none yet).
  int64_t LastCheckpoint(const Running& r, int64_t at) const {
    const int64_t elapsed = std::max<int64_t>(at - r.started_at_ms, 0);
    return r.started_at_ms + elapsed / config_.checkpoint_every_ms * config_.checkpoint_every_ms;
  }

  void Release(size_t job) {
    auto it = running_.find(job);
    for (const auto& n : it->second.placement) {
      auto& node = free_[NodeIndex(n.node_id)];
      for (uint32_t s : n.slots) node[s] = true;
      held_[static_cast<size_t>(trace_[job].team)] -= static_cast<uint32_t>(n.slots.size());
    }
    running_.erase(it);
  }

  size_t NodeIndex(const std::string& id) const {
    return static_cast<size_t>(std::lower_bound(node_ids_.begin(), node_ids_.end(), id) - node_ids_.begin());
  }

  void Start(size_t job, std::vector<ChosenNode> placement, int64_t now) {
    if (!pending_.count(job)) return Violation(fmt::format("start of {}: not queued", trace_[job].id));
    uint32_t slots = 0;
    for (const auto& n : placement) {
      const size_t idx = NodeIndex(n.node_id);
      if (idx >= node_ids_.size() || node_ids_[idx] != n.node_id) {
        return Violation(fmt::format("start of {}: unknown node {}", trace_[job].id, n.node_id));
      }
      for (uint32_t s : n.slots) {
        if (s >= config_.slots_per_node || !free_[idx][s]) {
          return Violation(fmt::format("start of {}: slot {} of {} is not free", trace_[job].id, s, n.node_id));
        }
      }
      slots += static_cast<uint32_t>(n.slots.size());
    }
    if (slots != trace_[job].slots()) {
      return Violation(
          fmt::format("start of {}: {} slots placed for a {}-slot gang", trace_[job].id, slots, trace_[job].slots()));
    }
    for (const auto& n : placement) {
      for (uint32_t s : n.slots) free_[NodeIndex(n.node_id)][s] = false;
    }
    held_[static_cast<size_t>(trace_[job].team)] += slots;
    pending_.erase(job);
    JobOutcome& out = result_.jobs[job];
    if (out.first_start_ms < 0) out.first_start_ms = now;
    claims_.erase(job);
    if (auto named = first_named_ms_.find(job); named != first_named_ms_.end()) {
      result_.beneficiary_delay_ms.push_back(static_cast<double>(now - named->second));
      first_named_ms_.erase(named);
    }
    const uint32_t attempt = ++attempts_[job];
    running_[job] = Running{std::move(placement), now, remaining_ms_[job], attempt, false, false};
    Push(now + remaining_ms_[job], EventKind::kEnd, job, attempt);
  }

  void Pass() {
    if (policy_ == Policy::kFifo) {
      FifoPass();
    } else {
      PlannerPass();
    }
  }

  void RecordPass(std::chrono::steady_clock::time_point begin) {
    result_.pass_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count());
  }

  // Today's Schedule(): priority, then submit order; the first job that must wait blocks everyone behind it.
  void FifoPass() {
    const auto begin = std::chrono::steady_clock::now();
    std::vector<size_t> order(pending_.begin(), pending_.end());
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::tie(trace_[b].priority, trace_[a].submit_seq) < std::tie(trace_[a].priority, trace_[b].submit_seq);
    });
    std::vector<coordinator::NodeCapacity> capacities = Capacities<coordinator::NodeCapacity>();
    std::vector<std::pair<size_t, std::vector<ChosenNode>>> starts;
    for (size_t job : order) {
      coordinator::PlacementResult placed = coordinator::PlaceGang(trace_[job].gang, capacities);
      if (placed.outcome == coordinator::PlacementOutcome::kNever) continue;
      if (placed.outcome == coordinator::PlacementOutcome::kWait) break;
      for (const auto& chosen : placed.nodes) {
        auto& cap = capacities[NodeIndex(chosen.node_id)];
        std::vector<uint32_t> left;
        std::set_difference(cap.free_slots.begin(), cap.free_slots.end(), chosen.slots.begin(), chosen.slots.end(),
                            std::back_inserter(left));
        cap.free_slots = std::move(left);
      }
      starts.emplace_back(job, std::move(placed.nodes));
    }
    RecordPass(begin);
    for (auto& [job, nodes] : starts) Start(job, std::move(nodes), last_ms_);
  }

  template <typename Capacity>
  std::vector<Capacity> Capacities() const {
    std::vector<Capacity> out(node_ids_.size());
    for (size_t i = 0; i < node_ids_.size(); ++i) {
      out[i].node_id = node_ids_[i];
      out[i].total_slots = config_.slots_per_node;
      for (uint32_t s = 0; s < config_.slots_per_node; ++s) {
        if (free_[i][s]) out[i].free_slots.push_back(s);
      }
    }
    return out;
  }

  coordinator::PlannerInput PlannerState() const {
    coordinator::PlannerInput in;
    in.now_ms = last_ms_;
    in.nodes = Capacities<coordinator::PlannerNode>();
    in.config = config_.planner;
    for (const auto& [job, r] : running_) {
      const TraceJob& t = trace_[job];
      coordinator::RunningJob rj;
      rj.job_id = t.id;
      rj.team = config_.teams[static_cast<size_t>(t.team)].name;
      rj.priority = t.priority;
      rj.started_at_ms = r.started_at_ms;
      rj.time_limit_ms = t.time_limit_ms;
      rj.preemptible = result_.jobs[job].preemptions < config_.preemption_budget;
      rj.being_preempted = r.being_preempted;
      const int64_t checkpoint = LastCheckpoint(r, last_ms_);
      rj.last_checkpoint_ms = checkpoint > r.started_at_ms ? checkpoint : 0;
      for (const auto& n : r.placement) rj.slots_by_node[n.node_id] = static_cast<uint32_t>(n.slots.size());
      in.running.push_back(std::move(rj));
    }
    for (size_t job : pending_) {
      const TraceJob& t = trace_[job];
      coordinator::PendingJob p;
      p.job_id = t.id;
      p.team = config_.teams[static_cast<size_t>(t.team)].name;
      p.priority = t.priority;
      p.submit_seq = t.submit_seq;
      p.gang = t.gang;
      p.time_limit_ms = t.time_limit_ms;
      p.submitted_at_ms = t.submit_ms;
      if (auto claim = claims_.find(job); claim != claims_.end()) p.claimed_nodes = claim->second;
      in.pending.push_back(std::move(p));
    }
    for (size_t i = 0; i < config_.teams.size(); ++i) {
      in.teams.push_back({.name = config_.teams[i].name,
                          .weight = config_.teams[i].weight,
                          .decayed_usage = usage_[i],
                          .quotas = {{.label = "", .guaranteed = guaranteed_[i], .max = 0}}});
    }
    return in;
  }

  size_t JobIndex(const std::string& id) const {
    // Ids are "job-NNNNN" in trace order.
    if (id.size() < 5 || id.compare(0, 4, "job-") != 0) return trace_.size();
    const size_t idx = std::stoul(id.substr(4));
    return idx < trace_.size() && trace_[idx].id == id ? idx : trace_.size();
  }

  void PlannerPass() {
    const coordinator::PlannerInput in = PlannerState();
    const auto begin = std::chrono::steady_clock::now();
    coordinator::SchedulePlan plan = coordinator::PlanSchedule(in);
    RecordPass(begin);
    const int64_t now = last_ms_;
    std::set<size_t> named_now;
    for (const auto& p : plan.preemptions) {
      const size_t job = JobIndex(p.victim_job_id);
      auto it = running_.find(job);
      if (it == running_.end() || it->second.being_preempted) {
        Violation(fmt::format("preemption of {}: not running or already being preempted", p.victim_job_id));
        continue;
      }
      Running& r = it->second;
      r.being_preempted = true;
      r.time_limit_stop = p.kind == coordinator::PreemptionKind::kTimeLimit;
      r.preempted_at_ms = now;
      if (r.time_limit_stop) {
        ++result_.time_limit_stops;
      } else {
        ++result_.preemptions;
        const size_t beneficiary = JobIndex(p.beneficiary_job_id);
        if (beneficiary < trace_.size()) {
          ++result_
                .reclaims_by_team[static_cast<size_t>(trace_[job].team)][static_cast<size_t>(trace_[beneficiary].team)];
          victims_of_[beneficiary].push_back(job);
          if (config_.carry_claims) {
            for (const auto& n : r.placement) claims_[beneficiary].push_back(n.node_id);
          }
          if (named_now.insert(beneficiary).second) {
            if (!first_named_ms_.emplace(beneficiary, now).second) {
              ++result_.repeated_reclaim_passes;
              bool in_grace = false;
              for (size_t v : victims_of_[beneficiary]) {
                auto vr = running_.find(v);
                in_grace |= vr != running_.end() && vr->second.being_preempted && v != job;
              }
              if (in_grace) ++result_.repeated_during_grace;
            }
            if (ever_named_.insert(beneficiary).second) ++result_.beneficiaries;
          }
        }
      }
      Push(now + config_.grace_ms, EventKind::kFree, job, r.attempt);
    }
    for (auto& s : plan.starts) {
      const size_t job = JobIndex(s.job_id);
      if (job >= trace_.size()) {
        Violation(fmt::format("start of unknown job {}", s.job_id));
        continue;
      }
      Start(job, std::move(s.nodes), now);
    }
  }

  const std::vector<TraceJob>& trace_;
  const SimConfig& config_;
  const Policy policy_;
  SimResult result_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t seq_ = 0;
  int64_t last_ms_ = 0;
  int64_t next_tick_ms_ = 0;
  std::vector<std::string> node_ids_;
  std::vector<std::vector<bool>> free_;  // node -> slot -> free
  std::set<size_t> pending_;             // trace indices
  std::map<size_t, Running> running_;
  std::vector<int64_t> remaining_ms_;
  std::vector<uint32_t> attempts_;
  std::vector<uint32_t> held_;  // slots by team
  std::vector<double> usage_;   // decayed slot-seconds by team
  std::vector<uint32_t> guaranteed_;
  std::map<size_t, int64_t> first_named_ms_;  // beneficiaries not started yet -> first reclaim for them
  std::set<size_t> ever_named_;
  std::map<size_t, std::vector<size_t>> victims_of_;
  std::map<size_t, std::vector<std::string>> claims_;  // beneficiary not started yet -> its victims' nodes
};

}  // namespace

SimResult Simulate(const std::vector<TraceJob>& trace, const SimConfig& config, Policy policy) {
  return Sim(trace, config, policy).Run();
}

}  // namespace anneal::bench
