#include "coordinator/sharing.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "coordinator/authz.h"
#include "protocol/states.h"

namespace anneal::coordinator {

namespace {

constexpr size_t kMaxLabelBytes = 256;  // AgentLimits::max_label_length's default

// The key and value of "key=value" (label must be valid and not "").
std::pair<std::string_view, std::string_view> SplitLabel(std::string_view label) {
  const size_t eq = label.find('=');
  return {label.substr(0, eq), label.substr(eq + 1)};
}

}  // namespace

void CopySchedulingKeys(const jobspec::JobSpec& spec, pb::JobRecord* record) {
  record->set_time_limit_ms(spec.scheduling.time_limit_s ? *spec.scheduling.time_limit_s * 1000 : 0);
  record->mutable_node_selector()->clear();
  for (const auto& [key, value] : spec.scheduling.node_selector) (*record->mutable_node_selector())[key] = value;
  record->set_max_preemptions(static_cast<uint32_t>(std::max(0, spec.scheduling.max_preemptions)));
  record->set_max_infra_restarts(static_cast<uint32_t>(std::max(0, spec.scheduling.max_infra_restarts)));
}

Status ValidatePoolLabel(std::string_view label) {
  if (label.empty()) return Status::Ok();
  const size_t eq = label.find('=');
  const std::string shown(label.substr(0, 80));
  if (eq == std::string_view::npos || eq == 0) {
    return InvalidArgumentError(
        fmt::format("label '{}': expected key=value with a non-empty key (or \"\" for the whole cluster)", shown));
  }
  const auto [key, value] = SplitLabel(label);
  if (key.size() > kMaxLabelBytes || value.size() > kMaxLabelBytes) {
    return InvalidArgumentError(
        fmt::format("label '{}...': its key and value are at most {} bytes each", shown, kMaxLabelBytes));
  }
  return Status::Ok();
}

std::string PoolName(std::string_view label) {
  return label.empty() ? std::string("the whole cluster") : fmt::format("pool '{}'", label);
}

uint64_t PoolSlots(const std::vector<pb::NodeRecord>& nodes, std::string_view label) {
  uint64_t slots = 0;
  for (const auto& node : nodes) {
    if (!label.empty()) {
      const auto [key, value] = SplitLabel(label);
      const auto& labels = node.inventory().labels();
      auto it = labels.find(std::string(key));
      if (it == labels.end() || it->second != value) continue;
    }
    slots += node.inventory().slots();
  }
  return slots;
}

std::map<std::string, uint32_t> HeldSlotsByNode(const pb::JobRecord& job) {
  std::map<std::string, uint32_t> held;
  switch (job.state()) {
    case pb::JOB_STARTING:
    case pb::JOB_RUNNING:
    case pb::JOB_PREEMPTED:
    case pb::JOB_RESTARTING:
    case pb::JOB_CANCELLING:
      break;
    default:
      return held;
  }
  for (const auto& node : job.placement().nodes()) {
    auto task = job.task_states().find(node.node_id());
    if (task == job.task_states().end() || protocol::TaskEnded(task->second)) continue;
    held[node.node_id()] += static_cast<uint32_t>(node.ranks_size());
  }
  return held;
}

uint32_t HeldSlots(const pb::JobRecord& job) {
  uint32_t slots = 0;
  for (const auto& [node, count] : HeldSlotsByNode(job)) slots += count;
  return slots;
}

StatusOr<pb::QueueReply> BuildQueueReply(const Principal& who, std::string_view team, const QueueSources& sources) {
  std::set<std::string, std::less<>> shown;
  if (!team.empty()) {
    RETURN_IF_ERROR(ValidateIdentityName("team", team));
    const bool exists = std::any_of(sources.teams.begin(), sources.teams.end(),
                                    [&](const pb::TeamRecord& t) { return t.name() == team; });
    if (!exists) return NotFoundError(fmt::format("no team '{}' (anneal team ls lists them)", team));
    RETURN_IF_ERROR(RequireTeamRole(who, pb::ROLE_VIEWER, team, "read the queue of"));
    shown.insert(std::string(team));
  } else {
    for (const auto& t : sources.teams) {
      if (who.cluster_admin || RoleIn(who, t.name()) >= pb::ROLE_VIEWER) shown.insert(t.name());
    }
  }
  pb::QueueReply reply;
  for (const auto& t : sources.teams) {
    if (shown.count(t.name())) *reply.add_teams() = t;
  }
  for (const auto& u : sources.usage) {
    if (shown.count(u.team())) *reply.add_usage() = u;
  }
  for (const auto& name : shown) (*reply.mutable_slots_held())[name] = 0;
  std::vector<const pb::JobRecord*> queued;
  for (const pb::JobRecord* job : sources.jobs) {
    const std::string job_team = JobTeam(*job);
    if (!shown.count(job_team)) continue;
    (*reply.mutable_slots_held())[job_team] += HeldSlots(*job);
    if (job->state() == pb::JOB_PENDING || job->state() == pb::JOB_PREEMPTED) queued.push_back(job);
  }
  auto order = [](const pb::JobRecord* job) {
    const uint64_t position = job->queue_position() == 0 ? UINT64_MAX : job->queue_position();
    return std::make_pair(position, job->submit_seq());
  };
  std::sort(queued.begin(), queued.end(), [&](const auto* a, const auto* b) { return order(a) < order(b); });
  for (const pb::JobRecord* job : queued) {
    pb::JobRecord* out = reply.add_jobs();
    *out = *job;
    out->clear_spec_yaml();
    out->clear_submitted_spec_yaml();
  }
  return reply;
}

}  // namespace anneal::coordinator
