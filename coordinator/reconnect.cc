// The reconnect grace of the agent channel (CoordinatorOptions::reconnect_grace_ms): a node declared DOWN after
// a heartbeat timeout may only be cut off (a partition, a coordinator on the wrong side of a switch), and its
// ranks train without the coordinator. So a RUNNING job's running task on it is kept, not lost: the node gets no
// new work, and if it registers again within the grace still running the task (same epoch), the task is
// re-adopted and the job never stopped. Otherwise the task is lost when the grace ends and the job restarts
// from its newest committed checkpoint, as for a dead node. A failure elsewhere in the gang, a cancel or a
// preemption ends the wait at once (ReleaseDisconnectedTasks).
//
//   task RUNNING on node --node DOWN (heartbeat timeout)--> kept (Job::disconnected_ms[node] = now)
//   kept --node registers reporting the task, same epoch--> RUNNING (re-adopted)
//   kept --node registers without it--> RUNNING until heartbeats show it missing (HandleHeartbeat: LOST)
//   kept --grace over--> LOST (the job retries)
//   kept --the job stops or is preempted for another reason--> LOST
// Every LOST goes through LoseTask (below), which the node-down path (agents.cc MarkNodeDown) and the
// missing-task path (HandleHeartbeat) share: an attempt with a LOST task is an infrastructure restart.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "coordinator/coordinator.h"
#include "protocol/states.h"

namespace anneal::coordinator {

bool Coordinator::KeepDisconnectedTask(Job& job, const std::string& node_id, const std::string& reason) {
  if (options_.reconnect_grace_ms <= 0 || job.record.state() != pb::JOB_RUNNING) return false;
  auto task = job.record.task_states().find(node_id);
  if (task == job.record.task_states().end() || task->second != pb::TASK_RUNNING) return false;
  if (!job.disconnected_ms.emplace(node_id, clock_->NowMs()).second) return true;
  disconnected_jobs_.insert(job.record.job_id());
  jobs_.AddEvent(job, "error",
                 fmt::format("{}: its task is kept for up to {} ms in case the node reconnects (reconnect_grace_ms); "
                             "the job restarts from its newest checkpoint if it does not",
                             reason, options_.reconnect_grace_ms));
  return true;
}

void Coordinator::ExpireDisconnectedTasks() {
  const int64_t now = clock_->NowMs();
  const std::set<std::string> jobs = disconnected_jobs_;  // a copy: Reconcile may release a job's entry
  for (const auto& job_id : jobs) {
    Job* job = jobs_.Find(job_id);
    if (job == nullptr || job->disconnected_ms.empty()) {
      disconnected_jobs_.erase(job_id);
      continue;
    }
    bool expired = false;
    for (auto d = job->disconnected_ms.begin(); d != job->disconnected_ms.end();) {
      if (now - d->second < options_.reconnect_grace_ms) {
        ++d;
        continue;
      }
      const std::string node_id = d->first;
      ++d;  // LoseTask erases the entry
      LoseTask(*job, node_id,
               fmt::format("node {} did not reconnect within {} ms (reconnect_grace_ms): task lost", node_id,
                           options_.reconnect_grace_ms));
      expired = true;
    }
    if (job->disconnected_ms.empty()) disconnected_jobs_.erase(job_id);
    if (expired) Reconcile(*job);
  }
}

void Coordinator::ReadoptDisconnectedTasks(const Node& node, const std::set<std::string>& reported) {
  const std::string& id = node.record.node_id();
  for (const auto& job_id : node.task_jobs) {
    Job* job = jobs_.Find(job_id);
    if (job == nullptr || job->disconnected_ms.erase(id) == 0) continue;
    if (job->disconnected_ms.empty()) disconnected_jobs_.erase(job_id);
    // Listed at registration, or (an agent registers while its task list is being rebuilt) in its next
    // heartbeats: a task they stop listing for a heartbeat timeout is lost then (HandleHeartbeat).
    spdlog::info("node {} reconnected within the grace: job {}'s task re-adopted", id, job_id);
    jobs_.AddEvent(*job, "message",
                   fmt::format("node {} reconnected within the grace: its task was re-adopted, the job kept running{}",
                               id, reported.count(job_id) > 0 ? "" : " (confirmed by its heartbeats)"));
  }
}

void Coordinator::ReleaseDisconnectedTasks(Job& job, const std::string& why) {
  if (job.disconnected_ms.empty()) return;
  const auto kept = job.disconnected_ms;  // a copy: LoseTask erases the entries
  for (const auto& [node_id, since] : kept) {
    LoseTask(job, node_id, fmt::format("node {} is down: its task counts as lost ({})", node_id, why));
  }
}

void Coordinator::LoseTask(Job& job, const std::string& node_id, const std::string& what) {
  if (job.disconnected_ms.erase(node_id) > 0 && job.disconnected_ms.empty()) {
    disconnected_jobs_.erase(job.record.job_id());
  }
  auto task = job.record.task_states().find(node_id);
  if (task == job.record.task_states().end() || protocol::TaskEnded(task->second)) return;
  const pb::JobState state = job.record.state();
  if (state == pb::JOB_STARTING || state == pb::JOB_RUNNING) job.record.set_result(what);
  jobs_.AddEvent(job, "error", what);
  SetTaskState(job, node_id, pb::TASK_LOST);
}

}  // namespace anneal::coordinator
