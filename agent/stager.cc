// Stager (agent/stager.h): inputs staged before a task's ranks start, checkpoint replicas.
#include "agent/stager.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "agent/checkpoint_files.h"
#include "jobspec/jobspec.h"
#include "transfer/client.h"

namespace anneal::agent {

namespace fs = std::filesystem;

StatusOr<std::string> RewriteStagedPaths(const std::string& config_yaml,
                                         const std::map<std::string, std::string>& local) {
  ASSIGN_OR_RETURN(jobspec::JobSpec spec, jobspec::ParseJobSpec(config_yaml, "the launch's config"));
  for (const auto& [key, path] : local) {
    if (key == "model.model_name_or_path") {
      spec.model.model_name_or_path = path;
    } else if (key == "model.adapter_name_or_path") {
      spec.model.adapter_name_or_path = path;
    } else if (key == "data.dataset_dir") {
      spec.data.dataset_dir = path;
    } else if (key == "eval.task_dir") {
      spec.eval.task_dir = path;
    } else if (key == "train.resume_from_checkpoint") {
      spec.train.resume_from_checkpoint = path;
    } else {
      return InvalidArgumentError(fmt::format("staged input '{}' names no path of a job spec", key));
    }
  }
  return jobspec::ToYaml(spec);
}

std::vector<std::string> RankCommandArgs(const pb::LaunchTask& launch, const std::string& config_path) {
  // anneal-train's subcommand per job kind: train, eval, export, clean (docs/trainer-contract.md).
  const char* command = launch.kind() == pb::JOB_EVAL     ? "eval"
                        : launch.kind() == pb::JOB_EXPORT ? "export"
                        : launch.kind() == pb::JOB_CLEAN  ? "clean"
                                                          : "train";
  std::vector<std::string> args = {command, "--config", config_path};
  if (!launch.resume_checkpoint().empty()) {
    args.push_back("--set");
    args.push_back("resume_from_checkpoint=" + launch.resume_checkpoint());
  } else if (launch.attempt() > 1 && launch.kind() != pb::JOB_EVAL && launch.kind() != pb::JOB_EXPORT &&
             launch.kind() != pb::JOB_CLEAN) {
    args.push_back("--set");
    args.push_back("overwrite_output_dir=true");
  }
  return args;
}

namespace {

transfer::FetchOptions FetchWith(const std::atomic<bool>& cancel, const StagerOptions& options) {
  transfer::FetchOptions fetch;
  fetch.cancel = &cancel;
  fetch.timeout_ms = static_cast<int>(options.request_timeout_ms);
  return fetch;
}

transfer::Source SourceOf(const pb::StageInput& in) {
  return {.endpoint = in.source_endpoint(), .server_public_key = in.source_public_key(), .ticket = in.ticket()};
}

std::string Describe(const pb::StageInput& in) {
  return fmt::format("{} ({} on node {})", in.key(), in.source_path(), in.source_node());
}

// "N bytes received, M resumed from .part files, K re-requests, J refetched": how the copy went (the fault tests
// read it; docs/reliability.md).
std::string DescribeStats(const transfer::FetchStats& stats) {
  return fmt::format(
      "{} bytes received, {} resumed from .part files, {} re-requests, {} refetched after a checksum "
      "mismatch, {} replaced after a change in the store",
      stats.bytes_received, stats.resumed_bytes, stats.re_requests, stats.refetched_files, stats.replaced_blobs);
}

// One input into the store (and at dest_path when it names one); the local path the ranks read.
StatusOr<std::string> StageOne(const pb::StageInput& in, transfer::BlobStore& store,
                               const transfer::FetchOptions& fetch) {
  if (in.source_endpoint().empty()) {
    return UnavailableError(
        fmt::format("node '{}' is unknown to the coordinator or serves no transfers", in.source_node()));
  }
  const auto begin = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(transfer::Manifest manifest, transfer::FetchManifest(SourceOf(in), "", fetch));
  const std::string dest = in.dest_path().empty() ? store.TreePath(manifest.Id()) : in.dest_path();
  transfer::FetchStats stats;
  transfer::FetchOptions counted = fetch;
  counted.stats = &stats;
  RETURN_IF_ERROR(store.Fetch(SourceOf(in), manifest, dest, counted));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  spdlog::info("staged {}: {} file(s), {} bytes in {:.1f} s -> {} ({})", Describe(in), manifest.files.size(),
               manifest.total_bytes(), seconds, dest, DescribeStats(stats));
  return dest;
}

// The output directory as the Supervisor makes it (owned by the rank user), and, after a copy landed in it, the
// copy's directories too: the trainer renames and deletes checkpoints; the files stay read-only links.
Status PrepareOutputDir(const std::string& output_dir, const std::string& team, const StagerOptions& options) {
  ASSIGN_OR_RETURN(std::optional<RankUser> user, RankUserFor(options.run_as, team, options.agent_is_root));
  return MakeDirsOwnedBy(output_dir, user);
}

Status OwnCopyDirs(const std::string& dest, const std::string& team, const StagerOptions& options) {
  ASSIGN_OR_RETURN(std::optional<RankUser> user, RankUserFor(options.run_as, team, options.agent_is_root));
  if (!user) return Status::Ok();
  std::error_code ec;
  std::vector<std::string> dirs = {dest};
  for (fs::recursive_directory_iterator it(dest, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path().string());
  }
  for (const auto& d : dirs) {
    if (::lchown(d.c_str(), user->uid, user->gid) != 0) {
      return UnavailableError(fmt::format("chown {} to {}: {}", d, user->Describe(), std::strerror(errno)));
    }
  }
  return Status::Ok();
}

StatusOr<pb::LaunchTask> StageLaunch(pb::LaunchTask launch, const StagerOptions& options,
                                     const std::atomic<bool>& cancel) {
  transfer::BlobStore store(options.store_dir);
  const transfer::FetchOptions fetch = FetchWith(cancel, options);
  std::map<std::string, std::string> local;
  for (const pb::StageInput& in : launch.stage()) {
    if (cancel.load()) return CancelledError("staging cancelled");
    const bool checkpoint = in.key() == "checkpoint";
    if (checkpoint) {  // lands inside the job's output directory, at the checkpoint's own path
      RETURN_IF_ERROR(
          ResolvePathInsideOutputDir(in.dest_path(), launch.output_dir(), "stage a checkpoint at").status());
      RETURN_IF_ERROR(PrepareOutputDir(launch.output_dir(), launch.team(), options));
    }
    if (in.source_node() == options.node_id) {  // this node holds it: used in place
      if (!checkpoint) local[in.key()] = in.source_path();
      continue;
    }
    auto dest = StageOne(in, store, fetch);
    if (!dest.ok()) return dest.status().WithContext("staging " + Describe(in));
    if (checkpoint) RETURN_IF_ERROR(OwnCopyDirs(*dest, launch.team(), options));
    if (!checkpoint) local[in.key()] = *dest;
    if (in.key() == "model.model_name_or_path") {  // the adapter names the user's path (trainer/export/peft.cc)
      (*launch.mutable_env())["ANNEAL_BASE_MODEL_SOURCE"] = in.source_path();
      (*launch.mutable_env())["ANNEAL_BASE_MODEL_STAGED"] = *dest;
    }
  }
  if (!local.empty()) {
    ASSIGN_OR_RETURN(std::string yaml, RewriteStagedPaths(launch.trainer_config_yaml(), local));
    launch.set_trainer_config_yaml(std::move(yaml));
  }
  launch.clear_stage();
  if (options.store_max_bytes > 0) {
    std::set<std::string> pinned;  // this launch's trees stay; others may be pruned
    for (const auto& [key, path] : local) pinned.insert(fs::path(path).filename().string());
    if (Status st = store.Prune(options.store_max_bytes, pinned); !st.ok()) {
      spdlog::warn("artifact store {}: {}", options.store_dir, st.ToString());
    }
  }
  return launch;
}

// The source's files must be the ones the trainer committed (path, size, sha256): a copy of anything else is
// not this checkpoint.
Status CheckCommittedFiles(const transfer::Manifest& manifest, const pb::ReplicateCheckpoint& order) {
  std::map<std::string, const transfer::FileEntry*> by_path;
  for (const auto& f : manifest.files) by_path[f.path] = &f;
  for (const auto& want : order.files()) {
    auto it = by_path.find(want.path());
    if (it == by_path.end() || it->second->size != want.size_bytes() || it->second->sha256 != want.sha256()) {
      return DataLossError(
          fmt::format("file {} of checkpoint {} on node {} is not the committed one (missing, or "
                      "another size or sha256)",
                      want.path(), order.source().source_path(), order.source().source_node()));
    }
  }
  return Status::Ok();
}

Status ReplicateOnce(const pb::ReplicateCheckpoint& order, const StagerOptions& options,
                     const std::atomic<bool>& cancel) {
  const pb::StageInput& in = order.source();
  ASSIGN_OR_RETURN(std::string dest,
                   ResolvePathInsideOutputDir(in.dest_path(), order.output_dir(), "copy a checkpoint to"));
  RETURN_IF_ERROR(PrepareOutputDir(order.output_dir(), order.team(), options));
  transfer::BlobStore store(options.store_dir);
  const transfer::FetchOptions fetch = FetchWith(cancel, options);
  ASSIGN_OR_RETURN(transfer::Manifest manifest, transfer::FetchManifest(SourceOf(in), "", fetch));
  RETURN_IF_ERROR(CheckCommittedFiles(manifest, order));
  RETURN_IF_ERROR(store.Fetch(SourceOf(in), manifest, dest, fetch));
  RETURN_IF_ERROR(OwnCopyDirs(dest, order.team(), options));
  spdlog::info("replicated checkpoint {} of job {} from node {} ({} bytes)", dest, order.job_id(), in.source_node(),
               manifest.total_bytes());
  return Status::Ok();
}

}  // namespace

Stager::Stager(boost::asio::io_context& io, StagerOptions options) : io_(io), options_(std::move(options)) {}

Stager::~Stager() {
  stopping_->store(true);
  for (auto& [job, work] : staging_) work->cancel.store(true);
  for (auto& work : superseded_) work->cancel.store(true);
  for (auto& [job, work] : staging_) work->thread.join();
  for (auto& work : superseded_) work->thread.join();
  for (auto& work : finished_) work->thread.join();
  for (auto& [id, t] : replica_threads_) t.join();
}

bool Stager::Start(const pb::LaunchTask& launch, LaunchDone done) {
  Reap();
  for (const auto& [job, epoch] : ended_) {
    if (job == launch.job_id() && launch.epoch() <= epoch) {
      spdlog::info("job {} epoch {}: launch ignored: the staging of epoch {} already ended and was reported",
                   launch.job_id(), launch.epoch(), epoch);
      return false;
    }
  }
  if (auto it = staging_.find(launch.job_id()); it != staging_.end()) {
    if (it->second->launch.epoch() >= launch.epoch()) return false;  // a resend, or older than what stages
    Cancel(launch.job_id(), it->second->launch.epoch(), "a newer attempt was launched");
    superseded_.push_back(it->second);  // its thread must still be joined (a joinable thread must never be dropped)
  }
  auto work = std::make_shared<Work>();
  work->launch = launch;
  staging_[launch.job_id()] = work;
  spdlog::info("job {} epoch {}: staging {} input(s) before its ranks start", launch.job_id(), launch.epoch(),
               launch.stage_size());
  work->thread = std::thread([this, work, done = std::move(done), stopping = stopping_] {
    StatusOr<pb::LaunchTask> result = StageLaunch(work->launch, options_, work->cancel);
    if (work->cancel.load()) result = CancelledError(work->cancel_reason);
    boost::asio::post(io_, [this, work, done, stopping, result = std::move(result)]() mutable {
      if (stopping->load()) return;
      auto it = staging_.find(work->launch.job_id());
      if (it != staging_.end() && it->second == work) {
        staging_.erase(it);
      } else {
        superseded_.erase(std::remove(superseded_.begin(), superseded_.end(), work), superseded_.end());
      }
      finished_.push_back(work);  // its thread posted this as its last act: joined without waiting
      RememberEnded(work->launch.job_id(), work->launch.epoch());
      done(std::move(result));
    });
  });
  return true;
}

void Stager::Cancel(const std::string& job_id, uint64_t epoch, const std::string& reason) {
  auto it = staging_.find(job_id);
  if (it == staging_.end() || it->second->launch.epoch() > epoch) return;
  it->second->cancel_reason = reason;  // read by the worker only after it saw `cancel`
  it->second->cancel.store(true);
}

void Stager::CancelAll(const std::string& reason) {
  for (auto& [job, work] : staging_) Cancel(job, work->launch.epoch(), reason);
}

void Stager::Replicate(const pb::ReplicateCheckpoint& order, ReplicaDone done) {
  const uint64_t id = next_replica_++;
  replica_threads_[id] = std::thread([this, id, order, done = std::move(done), stopping = stopping_] {
    Status st = ReplicateOnce(order, options_, *stopping);
    pb::CheckpointReplicated answer;
    answer.set_job_id(order.job_id());
    answer.set_step(order.step());
    answer.set_ok(st.ok());
    if (!st.ok()) answer.set_error(st.ToString());
    boost::asio::post(io_, [this, id, done, stopping, answer = std::move(answer)]() mutable {
      if (stopping->load()) return;
      replica_threads_[id].join();  // it posted this as its last act
      replica_threads_.erase(id);
      done(std::move(answer));
    });
  });
}

std::vector<pb::TaskStatus> Stager::Tasks() const {
  std::vector<pb::TaskStatus> out;
  for (const auto& [job, work] : staging_) {
    pb::TaskStatus s;
    s.set_job_id(job);
    s.set_attempt(work->launch.attempt());
    s.set_epoch(work->launch.epoch());
    s.set_state(pb::TASK_LAUNCHING);
    s.set_message("staging inputs");
    for (const auto& r : work->launch.ranks()) s.add_global_ranks(r.global_rank());
    out.push_back(std::move(s));
  }
  return out;
}

void Stager::RememberEnded(const std::string& job_id, uint64_t epoch) {
  for (auto it = ended_.begin(); it != ended_.end(); ++it) {
    if (it->first != job_id) continue;
    epoch = std::max(epoch, it->second);
    ended_.erase(it);
    break;
  }
  ended_.emplace_back(job_id, epoch);
  if (ended_.size() > kEndedRemembered) ended_.pop_front();
}

void Stager::Reap() {
  for (auto& work : finished_) work->thread.join();
  finished_.clear();
}

}  // namespace anneal::agent
