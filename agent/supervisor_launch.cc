// Supervisor: pre-launch checks, the task directory, starting the ranks, and reading their event pipes.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/asio/read.hpp>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <set>

#include "agent/output_lock.h"
#include "agent/stager.h"
#include "agent/supervisor.h"
#include "agent/supervisor_internal.h"
#include "agent/task_cgroup.h"
#include "common/fsutil.h"
#include "jobspec/path_policy.h"

extern char** environ;

namespace anneal::agent {
namespace {

namespace fs = std::filesystem;

// Creates `dir` (what this creates is given to the rank's user), proves it writable with a probe file and,
// for another user, by its permission bits, and checks its free space.
Status CheckWritableDir(const std::string& what, const std::string& dir, uint64_t min_free_bytes,
                        const std::optional<RankUser>& user = std::nullopt) {
  if (Status st = MakeDirsOwnedBy(dir, user); !st.ok()) {
    return FailedPreconditionError(what + " " + dir + ": " + st.message());
  }
  if (user) RETURN_IF_ERROR(CheckAccessibleBy(what, dir, *user, /*writable=*/true));
  const std::string probe = dir + "/.anneal-write-probe-" + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FailedPreconditionError(what + " " + dir + " is not writable: " + ErrnoText(errno));
  ::close(fd);
  ::unlink(probe.c_str());
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0)
    return FailedPreconditionError(what + " " + dir + ": statvfs: " + ErrnoText(errno));
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (free_bytes < min_free_bytes) {
    return ResourceExhaustedError(what + " " + dir + " has " + std::to_string(free_bytes >> 20) +
                                  " MiB free, below the required " + std::to_string(min_free_bytes >> 20) + " MiB");
  }
  return Status::Ok();
}

Status CheckPortBindable(uint32_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError("socket for the rendezvous port check: " + ErrnoText(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // like c10d's TCPStore
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return FailedPreconditionError("rendezvous port " + std::to_string(port) +
                                   " (MASTER_PORT) is not bindable: " + ErrnoText(err));
  }
  return Status::Ok();
}

// The trainer's tokenized cache directory, as the job spec resolves it (flat or nested key).
std::string CacheDir(const pb::LaunchTask& launch) {
  try {
    YAML::Node root = YAML::Load(launch.trainer_config_yaml());
    // The resolved spec spells every key, an unset cache dir as "": that means the default below.
    if (root.IsMap()) {
      if (root["tokenized_cache_dir"] && root["tokenized_cache_dir"].IsScalar() &&
          !root["tokenized_cache_dir"].as<std::string>().empty()) {
        return root["tokenized_cache_dir"].as<std::string>();
      }
      if (root["data"] && root["data"].IsMap() && root["data"]["tokenized_cache_dir"] &&
          !root["data"]["tokenized_cache_dir"].as<std::string>().empty()) {
        return root["data"]["tokenized_cache_dir"].as<std::string>();
      }
    }
  } catch (const YAML::Exception&) {
    // The trainer validates its config and fails with a clear message; nothing to check here.
  }
  if (launch.output_dir().empty()) return "";
  return (fs::path(launch.output_dir()).parent_path() / ".anneal-cache").string();
}

// The team's outputs roots as the coordinator sent them, checked again on this node's filesystem (symlinks
// the coordinator cannot see). Nothing to check when the launch carries no roots.
Status CheckUnderOutputRoots(const std::string& what, const std::string& dir, const pb::LaunchTask& launch) {
  if (launch.output_roots().empty() || dir.empty()) return Status::Ok();
  auto resolved = jobspec::ResolvePolicyPath(dir);
  if (!resolved.ok()) return InvalidArgumentError(what + ": " + resolved.status().message());
  std::string allowed;
  for (const auto& root : launch.output_roots()) {
    allowed += (allowed.empty() ? "" : ", ") + root;
    auto r = jobspec::ResolvePolicyPath(root);
    if (r.ok() && jobspec::PathIsStrictlyUnder(*resolved, *r)) return Status::Ok();
  }
  return PermissionDeniedError(what + " " + dir + (*resolved != dir ? " (resolves to " + *resolved + " here)" : "") +
                               " is outside the outputs roots of team '" + launch.team() + "' (allowed: " + allowed +
                               ")");
}

}  // namespace

Status Supervisor::PreLaunchChecks(const pb::LaunchTask& launch, const std::optional<RankUser>& user) const {
  if (launch.ranks_size() == 0) return InvalidArgumentError("launch has no ranks for this node");
  std::set<uint32_t> slots;
  for (const auto& r : launch.ranks()) {
    if (options_.slots > 0 && r.slot() >= options_.slots) {
      return InvalidArgumentError("rank " + std::to_string(r.global_rank()) + " is placed on slot " +
                                  std::to_string(r.slot()) + ", but this node has " + std::to_string(options_.slots) +
                                  " slots");
    }
    if (!slots.insert(r.slot()).second) {
      return InvalidArgumentError("slot " + std::to_string(r.slot()) + " is assigned to two ranks");
    }
    if (launch.world_size() != 0 && r.global_rank() >= launch.world_size()) {
      return InvalidArgumentError("rank " + std::to_string(r.global_rank()) + " is outside world size " +
                                  std::to_string(launch.world_size()));
    }
  }
  RETURN_IF_ERROR(CheckWritableDir("work directory", options_.work_dir, options_.min_free_bytes));
  const std::string cache = CacheDir(launch);
  if (!launch.output_dir().empty()) {
    if (!fs::path(launch.output_dir()).is_absolute()) {
      return InvalidArgumentError("output directory '" + launch.output_dir() + "' is not an absolute path");
    }
    // Before anything is created there, and again after (a symlink swapped in meanwhile).
    RETURN_IF_ERROR(CheckUnderOutputRoots("output directory", launch.output_dir(), launch));
    RETURN_IF_ERROR(CheckUnderOutputRoots("cache directory", cache, launch));
    RETURN_IF_ERROR(CheckWritableDir("output directory", launch.output_dir(), options_.min_free_bytes, user));
    RETURN_IF_ERROR(CheckUnderOutputRoots("output directory", launch.output_dir(), launch));
  }
  if (!cache.empty()) {
    RETURN_IF_ERROR(CheckWritableDir("cache directory", cache, options_.min_free_bytes, user));
    RETURN_IF_ERROR(CheckUnderOutputRoots("cache directory", cache, launch));
  }
  const bool hosts_rank0 = std::any_of(launch.ranks().begin(), launch.ranks().end(),
                                       [](const pb::RankAssignment& r) { return r.global_rank() == 0; });
  if (hosts_rank0 && launch.master_port() != 0) RETURN_IF_ERROR(CheckPortBindable(launch.master_port()));
  return Status::Ok();
}

void Supervisor::StartTask(const pb::LaunchTask& launch) {
  auto owned = std::make_unique<Task>();
  Task* task = owned.get();
  task->id = TaskIdentity{launch.job_id(), launch.attempt(), launch.epoch(), options_.node_id};
  task->launch = launch;
  task->dir = TaskDir(options_.work_dir, launch.job_id(), launch.attempt());
  tasks_[launch.job_id()] = std::move(owned);
  latest_attempt_[launch.job_id()] = launch.attempt();
  spdlog::info("job {} attempt {} epoch {}: launching {} local rank(s) in {}", launch.job_id(), launch.attempt(),
               launch.epoch(), launch.ranks_size(), task->dir);
  auto user = RankUserFor(options_.run_as, launch.team(), options_.agent_is_root);
  Status st = user.status();
  if (st.ok()) task->user = *user;
  // The task directory stays the agent's (task.json is trusted at re-adoption); the rank gets <task dir>/home.
  if (st.ok()) st = MakeDirs(task->dir);
  if (st.ok()) st = MakeDirsOwnedBy(task->dir + "/home", task->user);
  if (st.ok() && task->user) st = CheckAccessibleBy("task directory", task->dir, *task->user, /*writable=*/false);
  if (st.ok()) st = WriteFileAtomic(task->dir + "/config.yaml", launch.trainer_config_yaml());
  if (st.ok()) st = PreLaunchChecks(launch, task->user);
  if (!st.ok()) {
    FailLaunch(task, st);
    return;
  }
  ContinueLaunch(task);
}

void Supervisor::ContinueLaunch(Task* task) {
  OutputLockHolder holder;
  Status st = TakeOutputLock(task, &holder);
  if (!st.ok() && holder.IsOlderEpochOf(task->id.job_id, task->id.epoch)) {
    WaitForOutputLock(task, st);  // a stale attempt of this job: it ends (stopped, or its host's lock released)
    return;
  }
  if (st.ok() && task->phase == TaskPhase::kAwaitingLock) {
    spdlog::info("job {} epoch {}: the output lock is free after {} ms; starting the ranks", task->id.job_id,
                 task->id.epoch, clock_.SteadyMs() - task->lock_wait_since_ms);
    task->message.clear();
    st = PreLaunchChecks(task->launch, task->user);  // time has passed: the port, the free space
  }
  if (st.ok()) st = AcquireTaskResources(task);
  if (st.ok()) st = StartRanks(task, task->launch);
  if (!st.ok()) {
    FailLaunch(task, st);
    return;
  }
  task->phase = NextTaskPhase(task->phase, TaskEvent::kRanksStarted);
  task->state = pb::TASK_RUNNING;
  Persist(*task);
  ReportStatus(*task);
}

void Supervisor::WaitForOutputLock(Task* task, const Status& refusal) {
  const int64_t now = clock_.SteadyMs();
  if (task->phase != TaskPhase::kAwaitingLock) {
    task->phase = NextTaskPhase(task->phase, TaskEvent::kOutputLockBusy);
    task->lock_wait_since_ms = now;
    task->next_lock_log_ms = now;
  }
  const int64_t waited = now - task->lock_wait_since_ms;
  if (waited >= options_.output_lock_wait_ms) {
    FailLaunch(task, FailedPreconditionError(refusal.message() + "; waited " + std::to_string(waited / 1000) +
                                             " s for that stale attempt to release it (--output-lock-wait-ms " +
                                             std::to_string(options_.output_lock_wait_ms) + ")"));
    return;
  }
  task->message = "waiting for the output lock: " + refusal.message();
  if (now >= task->next_lock_log_ms) {
    spdlog::warn("job {} epoch {}: {}; waited {} s of at most {} s (retried every {} ms)", task->id.job_id,
                 task->id.epoch, task->message, waited / 1000, options_.output_lock_wait_ms / 1000,
                 options_.output_lock_retry_ms);
    task->next_lock_log_ms = now + options_.output_lock_log_ms;
  }
  task->next_lock_try_ms = now + options_.output_lock_retry_ms;
}

void Supervisor::FailLaunch(Task* task, const Status& why) {
  // Ranks started before the failure are killed; the task ends when they are reaped.
  bool any_started = false;
  for (auto& r : task->ranks) {
    if (r->rec.pid <= 0) {
      r->exited = true;  // never started
      r->exit.exit_code = 127;
      if (r->reader) r->reader->Close();
    } else {
      SignalGroup(r->rec.pid, SIGKILL);
      any_started = true;
    }
  }
  if (!any_started) {
    FinishWithoutRanks(task, pb::TASK_FAILED, "launch failed: " + why.message());
    return;
  }
  task->state = pb::TASK_FAILED;
  task->message = "launch failed: " + why.message();
  ReportStatus(*task);
  task->phase = NextTaskPhase(task->phase, TaskEvent::kLaunchFailed);  // -> FAILING: the failure is reported
  task->stop_reason = task->message;
  task->kill_at_ms = clock_.SteadyMs();
  Persist(*task);
}

Status Supervisor::StartRanks(Task* task, const pb::LaunchTask& launch) {
  std::vector<pb::RankAssignment> ranks(launch.ranks().begin(), launch.ranks().end());
  std::sort(ranks.begin(), ranks.end(), [](const auto& a, const auto& b) { return a.local_rank() < b.local_rank(); });
  // The environment every rank shares: the allow-listed part of the agent's (never its secrets), HOME, then
  // the job's, then torchrun's contract (which wins).
  std::map<std::string, std::string> env = AllowedAgentEnvironment(environ, options_.rank_env_allow);
  env["HOME"] = task->dir + "/home";
  if (task->user && !task->user->name.empty()) env["USER"] = env["LOGNAME"] = task->user->name;
  for (const auto& [k, v] : launch.env()) env[k] = v;
  env["WORLD_SIZE"] = std::to_string(launch.world_size() != 0 ? launch.world_size() : ranks.size());
  env["LOCAL_WORLD_SIZE"] = std::to_string(ranks.size());
  env["MASTER_ADDR"] = launch.master_addr().empty() ? "127.0.0.1" : launch.master_addr();
  env["MASTER_PORT"] = std::to_string(launch.master_port());
  env["GROUP_RANK"] = std::to_string(launch.node_rank());
  env["ANNEAL_JOB_ID"] = launch.job_id();
  env["ANNEAL_ATTEMPT"] = std::to_string(launch.attempt());
  env["ANNEAL_EPOCH"] = std::to_string(launch.epoch());
  if (!options_.node_address.empty()) env["ANNEAL_NODE_ADDRESS"] = options_.node_address;
  env["ANNEAL_EVENTS_FD"] = std::to_string(kRankEventsFd);
  // The coordinator's checkpoint registry owns retention; the ranks never delete checkpoints themselves.
  env["ANNEAL_CHECKPOINT_RETENTION"] = "coordinator";
  env.erase("CUDA_VISIBLE_DEVICES");
  if (!options_.gpu_indices.empty()) {
    // Every local rank sees the task's GPUs in LOCAL_RANK order and uses cuda:LOCAL_RANK (torchrun's habit).
    std::string devices;
    for (const auto& r : ranks) {
      if (!devices.empty()) devices += ",";
      devices += std::to_string(r.slot() < options_.gpu_indices.size() ? options_.gpu_indices[r.slot()] : r.slot());
    }
    env["CUDA_VISIBLE_DEVICES"] = devices;
  }
  const std::string config_path = task->dir + "/config.yaml";
  const std::vector<std::string> args = RankCommandArgs(launch, config_path);
  for (const auto& a : ranks) {
    auto rank = std::make_unique<Rank>();
    rank->rec.global_rank = a.global_rank();
    rank->rec.local_rank = a.local_rank();
    rank->rec.slot = a.slot();
    const std::string stem = task->dir + "/rank-" + std::to_string(a.global_rank());
    rank->log_path = stem + ".log";
    rank->fifo_path = stem + ".events";
    Rank* r = rank.get();
    task->ranks.push_back(std::move(rank));

    ::unlink(r->fifo_path.c_str());
    if (::mkfifo(r->fifo_path.c_str(), 0600) != 0) {
      return InternalError("mkfifo " + r->fifo_path + ": " + ErrnoText(errno));
    }
    // The agent's read end first (succeeds without writers); the rank gets a read-write descriptor, so the
    // pipe always has a reader and the rank never dies of SIGPIPE while the agent restarts.
    const int read_fd = ::open(r->fifo_path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (read_fd < 0) return InternalError("opening event pipe " + r->fifo_path + ": " + ErrnoText(errno));
    r->reader = std::make_shared<EventReader>(io_);
    r->reader->fifo.assign(read_fd);
    const int child_fd = ::open(r->fifo_path.c_str(), O_RDWR | O_CLOEXEC);
    if (child_fd < 0) return InternalError("opening event pipe " + r->fifo_path + " for the rank: " + ErrnoText(errno));

    SpawnSpec spec;
    spec.program = options_.trainer;
    spec.args = args;
    auto rank_env = env;
    rank_env["RANK"] = std::to_string(a.global_rank());
    rank_env["LOCAL_RANK"] = std::to_string(a.local_rank());
    for (const auto& [k, v] : rank_env) spec.env.push_back(k + "=" + v);
    spec.cwd = task->dir;
    spec.log_path = r->log_path;
    spec.events_fd = child_fd;
    if (task->user) {
      spec.switch_user = true;
      spec.uid = task->user->uid;
      spec.gid = task->user->gid;
      spec.groups = task->user->groups;
    }
    spec.die_with_parent = options_.ranks_die_with_agent;
    if (!task->cgroup.empty()) spec.cgroup_procs = task->cgroup + "/cgroup.procs";
    auto pid = Spawn(spec);
    ::close(child_fd);
    if (!pid.ok()) return pid.status();
    r->rec.pid = *pid;
    auto start = ProcessStartTime(*pid);
    r->rec.start_time = start.ok() ? *start : 0;
    spdlog::info("job {}: rank {} (local {}) started as pid {}", task->id.job_id, a.global_rank(), a.local_rank(),
                 *pid);
    StartReading(task, r);
  }
  return Status::Ok();
}

Status Supervisor::TakeOutputLock(Task* task, OutputLockHolder* holder) {
  const pb::LaunchTask& launch = task->launch;
  const bool hosts_rank0 = std::any_of(launch.ranks().begin(), launch.ranks().end(),
                                       [](const pb::RankAssignment& r) { return r.global_rank() == 0; });
  if (!hosts_rank0 || launch.output_dir().empty() || task->output_lock_fd >= 0) return Status::Ok();
  ASSIGN_OR_RETURN(task->output_lock_fd, LockOutputDir(launch.output_dir(), launch.job_id(), launch.epoch(), holder));
  return Status::Ok();
}

Status Supervisor::AcquireTaskResources(Task* task) {
  const pb::LaunchTask& launch = task->launch;
  if (!options_.cgroup_base.empty()) {
    std::string node = options_.node_id;
    for (char& c : node) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
    }
    const std::string name = "anneal-" + node + "-" + launch.job_id() + "-e" + std::to_string(launch.epoch()) + "-" +
                             std::to_string(::getpid());
    auto cg = CreateTaskCgroup(options_.cgroup_base, name);
    if (cg.ok()) {
      task->cgroup = *cg;
    } else {
      spdlog::warn("job {}: {}; its ranks are tracked by process group only", launch.job_id(), cg.status().message());
    }
  }
  return Status::Ok();
}

void Supervisor::StartReading(Task* task, Rank* rank) {
  std::shared_ptr<EventReader> reader = rank->reader;
  if (!reader || reader->closed) return;
  const std::string job = task->id.job_id;
  const uint64_t epoch = task->id.epoch;
  // Wait for readability, then read here: never async_read_some, whose speculative read can take bytes out of
  // the pipe into a handler that a rank exit (OnRankExit closes the reader) then drops, losing the rank's last
  // events. Bytes stay in the pipe until this handler or DrainEvents reads them.
  reader->fifo.async_wait(
      boost::asio::posix::descriptor::wait_read, [this, reader, job, epoch, rank](const boost::system::error_code& ec) {
        if (reader->closed) return;  // the task ended (or the supervisor is gone): touch nothing else
        auto it = tasks_.find(job);
        if (it == tasks_.end() || it->second->id.epoch != epoch) return;
        Task* t = it->second.get();
        if (ec) {
          reader->Close();
          return;
        }
        while (true) {
          const ssize_t n = ::read(reader->fifo.native_handle(), reader->buffer.data(), reader->buffer.size());
          if (n > 0) {
            HandleEventBytes(t, rank, std::string_view(reader->buffer.data(), static_cast<size_t>(n)));
            continue;
          }
          if (n < 0 && errno == EINTR) continue;
          if (n == 0) {
            // EOF: no writer left (the rank and its children are gone); the exit is handled by Reap.
            reader->Close();
            return;
          }
          break;  // EAGAIN: everything there was read
        }
        StartReading(t, rank);
      });
}

void Supervisor::DrainEvents(Task* task, Rank* rank) {
  if (!rank->reader || rank->reader->closed) return;
  const int fd = rank->reader->fifo.native_handle();
  char buf[8192];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      HandleEventBytes(task, rank, std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;  // EAGAIN (a descendant still holds the pipe) or EOF
  }
  if (std::string rest = rank->reader->lines.TakeRest(); !rest.empty()) {
    HandleEventBytes(task, rank, rest + "\n");
  }
}

void Supervisor::HandleEventBytes(Task* task, Rank* rank, std::string_view bytes) {
  for (std::string& line : rank->reader->lines.Feed(bytes)) {
    auto ev = ParseTrainerEvent(line, task->id);
    if (!ev.ok()) {
      spdlog::warn("rank {}: {}", rank->rec.global_rank, ev.status().message());
      continue;
    }
    if (ev->type == "finished") {
      rank->finished_seen = true;
      rank->finished_status = ev->finished_status;
      rank->finished_message = ev->message;
    }
    if (ev->type == "preempted" || (ev->type == "finished" && ev->finished_status == "preempted")) {
      rank->preempted_seen = true;
    }
    if (ev->report) report_(std::move(*ev->report));
  }
}

}  // namespace anneal::agent
