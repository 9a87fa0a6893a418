// Builders shared by the planner tests (tests/unit/coordinator/planner*_test.cc).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/planner.h"

namespace anneal::coordinator::planner_testing {

constexpr int64_t kNow = 1'000'000'000;
constexpr int64_t kMinute = 60'000;

inline PlannerNode Node(const std::string& id, uint32_t total, uint32_t used,
                        std::map<std::string, std::string> labels = {}) {
  PlannerNode n;
  n.node_id = id;
  n.total_slots = total;
  n.labels = std::move(labels);
  for (uint32_t s = used; s < total; ++s) n.free_slots.push_back(s);
  return n;
}

inline RunningJob Running(const std::string& id, const std::string& team, std::map<std::string, uint32_t> slots,
                          int64_t started_ago_ms = 60 * kMinute, int64_t time_limit_ms = 0, int32_t priority = 0) {
  RunningJob r;
  r.job_id = id;
  r.team = team;
  r.priority = priority;
  r.slots_by_node = std::move(slots);
  r.started_at_ms = kNow - started_ago_ms;
  r.time_limit_ms = time_limit_ms;
  return r;
}

inline PendingJob Pending(const std::string& id, const std::string& team, uint32_t nodes, uint32_t per_node,
                          uint64_t seq, int64_t time_limit_ms = 0) {
  PendingJob p;
  p.job_id = id;
  p.team = team;
  p.gang = {nodes, per_node, 1};
  p.submit_seq = seq;
  p.time_limit_ms = time_limit_ms;
  p.submitted_at_ms = kNow - 1000;
  return p;
}

inline TeamPolicy Team(const std::string& name, std::vector<QuotaEntry> quotas = {}, double usage = 0,
                       double weight = 1) {
  TeamPolicy t;
  t.name = name;
  t.weight = weight;
  t.decayed_usage = usage;
  t.quotas = std::move(quotas);
  return t;
}

inline PlannerInput Input(std::vector<PlannerNode> nodes, std::vector<RunningJob> running,
                          std::vector<PendingJob> pending, std::vector<TeamPolicy> teams = {}) {
  PlannerInput in;
  in.now_ms = kNow;
  in.nodes = std::move(nodes);
  in.running = std::move(running);
  in.pending = std::move(pending);
  in.teams = std::move(teams);
  return in;
}

inline const PlannedStart* StartOf(const SchedulePlan& plan, const std::string& id) {
  for (const auto& s : plan.starts) {
    if (s.job_id == id) return &s;
  }
  return nullptr;
}

inline std::string ReasonOf(const SchedulePlan& plan, const std::string& id) {
  const PendingExplanation* why = FindPending(plan, id);
  return why == nullptr ? "<started>" : plan.Reason(*why);
}

// The explanation of a job the test expects to be pending (throws, failing the test, when it is not).
inline const PendingExplanation& PendingOf(const SchedulePlan& plan, const std::string& id) {
  const PendingExplanation* why = FindPending(plan, id);
  if (why == nullptr) throw std::out_of_range("no pending explanation for job " + id);
  return *why;
}

// Built with append, not "x" + std::to_string(i): GCC 12 warns falsely (-Wrestrict) on the latter at -O2.
inline std::string Id(const char* prefix, uint64_t n) {
  return std::string(prefix).append(std::to_string(n));
}

inline bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

inline std::vector<std::string> Victims(const SchedulePlan& plan) {
  std::vector<std::string> ids;
  for (const auto& p : plan.preemptions) {
    if (p.kind == PreemptionKind::kReclaim) ids.push_back(p.victim_job_id);
  }
  return ids;
}

}  // namespace anneal::coordinator::planner_testing
