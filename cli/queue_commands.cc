// anneal queue [--team T]: the pending queue per team, in the scheduler's order, with each job's wait reason and
// estimated start; and the sharing lines of `anneal show` (docs/user-guide.md "Sharing the cluster").
#include <fmt/format.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/output.h"
#include "jobspec/values.h"
#include "protocol/states.h"

namespace anneal::cli {

std::string StartEstimate(int64_t estimated_start_ms, int64_t now_ms) {
  if (estimated_start_ms <= 0) return "-";
  if (estimated_start_ms <= now_ms) return "now";
  return "in " + Age(now_ms, estimated_start_ms);
}

std::string QuotaText(const pb::TeamRecord& team) {
  std::vector<std::string> parts;
  for (const auto& q : team.quotas()) {
    parts.push_back(fmt::format("{} {}/{}", q.label().empty() ? "cluster" : q.label(), q.guaranteed(),
                                q.max() == 0 ? std::string("-") : std::to_string(q.max())));
  }
  return parts.empty() ? "-" : fmt::format("{}", fmt::join(parts, ", "));
}

std::string WeightText(const pb::TeamRecord& team) {
  return Metric(team.weight() == 0 ? 1.0 : team.weight());
}

std::vector<std::pair<std::string, std::string>> SchedulingLines(const pb::JobRecord& job, int64_t now_ms) {
  std::vector<std::pair<std::string, std::string>> lines;
  std::vector<std::string> limits;
  if (job.time_limit_ms() > 0) limits.push_back("time limit " + jobspec::FormatDuration(job.time_limit_ms() / 1000));
  if (!job.node_selector().empty()) {
    std::map<std::string, std::string> sorted;  // the proto map's order is unspecified
    for (const auto& [key, value] : job.node_selector()) sorted[key] = value;
    std::vector<std::string> pairs;
    for (const auto& [key, value] : sorted) pairs.push_back(key + "=" + value);
    limits.push_back(fmt::format("nodes with {}", fmt::join(pairs, ",")));
  }
  if (!limits.empty()) lines.emplace_back("Limits", fmt::format("{}", fmt::join(limits, "; ")));
  if (job.state() == pb::JOB_PENDING) {
    lines.emplace_back("Queue",
                       fmt::format("{}, estimated start {}",
                                   job.queue_position() == 0 ? std::string("not ordered yet")
                                                             : fmt::format("position {}", job.queue_position()),
                                   job.estimated_start_ms() > 0 ? StartEstimate(job.estimated_start_ms(), now_ms)
                                                                : std::string("unknown")));
    if (!job.wait_reason().empty()) lines.emplace_back("Waiting", job.wait_reason());
  }
  if (job.preemptions() > 0 || job.state() == pb::JOB_PREEMPTED) {
    lines.emplace_back("Preemptions", fmt::format("{} of {} allowed", job.preemptions(), job.max_preemptions()));
  }
  if (!job.preempt_reason().empty()) {
    std::string reason = job.preempt_reason();
    if (job.state() == pb::JOB_PREEMPTED && job.preempt_deadline_ms() > 0) {
      reason +=
          fmt::format(" (checkpointing; killed {} if still running)", StartEstimate(job.preempt_deadline_ms(), now_ms));
    }
    lines.emplace_back("Preempted", reason);
  }
  return lines;
}

namespace {

void PrintTeamQueue(const pb::QueueReply& queue, const pb::TeamRecord& team, int64_t now) {
  double usage = 0;
  for (const auto& u : queue.usage()) {
    if (u.team() == team.name()) usage = u.decayed_slot_seconds();
  }
  auto held = queue.slots_held().find(team.name());
  std::cout << fmt::format("team {}  weight {}  usage {} slot-h  holds {} slots  quotas (guaranteed/max): {}\n",
                           team.name(), WeightText(team), Metric(usage / 3600.0),
                           held == queue.slots_held().end() ? 0u : held->second, QuotaText(team));
  Table t({"POS", "JOB", "NAME", "PRIO", "GANG", "STATE", "WAIT REASON", "START"});
  for (const auto& job : queue.jobs()) {
    if ((job.team().empty() ? "default" : job.team()) != team.name()) continue;
    t.Add({job.queue_position() == 0 ? "-" : std::to_string(job.queue_position()), job.job_id(),
           job.name().empty() ? "-" : job.name(), std::to_string(job.priority()),
           fmt::format("{}x{}", job.resources().nodes(), job.resources().gpus_per_node()),
           std::string(protocol::StateName(job.state())), job.wait_reason().empty() ? "-" : job.wait_reason(),
           StartEstimate(job.estimated_start_ms(), now)});
  }
  if (t.empty()) {
    std::cout << "  (nothing queued)\n";
  } else {
    t.Print(std::cout);
  }
}

int Queue(const GlobalOptions& g, const std::string& team) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("queue", client.status());
  pb::ClientRequest req;
  req.mutable_queue()->set_team(team);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("queue", reply.status());
  const pb::QueueReply& queue = reply->queue();
  if (g.json) {
    std::cout << ToJson(queue).dump(2) << "\n";
    return kExitOk;
  }
  if (queue.teams().empty()) {
    std::cout << "no team to show (you are in no team; anneal whoami)\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  bool first = true;
  for (const auto& t : queue.teams()) {
    if (!first) std::cout << "\n";
    first = false;
    PrintTeamQueue(queue, t, now);
  }
  return kExitOk;
}

}  // namespace

void AddQueueCommand(CLI::App& app, GlobalOptions& g, Action* action) {
  auto team = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("queue", "The pending queue per team: order, wait reasons, estimated starts");
  cmd->add_option("--team", *team, "only this team (default: every team you may read)");
  cmd->callback([&g, team, action] { *action = [&g, team] { return Queue(g, *team); }; });
}

}  // namespace anneal::cli
