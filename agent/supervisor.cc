// Supervisor core: fencing, stop, reaping, failure of the local gang, final reports. Launching is in
// supervisor_launch.cc, recovery after a restart and the file services in supervisor_recover.cc.
#include "agent/supervisor.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>

#include "agent/rank_logs.h"
#include "agent/supervisor_internal.h"
#include "agent/task_cgroup.h"
#include "protocol/states.h"

namespace anneal::agent {

Supervisor::Supervisor(boost::asio::io_context& io, const Clock& clock, SupervisorOptions options, ReportFn report)
    : io_(io), clock_(clock), options_(std::move(options)), report_(std::move(report)) {}

Supervisor::~Supervisor() {
  for (auto& [job, task] : tasks_) {
    for (auto& r : task->ranks) {
      if (r->reader) r->reader->Close();
    }
  }
}

uint64_t Supervisor::EpochSeen(const std::string& job_id) const {
  uint64_t e = 0;
  if (auto it = epochs_.find(job_id); it != epochs_.end()) e = it->second;
  if (auto it = stop_epochs_.find(job_id); it != stop_epochs_.end()) e = std::max(e, it->second);
  return e;
}

void Supervisor::Launch(const pb::LaunchTask& launch) {
  const std::string& job = launch.job_id();
  if (Status st = ValidateJobId(job); !st.ok()) {
    spdlog::warn("launch refused: {}", st.message());
    pb::AgentToCoordinator m;
    pb::TaskStatus* s = m.mutable_task_update()->mutable_status();
    s->set_job_id(job);
    s->set_attempt(launch.attempt());
    s->set_epoch(launch.epoch());
    s->set_state(pb::TASK_FAILED);
    s->set_message("launch refused: " + st.message());
    report_(std::move(m));
    return;
  }
  const uint64_t seen = epochs_.count(job) ? epochs_[job] : 0;
  const uint64_t stopped = stop_epochs_.count(job) ? stop_epochs_[job] : 0;
  if (launch.epoch() < seen || (launch.epoch() <= stopped && stopped > 0)) {
    const std::string why = launch.epoch() < seen ? "epoch " + std::to_string(seen) + " was already launched"
                                                  : "epoch " + std::to_string(stopped) + " was already stopped";
    spdlog::warn("launch of job {} epoch {} refused: {}", job, launch.epoch(), why);
    pb::AgentToCoordinator m;
    pb::TaskStatus* s = m.mutable_task_update()->mutable_status();
    s->set_job_id(job);
    s->set_attempt(launch.attempt());
    s->set_epoch(launch.epoch());
    s->set_state(pb::TASK_FAILED);
    s->set_message("launch refused: stale epoch " + std::to_string(launch.epoch()) + " (" + why + ")");
    report_(std::move(m));
    return;
  }
  if (launch.epoch() == seen && seen > 0) {
    // At-least-once delivery: the same launch again. Re-report what it became; never start it twice.
    spdlog::info("duplicate launch of job {} epoch {}: re-reporting its status", job, launch.epoch());
    if (auto it = tasks_.find(job); it != tasks_.end() && it->second->id.epoch == launch.epoch()) {
      ReportStatus(*it->second);
    } else if (auto f = finished_.find(job); f != finished_.end() && f->second.epoch() == launch.epoch()) {
      pb::AgentToCoordinator m;
      *m.mutable_task_update()->mutable_status() = f->second;
      report_(std::move(m));
    }
    return;
  }
  epochs_[job] = launch.epoch();
  if (auto it = tasks_.find(job); it != tasks_.end()) {
    spdlog::info("job {}: epoch {} supersedes the running epoch {}; killing the old ranks first", job, launch.epoch(),
                 it->second->id.epoch);
    queued_[job] = launch;
    BeginStop(it->second.get(), 0, "superseded by epoch " + std::to_string(launch.epoch()), TaskEvent::kStopOrdered);
    return;
  }
  StartTask(launch);
}

void Supervisor::Stop(const pb::StopTask& stop) {
  const std::string& job = stop.job_id();
  const uint64_t seen = epochs_.count(job) ? epochs_[job] : 0;
  if (stop.epoch() < seen) {
    spdlog::warn("stop of job {} epoch {} refused: epoch {} was already launched here", job, stop.epoch(), seen);
    return;
  }
  stop_epochs_[job] = std::max(stop_epochs_[job], stop.epoch());
  if (auto q = queued_.find(job); q != queued_.end() && q->second.epoch() <= stop.epoch()) queued_.erase(q);
  auto it = tasks_.find(job);
  if (it == tasks_.end()) {
    if (auto f = finished_.find(job); f != finished_.end() && f->second.epoch() >= stop.epoch()) {
      spdlog::info("stop of job {} epoch {}: its task already ended here", job, stop.epoch());
      return;  // its final status was reported
    }
    // Never launched here (the launch was refused or lost): confirm at once so the coordinator need not wait.
    spdlog::info("stop of job {} epoch {}: nothing was launched here", job, stop.epoch());
    pb::AgentToCoordinator m;
    pb::TaskStatus* s = m.mutable_task_update()->mutable_status();
    s->set_job_id(job);
    s->set_epoch(stop.epoch());
    s->set_state(pb::TASK_STOPPED);
    s->set_message("no task of epoch " + std::to_string(stop.epoch()) + " was launched on node " + options_.node_id);
    report_(std::move(m));
    return;
  }
  const std::string reason = stop.reason().empty() ? "stopped by the coordinator" : stop.reason();
  BeginStop(it->second.get(), stop.grace_ms(), reason, TaskEvent::kStopOrdered);
}

void Supervisor::Preempt(const pb::PreemptTask& preempt) {
  const std::string& job = preempt.job_id();
  auto it = tasks_.find(job);
  if (it == tasks_.end() || it->second->id.epoch != preempt.epoch()) {
    spdlog::warn("preempt of job {} epoch {} ignored: no task of that epoch runs here{}", job, preempt.epoch(),
                 it == tasks_.end() ? "" : " (epoch " + std::to_string(it->second->id.epoch) + " does)");
    return;
  }
  Task* task = it->second.get();
  if (task->phase == TaskPhase::kAwaitingLock) {
    // No rank ran: nothing to checkpoint. The coordinator resumes from the last committed checkpoint.
    task->exit_code = protocol::kPreemptedExitCode;
    const std::string reason = "preempted" + (preempt.reason().empty() ? std::string() : " (" + preempt.reason() + ")");
    FinishWithoutRanks(task, pb::TASK_PREEMPTED, reason + " while waiting for the output lock; no rank ran");
    return;
  }
  if (task->phase == TaskPhase::kPreempting) {
    spdlog::info("preempt of job {} epoch {}: already preempting; the first deadline stays", job, preempt.epoch());
    return;
  }
  const TaskPhase next = NextTaskPhase(task->phase, TaskEvent::kPreemptOrdered);
  if (next != TaskPhase::kPreempting) {
    spdlog::warn("preempt of job {} epoch {} ignored: the task is {}", job, preempt.epoch(),
                 TaskPhaseName(task->phase));
    return;
  }
  task->phase = next;
  task->kill_at_ms = clock_.SteadyMs() + preempt.grace_ms();
  task->preempt_deadline_wall_ms = clock_.WallMs() + preempt.grace_ms();
  task->stop_reason = "preempted" + (preempt.reason().empty() ? std::string() : " (" + preempt.reason() + ")");
  spdlog::info("job {} epoch {}: {}; SIGUSR1 to every rank, SIGKILL after {} ms", job, task->id.epoch,
               task->stop_reason, preempt.grace_ms());
  Persist(*task);  // first: an agent that dies now still knows, when restarted, that the ranks were told
  for (auto& r : task->ranks) {
    if (r->exited) continue;
    // The rank's own pid, not its group: the trainer decides when to stop; a wrapper that does not forward the
    // signal leaves the trainer running until the deadline. An adopted pid is checked against its start time.
    if (r->own_child || ProcessAlive(r->rec.pid, r->rec.start_time)) ::kill(r->rec.pid, SIGUSR1);
  }
}

void Supervisor::StopAll(uint32_t grace_ms, const std::string& reason) {
  queued_.clear();
  std::vector<std::string> jobs;  // BeginStop ends a task that is only waiting for its lock (erases it)
  for (const auto& [job, task] : tasks_) jobs.push_back(job);
  for (const auto& job : jobs) {
    if (auto it = tasks_.find(job); it != tasks_.end()) {
      BeginStop(it->second.get(), grace_ms, reason, TaskEvent::kStopOrdered);
    }
  }
}

void Supervisor::Detach() {
  for (auto& [job, task] : tasks_) {
    for (auto& r : task->ranks) {
      if (r->reader) r->reader->Close();
    }
    // The next agent takes the output lock again when it re-adopts the task; the cgroup stays (in task.json).
    if (task->output_lock_fd >= 0) ::close(task->output_lock_fd);
    task->output_lock_fd = -1;
  }
  tasks_.clear();
  queued_.clear();
}

void Supervisor::BeginStop(Task* task, uint32_t grace_ms, const std::string& reason, TaskEvent event) {
  if (task->phase == TaskPhase::kAwaitingLock) {
    // No rank runs: the task ends at once (a superseding launch starts now, from FinishWithoutRanks).
    FinishWithoutRanks(task, pb::TASK_STOPPED, reason + " while waiting for the output lock; no rank ran");
    return;
  }
  const int64_t deadline = clock_.SteadyMs() + grace_ms;
  if (IsStopping(task->phase)) {
    task->kill_at_ms = std::min(task->kill_at_ms, deadline);  // a shorter grace wins
  } else {
    const bool had_deadline = HasKillDeadline(task->phase);  // PREEMPTING: the preemption's deadline still holds
    task->phase = NextTaskPhase(task->phase, event);
    task->kill_at_ms = had_deadline ? std::min(task->kill_at_ms, deadline) : deadline;
    task->stop_reason = reason;
    spdlog::info("job {} epoch {}: stopping ({}; SIGKILL after {} ms)", task->id.job_id, task->id.epoch, reason,
                 grace_ms);
  }
  for (auto& r : task->ranks) {
    if (r->exited) continue;
    SignalGroup(r->rec.pid, grace_ms == 0 ? SIGKILL : SIGTERM);
  }
  if (grace_ms == 0) KillCgroupOf(*task);
}

void Supervisor::Reap() {
  const int64_t now = clock_.SteadyMs();
  const bool poll_adopted = now >= next_adopted_poll_ms_;
  if (poll_adopted) next_adopted_poll_ms_ = now + options_.adopted_poll_ms;
  // As a subreaper the agent also inherits the orphaned descendants of its ranks: reap them all, keeping the
  // statuses of ranks for the loop below.
  std::map<pid_t, int> reaped;
  if (options_.reap_orphans) {
    int wstatus = 0;
    pid_t got;
    while ((got = ::waitpid(-1, &wstatus, WNOHANG)) > 0) reaped[got] = wstatus;
  }
  // Collect first: OnRankExit may finish and erase the task.
  std::vector<std::pair<std::string, Rank*>> exited;
  for (auto& [job, task] : tasks_) {
    for (auto& r : task->ranks) {
      if (r->exited) continue;
      if (r->own_child) {
        int wstatus = 0;
        pid_t got = 0;
        if (auto it = reaped.find(r->rec.pid); it != reaped.end()) {
          got = it->first;
          wstatus = it->second;
        } else {
          got = ::waitpid(r->rec.pid, &wstatus, WNOHANG);
        }
        if (got == r->rec.pid) {
          r->exit = DecodeWaitStatus(wstatus);
          exited.emplace_back(job, r.get());
        } else if (got < 0 && errno == ECHILD) {
          r->exit_known = false;  // reaped elsewhere; treat like an adopted rank
          exited.emplace_back(job, r.get());
        }
      } else if (poll_adopted && !ProcessAlive(r->rec.pid, r->rec.start_time)) {
        r->exit_known = false;
        exited.emplace_back(job, r.get());
      }
    }
  }
  for (auto& [job, rank] : exited) {
    // An earlier exit may have finished the task (and a queued launch replaced it): check ownership.
    auto it = tasks_.find(job);
    if (it == tasks_.end()) continue;
    bool owned = false;
    for (const auto& r : it->second->ranks) owned = owned || r.get() == rank;
    if (!owned) continue;
    rank->exited = true;
    OnRankExit(it->second.get(), rank);
  }
}

void Supervisor::OnRankExit(Task* task, Rank* rank) {
  DrainEvents(task, rank);
  if (rank->reader) rank->reader->Close();
  // Whatever the rank left in its process group (data loader workers, a shell's children) goes with it.
  if (rank->rec.pid > 1) ::kill(-rank->rec.pid, SIGKILL);
  spdlog::info("job {} epoch {}: rank {} (pid {}) {}", task->id.job_id, task->id.epoch, rank->rec.global_rank,
               rank->rec.pid, rank->DescribeExit());
  // While preempting, exiting kPreemptedExitCode or being killed at the deadline is the expected end.
  const bool failed = rank->Failed() && !(task->phase == TaskPhase::kPreempting && rank->EndedPreempted());
  if (failed && task->exit_code == 0 && task->signal == 0 && task->phase != TaskPhase::kFailing) {
    task->exit_code = rank->exit_known ? rank->exit.exit_code : -1;
    task->signal = rank->exit_known ? rank->exit.signal : 0;
  }
  if (failed && !IsStopping(task->phase)) {
    // The gang cannot go on without this rank: report at once, then stop the other local ranks.
    task->state = pb::TASK_FAILED;
    task->message = "rank " + std::to_string(rank->rec.global_rank) + " " + rank->DescribeExit();
    if (!rank->finished_message.empty()) task->message += ": " + rank->finished_message;
    ReportStatus(*task);
    Persist(*task);
    BeginStop(task, options_.fail_grace_ms, "rank " + std::to_string(rank->rec.global_rank) + " failed",
              TaskEvent::kRankFailed);  // -> FAILING: the failure is reported
    MaybeFinish(task);                  // when this was the only rank left
    return;
  }
  MaybeFinish(task);
}

void Supervisor::MaybeFinish(Task* task) {
  if (!task->AllExited()) return;
  std::string details;
  bool any_failed = false;
  for (const auto& r : task->ranks) {
    any_failed = any_failed || r->Failed();
    if (!details.empty()) details += "; ";
    details += "rank " + std::to_string(r->rec.global_rank) + " " + r->DescribeExit();
  }
  const bool failure_reported = task->phase == TaskPhase::kFailing;
  if (IsStopping(task->phase)) {
    task->state = failure_reported ? pb::TASK_FAILED : pb::TASK_STOPPED;
    task->message = task->stop_reason + ": " + details;
  } else if (task->phase == TaskPhase::kPreempting && any_failed) {
    SetPreemptedOutcome(task, details);  // "failed" here means 75 or killed at the deadline (OnRankExit)
  } else if (any_failed) {
    task->state = pb::TASK_FAILED;
    task->message = details;
  } else {
    task->state = pb::TASK_SUCCEEDED;
    task->message = details;
    for (const auto& r : task->ranks) {
      if (r->rec.global_rank == 0 && !r->finished_message.empty()) task->message = r->finished_message;
    }
  }
  task->phase = NextTaskPhase(task->phase, TaskEvent::kAllRanksExited);
  spdlog::info("job {} epoch {}: task {}: {}", task->id.job_id, task->id.epoch, protocol::StateName(task->state),
               task->message);
  // A failure was reported the moment it happened; a stop of an already failed task reports nothing new.
  if (!failure_reported) ReportStatus(*task);
  Retire(task);
}

void Supervisor::Retire(Task* task) {
  ReleaseTaskResources(task);
  const std::string job = task->id.job_id;
  finished_[job] = StatusOf(*task);
  Persist(*task);
  tasks_.erase(job);  // `task` is gone from here on
  if (auto q = queued_.find(job); q != queued_.end()) {
    pb::LaunchTask next = q->second;
    queued_.erase(q);
    StartTask(next);
  }
}

void Supervisor::SetPreemptedOutcome(Task* task, const std::string& details) {
  // exit_code/signal say how it ended: kPreemptedExitCode when every rank checkpointed and exited, else the
  // signal of a rank killed at the deadline (or dead of the SIGUSR1 itself).
  task->state = pb::TASK_PREEMPTED;
  task->exit_code = protocol::kPreemptedExitCode;
  task->signal = 0;
  for (const auto& r : task->ranks) {
    // An adopted rank has no wait status, but a rank SIGKILLed at the deadline died of that.
    const int signal = r->exit_known ? r->exit.signal : (r->killed_after_grace ? SIGKILL : 0);
    if (signal == 0) continue;
    if (task->signal == 0 || r->killed_after_grace) {
      task->exit_code = 128 + signal;
      task->signal = signal;
    }
  }
  task->message = task->stop_reason + ": " + details;
}

void Supervisor::FinishWithoutRanks(Task* task, pb::TaskState state, const std::string& message) {
  task->phase = NextTaskPhase(task->phase, TaskEvent::kAllRanksExited);
  task->state = state;
  task->message = message;
  for (auto& r : task->ranks) {
    if (r->reader) r->reader->Close();
  }
  spdlog::warn("job {} epoch {}: {}", task->id.job_id, task->id.epoch, message);
  ReportStatus(*task);
  Retire(task);
}

void Supervisor::Tick() {
  Reap();
  const int64_t now = clock_.SteadyMs();
  RetryOutputLocks(now);
  std::vector<Task*> to_kill;
  for (auto& [job, task] : tasks_) {
    if (HasKillDeadline(task->phase) && now >= task->kill_at_ms) to_kill.push_back(task.get());
  }
  for (Task* task : to_kill) {
    bool killed_any = false;
    for (auto& r : task->ranks) {
      if (r->exited || r->killed_after_grace) continue;
      if (SignalGroup(r->rec.pid, SIGKILL)) {
        r->killed_after_grace = true;
        killed_any = true;
        spdlog::info("job {}: rank {} (pid {}) still running after the grace period ({}): SIGKILL", task->id.job_id,
                     r->rec.global_rank, r->rec.pid, TaskPhaseName(task->phase));
      }
    }
    if (killed_any) KillCgroupOf(*task);
  }
  for (auto it = cgroups_to_remove_.begin(); it != cgroups_to_remove_.end();) {
    it = RemoveTaskCgroup(*it).ok() ? cgroups_to_remove_.erase(it) : std::next(it);
  }
  if (options_.log_retention_ms > 0 && now >= next_prune_ms_) {
    next_prune_ms_ = now + options_.prune_check_ms;
    PruneOldLogs();
  }
  if (now >= next_rotate_ms_) {
    next_rotate_ms_ = now + options_.rotate_check_ms;
    for (auto& [job, task] : tasks_) {
      for (auto& r : task->ranks) {
        if (Status st = RotateLogIfLarger(r->log_path, options_.log_max_bytes); !st.ok()) {
          spdlog::warn("{}", st.message());
        }
      }
    }
  }
}

void Supervisor::RetryOutputLocks(int64_t now) {
  std::vector<std::string> due;  // ContinueLaunch may end (erase) a task
  for (const auto& [job, task] : tasks_) {
    if (task->phase == TaskPhase::kAwaitingLock && now >= task->next_lock_try_ms) due.push_back(job);
  }
  for (const auto& job : due) {
    if (auto it = tasks_.find(job); it != tasks_.end() && it->second->phase == TaskPhase::kAwaitingLock) {
      ContinueLaunch(it->second.get());
    }
  }
}

void Supervisor::PruneOldLogs() {
  namespace fs = std::filesystem;
  const auto cutoff =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(clock_.WallMs() - options_.log_retention_ms));
  std::error_code ec;
  for (const auto& job : fs::directory_iterator(options_.work_dir + "/jobs", ec)) {
    const std::string job_id = job.path().filename().string();
    auto active = tasks_.find(job_id);
    for (const auto& attempt : fs::directory_iterator(job.path(), ec)) {
      if (active != tasks_.end() && active->second->dir == attempt.path().string()) continue;  // still running
      for (const auto& f : fs::directory_iterator(attempt.path(), ec)) {
        const std::string name = f.path().filename().string();
        const bool prunable = name.rfind("rank-", 0) == 0 || name == "config.yaml";
        if (!prunable || name.find(".events") != std::string::npos) continue;
        std::error_code time_ec;
        const auto written = fs::last_write_time(f.path(), time_ec);
        if (time_ec || std::chrono::file_clock::to_sys(written) >= cutoff) continue;
        if (fs::remove(f.path(), time_ec)) spdlog::info("pruned {} (older than the log retention)", f.path().string());
      }
    }
  }
}

void Supervisor::KillCgroupOf(const Task& task) {
  if (task.cgroup.empty()) return;
  if (Status st = KillTaskCgroup(task.cgroup); !st.ok()) spdlog::warn("job {}: {}", task.id.job_id, st.message());
}

void Supervisor::ReleaseTaskResources(Task* task) {
  if (task->output_lock_fd >= 0) {
    ::close(task->output_lock_fd);
    task->output_lock_fd = -1;
  }
  if (!task->cgroup.empty()) {
    // The ranks are gone; whatever they left (daemons in other sessions) goes now. The cgroup is removed once
    // empty (retried by Tick).
    KillCgroupOf(*task);
    if (!RemoveTaskCgroup(task->cgroup).ok()) cgroups_to_remove_.push_back(task->cgroup);
  }
}

bool Supervisor::Idle() const {
  return tasks_.empty() && queued_.empty();
}

pb::TaskStatus Supervisor::StatusOf(const Task& task) const {
  pb::TaskStatus s;
  s.set_job_id(task.id.job_id);
  s.set_attempt(task.id.attempt);
  s.set_epoch(task.id.epoch);
  s.set_state(task.state);
  for (const auto& r : task.ranks) {
    if (!r->exited && r->rec.pid > 0) s.add_pids(r->rec.pid);
    s.add_global_ranks(r->rec.global_rank);
  }
  s.set_exit_code(task.exit_code);
  s.set_signal(task.signal);
  s.set_message(task.message);
  return s;
}

std::vector<pb::TaskStatus> Supervisor::Tasks() const {
  std::vector<pb::TaskStatus> out;
  for (const auto& [job, task] : tasks_) out.push_back(StatusOf(*task));
  return out;
}

void Supervisor::ReportStatus(const Task& task) {
  pb::AgentToCoordinator m;
  *m.mutable_task_update()->mutable_status() = StatusOf(task);
  report_(std::move(m));
}

void Supervisor::Persist(const Task& task) {
  TaskRecord rec;
  rec.job_id = task.id.job_id;
  rec.attempt = task.id.attempt;
  rec.epoch = task.id.epoch;
  rec.kind = task.launch.kind();
  rec.output_dir = task.launch.output_dir();
  for (const auto& r : task.ranks) rec.ranks.push_back(r->rec);
  rec.final = task.state == pb::TASK_SUCCEEDED || task.state == pb::TASK_STOPPED || task.state == pb::TASK_PREEMPTED ||
              (task.state == pb::TASK_FAILED && task.AllExited());
  if (task.phase == TaskPhase::kPreempting) {
    rec.preempt_deadline_wall_ms = task.preempt_deadline_wall_ms;
    rec.preempt_reason = task.stop_reason;
  }
  rec.state = task.state;
  rec.exit_code = task.exit_code;
  rec.signal = task.signal;
  rec.message = task.message;
  rec.cgroup = task.cgroup;
  if (Status st = WriteTaskRecord(task.dir, rec); !st.ok()) spdlog::error("{}", st.message());
}

}  // namespace anneal::agent
