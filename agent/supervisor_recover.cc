// Supervisor: recovery after an agent restart (re-adoption through /proc), log reads, checkpoint deletion.
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "agent/checkpoint_files.h"
#include "agent/output_lock.h"
#include "agent/rank_logs.h"
#include "agent/supervisor.h"
#include "agent/supervisor_internal.h"
#include "common/fsutil.h"

namespace anneal::agent {

std::vector<pb::TaskStatus> Supervisor::Recover() {
  for (auto& [dir, rec] : ScanTaskRecords(options_.work_dir)) {
    uint64_t& seen = epochs_[rec.job_id];
    seen = std::max(seen, rec.epoch);
    if (rec.attempt >= latest_attempt_[rec.job_id]) latest_attempt_[rec.job_id] = rec.attempt;
    auto task = std::make_unique<Task>();
    task->id = TaskIdentity{rec.job_id, rec.attempt, rec.epoch, options_.node_id};
    task->launch.set_job_id(rec.job_id);
    task->launch.set_attempt(rec.attempt);
    task->launch.set_epoch(rec.epoch);
    task->launch.set_kind(static_cast<pb::JobKind>(rec.kind));
    task->launch.set_output_dir(rec.output_dir);
    task->dir = dir;
    task->state = static_cast<pb::TaskState>(rec.state);
    task->exit_code = rec.exit_code;
    task->signal = rec.signal;
    task->message = rec.message;
    // Only a cgroup of ours (task.json is the agent's own file; this guards against a stale or odd path).
    if (rec.cgroup.find("/anneal-") != std::string::npos) task->cgroup = rec.cgroup;
    bool any_alive = false;
    for (const auto& rr : rec.ranks) {
      auto rank = std::make_unique<Rank>();
      rank->rec = rr;
      rank->own_child = false;
      rank->exit_known = false;
      const std::string stem = dir + "/rank-" + std::to_string(rr.global_rank);
      rank->log_path = stem + ".log";
      rank->fifo_path = stem + ".events";
      rank->exited = rec.final || !ProcessAlive(rr.pid, rr.start_time);
      rank->ended_unwatched = !rec.final && rank->exited;
      any_alive = any_alive || !rank->exited;
      task->ranks.push_back(std::move(rank));
    }
    if (rec.final) {
      finished_[rec.job_id] = StatusOf(*task);
      if (!task->cgroup.empty() && ::access(task->cgroup.c_str(), F_OK) == 0) ReleaseTaskResources(task.get());
      continue;
    }
    if (auto older = tasks_.find(rec.job_id); older != tasks_.end()) {
      // Two unfinished epochs of one job: only the newest may live.
      spdlog::warn("job {}: killing ranks of superseded epoch {}", rec.job_id, older->second->id.epoch);
      for (auto& r : older->second->ranks) {
        if (!r->exited) SignalGroup(r->rec.pid, SIGKILL);
      }
      FinishWithoutRanks(older->second.get(), pb::TASK_STOPPED, "superseded by epoch " + std::to_string(rec.epoch));
    }
    Task* t = task.get();
    tasks_[rec.job_id] = std::move(task);
    const bool preempting = rec.preempt_deadline_wall_ms > 0;
    if (!any_alive && preempting) {
      // The preempt order was given and the ranks ended: the coordinator resumes from the last committed
      // checkpoint whether they checkpointed or not, and a preemption never costs the job an attempt.
      FinishWithoutRanks(t, pb::TASK_PREEMPTED,
                         rec.preempt_reason +
                             ": every rank ended while the agent was not running; exit status unknown (see the "
                             "rank logs)");
      continue;
    }
    if (!any_alive) {
      FinishWithoutRanks(t, pb::TASK_FAILED,
                         "every rank ended while the agent was not running; exit status unknown (see the rank logs)");
      continue;
    }
    t->adopted = true;
    // The output lock was the previous agent's: take it again for the task hosting global rank 0.
    const bool hosts_rank0 =
        std::any_of(rec.ranks.begin(), rec.ranks.end(), [](const RankRecord& r) { return r.global_rank == 0; });
    if (hosts_rank0 && !rec.output_dir.empty()) {
      auto fd = LockOutputDir(rec.output_dir, rec.job_id, rec.epoch);
      if (fd.ok()) {
        t->output_lock_fd = *fd;
      } else {
        spdlog::warn("job {}: re-adopted without its output lock: {}", rec.job_id, fd.status().message());
      }
    }
    t->phase = TaskPhase::kRunning;  // adopted: its ranks run (a failure before the restart is reported again)
    if (t->state == pb::TASK_LAUNCHING) t->state = pb::TASK_RUNNING;
    if (preempting && t->state == pb::TASK_RUNNING) {
      // The earlier agent obeyed a PreemptTask: keep its deadline (on the wall clock, since steady clocks do
      // not survive a restart); the ranks got their SIGUSR1 then.
      t->phase = NextTaskPhase(t->phase, TaskEvent::kPreemptOrdered);
      t->preempt_deadline_wall_ms = rec.preempt_deadline_wall_ms;
      t->kill_at_ms = clock_.SteadyMs() + std::max<int64_t>(0, rec.preempt_deadline_wall_ms - clock_.WallMs());
      t->stop_reason = rec.preempt_reason;
      spdlog::info("job {} epoch {}: still preempting ({}); SIGKILL in {} ms", t->id.job_id, t->id.epoch,
                   t->stop_reason, t->kill_at_ms - clock_.SteadyMs());
    }
    spdlog::info("job {} attempt {} epoch {}: re-adopted {} rank(s) left running by an earlier agent", t->id.job_id,
                 t->id.attempt, t->id.epoch, t->ranks.size());
    for (auto& r : t->ranks) {
      if (r->exited) continue;
      const int fd = ::open(r->fifo_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) {
        spdlog::warn("job {}: cannot reopen event pipe {}: {}", t->id.job_id, r->fifo_path, ErrnoText(errno));
        continue;
      }
      r->reader = std::make_shared<EventReader>(io_);
      r->reader->fifo.assign(fd);
      StartReading(t, r.get());
    }
  }
  // Ranks that died while no agent watched fail their task now (and stop the rest of the local gang).
  std::vector<std::string> jobs;
  for (const auto& [job, task] : tasks_) jobs.push_back(job);
  for (const auto& job : jobs) {
    auto it = tasks_.find(job);
    if (it == tasks_.end()) continue;
    Task* t = it->second.get();
    for (auto& r : t->ranks) {
      if (r->exited && !IsStopping(t->phase) && t->state != pb::TASK_FAILED) {
        OnRankExit(t, r.get());
        break;
      }
    }
  }
  return Tasks();
}

pb::LogChunk Supervisor::FetchLogs(const pb::FetchLogs& request) const {
  pb::LogChunk chunk;
  chunk.set_request_id(request.request_id());
  chunk.set_job_id(request.job_id());
  chunk.set_rank(request.rank());
  chunk.set_offset(request.offset());
  const auto fail = [&chunk](const Status& st) {
    chunk.mutable_error()->set_code(static_cast<pb::ErrorCode>(static_cast<int>(st.code())));
    chunk.mutable_error()->set_message(st.message());
    return chunk;
  };
  if (Status st = ValidateJobId(request.job_id()); !st.ok()) return fail(st);
  uint32_t attempt = 0;
  if (auto it = latest_attempt_.find(request.job_id()); it != latest_attempt_.end()) {
    attempt = it->second;
  } else {
    // Not started by this agent run: the highest attempt directory on disk.
    std::error_code ec;
    bool found = false;
    for (const auto& e : std::filesystem::directory_iterator(options_.work_dir + "/jobs/" + request.job_id(), ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("attempt-", 0) != 0) continue;
      try {
        attempt = std::max<uint32_t>(attempt, static_cast<uint32_t>(std::stoul(name.substr(8))));
        found = true;
      } catch (const std::exception&) {
      }
    }
    if (!found) return fail(NotFoundError("no logs of job " + request.job_id() + " on node " + options_.node_id));
  }
  const std::string path =
      TaskDir(options_.work_dir, request.job_id(), attempt) + "/rank-" + std::to_string(request.rank()) + ".log";
  auto slice =
      ReadLog(path, request.offset(), std::min<uint32_t>(request.max_bytes() ? request.max_bytes() : 65536, 4 << 20));
  if (!slice.ok()) {
    return fail(slice.status().WithContext("job " + request.job_id() + " rank " + std::to_string(request.rank())));
  }
  chunk.set_offset(slice->offset);
  chunk.set_data(slice->data);
  bool live = false;
  if (auto it = tasks_.find(request.job_id()); it != tasks_.end() && it->second->id.attempt == attempt) {
    for (const auto& r : it->second->ranks) live = live || (r->rec.global_rank == request.rank() && !r->exited);
  }
  chunk.set_eof(!live && slice->offset + slice->data.size() >= slice->end);
  return chunk;
}

pb::CheckpointDeleted Supervisor::DeleteCheckpoint(const pb::DeleteCheckpoint& request) const {
  pb::CheckpointDeleted out;
  out.set_job_id(request.job_id());
  out.set_step(request.step());
  Status st = DeleteCheckpointDir(request.path(), request.output_dir());
  out.set_ok(st.ok());
  if (!st.ok()) {
    out.set_error(st.message());
    spdlog::warn("job {}: checkpoint {} not deleted: {}", request.job_id(), request.step(), st.message());
  } else {
    spdlog::info("job {}: checkpoint {} deleted ({})", request.job_id(), request.step(), request.path());
  }
  return out;
}

}  // namespace anneal::agent
