// The agent's part in "no shared filesystem" (docs/transfers.md): its file server, and launches whose inputs are
// staged first (agent/stager.h).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>

#include "agent/agent.h"
#include "protocol/curve.h"
#include "transfer/server.h"

namespace anneal::agent {

Status Agent::StartTransfers() {
  // Its own CurveZMQ keypair (clients pin it from the coordinator's node record), kept across restarts.
  const std::string dir = config_.work_dir + "/transfer";
  ASSIGN_OR_RETURN(protocol::CurveKeyPair keys, protocol::LoadOrCreateServerKeys(dir));
  // ZeroMQ binds interfaces, not names: an --address that is an IP literal is bound; a hostname (the default) binds
  // every interface and is what other nodes are told to connect to (they resolve it).
  const std::string host = config_.address.empty() ? "127.0.0.1" : config_.address;
  in6_addr ip{};
  const bool literal = ::inet_pton(AF_INET, host.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, host.c_str(), &ip) == 1;
  transfer::ServerOptions options{
      .bind_endpoint = fmt::format("tcp://{}:{}", literal ? host : "*", config_.transfer_port),
      .node_id = config_.node,
      .signer_public_key = "",  // from the registration reply
      .server_keys = std::move(keys),
      .now_ms =
          [] {
            return std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                .count();
          },
      .threads = 2,
      .hash_cache_path = dir + "/hash-cache.json",
      .read_as = {},
  };
  if (::geteuid() == 0) {
    // A root agent reads what it serves as the job team's rank user: a ticket for /etc (a spec can name any
    // path the coordinator's policy allows) reaches no more than that team's ranks could read themselves.
    options.read_as = [run_as = config_.run_as](const std::string& team) -> StatusOr<std::pair<uid_t, gid_t>> {
      ASSIGN_OR_RETURN(std::optional<RankUser> user, RankUserFor(run_as, team, /*agent_is_root=*/true));
      if (!user) return FailedPreconditionError("no rank user");
      return std::make_pair(user->uid, user->gid);
    };
  }
  auto server = transfer::TransferServer::Start(std::move(options));
  if (!server.ok()) return server.status().WithContext("starting the transfer server (--transfer-port)");
  transfer_server_ = std::move(*server);
  const std::string bound = transfer_server_->endpoint();
  transfer_endpoint_ = fmt::format("tcp://{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host,
                                   bound.substr(bound.rfind(':') + 1));
  spdlog::info("serving transfers on {} as {} (key {})", bound, transfer_endpoint_, transfer_server_->public_key());
  return Status::Ok();
}

void Agent::Launch(const pb::LaunchTask& launch) {
  if (launch.stage_size() == 0) {
    supervisor_->Launch(launch);
    return;
  }
  if (launch.epoch() < supervisor_->EpochSeen(launch.job_id()) ||
      (launch.epoch() == supervisor_->EpochSeen(launch.job_id()) && !stager_->Staging(launch.job_id()))) {
    supervisor_->Launch(launch);  // fenced or already started: the Supervisor answers as for any launch
    return;
  }
  stager_->Start(launch, [this, launch](StatusOr<pb::LaunchTask> ready) { StagingDone(launch, std::move(ready)); });
}

void Agent::StagingDone(const pb::LaunchTask& launch, StatusOr<pb::LaunchTask> ready) {
  if (ready.ok() && !shutting_down_) {
    supervisor_->Launch(*ready);
    return;
  }
  pb::TaskStatus status;
  status.set_job_id(launch.job_id());
  status.set_attempt(launch.attempt());
  status.set_epoch(launch.epoch());
  for (const auto& r : launch.ranks()) status.add_global_ranks(r.global_rank());
  const bool cancelled = !ready.ok() && ready.status().code() == StatusCode::kCancelled;
  if (cancelled || shutting_down_) {
    const std::string why = ready.ok() ? "agent shutdown" : ready.status().message();
    status.set_state(why.rfind("preempted", 0) == 0 ? pb::TASK_PREEMPTED : pb::TASK_STOPPED);
    status.set_message("stopped while staging its inputs (no rank ran): " + why);
  } else {
    status.set_state(pb::TASK_FAILED);
    status.set_message(ready.status().ToString());
    spdlog::error("job {} epoch {}: {}", launch.job_id(), launch.epoch(), ready.status().ToString());
  }
  pb::AgentToCoordinator out;
  *out.mutable_task_update()->mutable_status() = std::move(status);
  Report(std::move(out));
}

std::vector<pb::TaskStatus> Agent::AllTasks() const {
  std::vector<pb::TaskStatus> tasks = supervisor_->Tasks();
  for (auto& t : stager_->Tasks()) tasks.push_back(std::move(t));
  return tasks;
}

}  // namespace anneal::agent
