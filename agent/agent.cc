#include "agent/agent.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>

#include "agent/task_cgroup.h"
#include "common/fsutil.h"
#include "common/secret.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "protocol/curve.h"
#include "protocol/framing.h"
#include "transfer/server.h"

namespace anneal::agent {

using protocol::MessageKind;

Agent::Agent(AgentConfig config, const Clock& clock, Nvml& nvml, AgentTiming timing)
    : config_(std::move(config)), clock_(clock), nvml_(nvml), timing_(timing), heartbeat_ms_(config_.heartbeat_ms) {}

Agent::~Agent() {
  CloseSocket();
  if (lock_fd_ >= 0) ::close(lock_fd_);
  if (shutdown_fd_) {
    boost::system::error_code ec;
    shutdown_fd_->close(ec);
  }
}

Status Agent::LockWorkDir() {
  // One agent per work directory: two would re-adopt the same ranks and interleave the same spool. The lock
  // descriptor is close-on-exec, so ranks never inherit it and a restarted agent can lock while they run.
  const std::string path = config_.work_dir + "/agent.lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return InternalError("opening " + path + ": " + ErrnoText(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const std::string holder = ReadFile(path).ok() ? *ReadFile(path) : std::string("?");
    return FailedPreconditionError("work directory " + config_.work_dir + " is in use by another anneal-agent (pid " +
                                   holder.substr(0, holder.find('\n')) + ")");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) < 0) {
    spdlog::warn("cannot write the pid into {}: {}", path, ErrnoText(errno));
  }
  return Status::Ok();
}

Status Agent::LoadIdentity() {
  const std::string path = config_.work_dir + "/node-credential";
  if (auto text = ReadFile(path); text.ok()) {
    node_credential_ = TrimSecret(*text);
    RETURN_IF_ERROR(ParseNodeCredential(node_credential_).status().WithContext(path));
  }
  if (!config_.join_token_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(config_.join_token_file));
    join_token_ = TrimSecret(text);
    RETURN_IF_ERROR(ParseJoinToken(join_token_).status().WithContext(config_.join_token_file));
  }
  if (node_credential_.empty() && join_token_.empty()) {
    return FailedPreconditionError("node " + config_.node + " has no node credential (" + path +
                                   ") and no join token: create one with `anneal node join-token create` on an "
                                   "admin machine, put it in a file (chmod 600) and pass --join-token-file");
  }
  if (node_credential_.empty()) {
    // A new node proposes its own credential with the join token, stored before it is ever sent: a join retried
    // after a lost reply (a new socket) presents the same one, so the node id is never bound to a lost secret.
    node_credential_ = FormatNodeCredential(RandomHex(kSecretBytes));
    RETURN_IF_ERROR(WriteFileAtomic(path, node_credential_ + "\n", 0600).WithContext("storing the node credential"));
  }
  return Status::Ok();
}

void Agent::Refused(const Status& why) {
  spdlog::critical("the coordinator refused node {}: {}; stopping", config_.node, why.message());
  fatal_ = why;
  RequestShutdown();
}

Status Agent::Init() {
  RETURN_IF_ERROR(MakeDirs(config_.work_dir + "/jobs").WithContext("agent work directory"));
  RETURN_IF_ERROR(LockWorkDir());
  RETURN_IF_ERROR(LoadIdentity());
  if (!config_.metrics_bind.empty()) {  // GET /metrics (agent/metrics_service.h); a bad setting stops the start
    ASSIGN_OR_RETURN(metrics_, AgentMetricsService::Start(config_));
  }
  ASSIGN_OR_RETURN(spool_, Spool::Open(config_.work_dir + "/spool", config_.spool_max_bytes));
  SupervisorOptions opts;
  opts.work_dir = config_.work_dir;
  opts.node_id = config_.node;
  opts.node_address = config_.address;
  opts.trainer = config_.trainer;
  for (const auto& g : nvml_.Query()) opts.gpu_indices.push_back(g.index());
  opts.slots = config_.slots != 0 ? config_.slots : static_cast<uint32_t>(opts.gpu_indices.size());
  opts.log_max_bytes = config_.log_max_bytes;
  opts.min_free_bytes = config_.min_free_bytes;
  opts.log_retention_ms = static_cast<int64_t>(config_.log_retention_hours) * 3600 * 1000;
  opts.fail_grace_ms = config_.shutdown_grace_ms;
  opts.output_lock_wait_ms = static_cast<int64_t>(config_.output_lock_wait_ms);
  opts.reap_orphans = ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  // Ranks unprivileged (docs/agent.md, "Ranks run unprivileged").
  opts.run_as = config_.run_as;
  opts.rank_env_allow = config_.rank_env_allow;
  // Re-adoption needs ranks that outlive the agent.
  opts.ranks_die_with_agent = !(config_.keep_tasks_on_exit || config_.ranks_survive_agent);
  if (auto base = TaskCgroupBase(); base.ok()) {
    opts.cgroup_base = *base;
  } else {
    spdlog::warn("no task cgroups ({}): ranks are tracked and killed by process group only", base.status().message());
  }
  if (opts.agent_is_root) {
    for (const auto& [team, user] : config_.run_as.teams) {
      if (auto u = ResolveRunAs(user); !u.ok()) spdlog::warn("run_as for team {}: {}", team, u.status().message());
    }
    auto fallback = ResolveRunAs(config_.run_as.default_user);
    spdlog::info("running as root: ranks run as {} unless run_as maps their team",
                 fallback.ok() ? fallback->Describe() : fallback.status().message());
  }
  supervisor_ =
      std::make_unique<Supervisor>(io_, clock_, opts, [this](pb::AgentToCoordinator m) { Report(std::move(m)); });
  const auto adopted = supervisor_->Recover();
  spdlog::info(
      "anneal-agent {} node {}: {} slot(s), {} GPU(s), work dir {}, {} task(s) re-adopted, {} report(s) "
      "spooled (next seq {})",
      Version(), config_.node, opts.slots, opts.gpu_indices.size(), config_.work_dir, adopted.size(),
      spool_->Pending().size(), spool_->next_seq());
  if (opts.slots == 0) spdlog::warn("this node has no GPUs and no --slots: it cannot run any rank");
  RETURN_IF_ERROR(StartTransfers());
  StagerOptions staging;
  staging.node_id = config_.node;
  staging.store_dir = config_.work_dir + "/artifacts";
  staging.store_max_bytes = config_.artifact_cache_max_bytes;
  staging.request_timeout_ms = config_.transfer_timeout_ms;
  staging.run_as = config_.run_as;
  staging.agent_is_root = opts.agent_is_root;
  stager_ = std::make_unique<Stager>(io_, std::move(staging));
  OpenSocket();
  return Status::Ok();
}

void Agent::OpenSocket() {
  CloseSocket();
  ++socket_generation_;
  socket_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 1000);
  socket_->set(zmq::sockopt::sndhwm, 100000);  // a backlog after an outage; FlushPending handles a full queue
  socket_->set(zmq::sockopt::reconnect_ivl, timing_.zmq_reconnect_ivl_ms);
  socket_->set(zmq::sockopt::reconnect_ivl_max, timing_.zmq_reconnect_ivl_max_ms);
  socket_->set(zmq::sockopt::connect_timeout, timing_.zmq_connect_timeout_ms);
  socket_->set(zmq::sockopt::heartbeat_ivl, 1000);
  socket_->set(zmq::sockopt::heartbeat_timeout, 5000);
  // ---- transport: CurveZMQ with the pinned coordinator key (protocol/curve.h), frame limit
  socket_->set(zmq::sockopt::maxmsgsize, config_.max_message_bytes);
  bool secured = true;
  if (!config_.insecure_plaintext) {
    // The key was checked at start (config.cc); should it still fail, never fall back to plaintext.
    if (Status st = protocol::ConfigureCurveClient(*socket_, config_.server_key); !st.ok()) {
      spdlog::critical("coordinator channel: {}; not connecting", st.ToString());
      secured = false;
    }
  }
  // No fixed routing id: a ROUTER without ZMQ_ROUTER_HANDOVER rejects a reconnect that reuses a live id. The
  // coordinator learns this node's current id from each message it receives (RegisterRequest names the node).
  const std::string monitor_endpoint = "inproc://anneal-agent-monitor-" + std::to_string(socket_generation_);
  const int events = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (zmq_socket_monitor(socket_->handle(), monitor_endpoint.c_str(), events) == 0) {
    monitor_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(monitor_endpoint);
  }
  try {
    if (secured) socket_->connect(config_.coordinator);
  } catch (const zmq::error_t& e) {
    spdlog::error("cannot connect to coordinator '{}': {}", config_.coordinator, e.what());
  }
  socket_fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, socket_->get(zmq::sockopt::fd));
  WatchSocket();
}

void Agent::CloseSocket() {
  if (socket_fd_) {
    boost::system::error_code ec;
    socket_fd_->cancel(ec);
    socket_fd_->release();  // ZeroMQ owns the descriptor
    socket_fd_.reset();
  }
  if (monitor_ && socket_) zmq_socket_monitor(socket_->handle(), nullptr, 0);
  monitor_.reset();
  socket_.reset();
  Connection(ConnectionEvent::kSocketOpened);
}

void Agent::WatchSocket() {
  const uint64_t generation = socket_generation_;
  socket_fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                         [this, generation](const boost::system::error_code& ec) {
                           if (ec || generation != socket_generation_ || !socket_) return;
                           DrainSocket();
                           if (generation == socket_generation_ && socket_fd_) WatchSocket();
                         });
}

void Agent::DrainSocket() {
  // A signal (SIGCHLD from a finishing rank, SIGTERM) can interrupt ZeroMQ calls with EINTR, which cppzmq throws:
  // nothing was consumed then, so drain again (ZeroMQ's descriptor only signals new readiness, so leaving
  // messages queued could stall the channel). Other errors are reported and the next readiness retries.
  for (int attempt = 0; attempt < 100; ++attempt) {
    try {
      DrainSocketOnce();
      return;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        spdlog::warn("coordinator channel: {}", e.what());
        return;
      }
    }
  }
}

void Agent::DrainSocketOnce() {
  DrainMonitor();
  while (socket_ && (socket_->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
    auto frames = protocol::Receive(*socket_, /*routed=*/false);
    if (!frames.ok()) {
      spdlog::warn("coordinator channel: {}", frames.status().ToString());
      continue;
    }
    pb::CoordinatorToAgent msg;
    if (Status st = protocol::Parse(*frames, MessageKind::kCoordinatorToAgent, &msg); !st.ok()) {
      spdlog::warn("coordinator channel: dropping a message: {}", st.ToString());
      continue;
    }
    const uint64_t generation = socket_generation_;
    Handle(msg);
    if (generation != socket_generation_) return;  // Handle reopened the socket
  }
}

void Agent::DrainMonitor() {
  while (monitor_) {
    zmq::message_t event;
    if (!monitor_->recv(event, zmq::recv_flags::dontwait)) return;
    zmq::message_t address;
    if (event.more()) (void)monitor_->recv(address, zmq::recv_flags::dontwait);
    if (event.size() < 2) continue;
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof(id));
    if (id & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
      WarnHandshakeFailed();
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      if (Registered()) {
        spdlog::warn("coordinator {} disconnected; re-registering when it is back", config_.coordinator);
      }
      Connection(ConnectionEvent::kDisconnected);
      register_backoff_ms_ = 0;
      next_register_ms_ = clock_.SteadyMs() + timing_.register_backoff_max_ms;  // until CONNECTED
    } else if (id == ZMQ_EVENT_CONNECTED && connection_ == ConnectionState::kUnregistered) {
      // (A Register sent before the connection was up is still queued and goes out now: no second one.)
      register_backoff_ms_ = 0;
      register_attempts_ = 0;
      next_register_ms_ = clock_.SteadyMs();  // register right away
    }
  }
}

void Agent::WarnHandshakeFailed() {
  ++failed_handshakes_;
  const int64_t now = clock_.SteadyMs();
  if (last_handshake_warning_ms_ >= 0 && now - last_handshake_warning_ms_ < 30000) return;
  last_handshake_warning_ms_ = now;
  if (config_.insecure_plaintext) {
    spdlog::error(
        "coordinator {}: the plaintext handshake failed ({} time(s)): the coordinator probably requires "
        "CurveZMQ; pass its public key (--server-key-file <state dir>/curve.pub) instead of "
        "--insecure-plaintext; retrying",
        config_.coordinator, failed_handshakes_);
  } else {
    spdlog::error(
        "coordinator {}: the CurveZMQ handshake failed ({} time(s)): the server key {}{} is probably not "
        "this coordinator's (compare its <state dir>/curve.pub), or it runs --insecure-plaintext; retrying",
        config_.coordinator, failed_handshakes_, config_.server_key,
        config_.server_key_file.empty() ? "" : " (from " + config_.server_key_file + ")");
  }
}

bool Agent::Send(const pb::AgentToCoordinator& msg) {
  if (!socket_) return false;
  if (Status st = protocol::Send(*socket_, MessageKind::kAgentToCoordinator, msg); !st.ok()) {
    spdlog::debug("send to coordinator: {}", st.ToString());
    return false;
  }
  return true;
}

void Agent::Report(pb::AgentToCoordinator msg) {
  if (metrics_) metrics_->ObserveReport(msg, clock_.SteadyMs());
  auto seq = spool_->Append(&msg);
  if (!seq.ok()) {
    // A full spool drops metric batches and has warned already (agent/spool.h).
    if (seq.status().code() != StatusCode::kResourceExhausted) {
      spdlog::error("report not spooled: {}", seq.status().ToString());
    }
    return;
  }
  FlushPending();
}

void Agent::FlushPending() {
  if (!Registered()) return;
  const auto& pending = spool_->Pending();
  if (pending.empty()) return;
  // Pending seqs are contiguous, so the first unsent one is found by arithmetic. Sending stops at the first
  // refusal (queue full): a later seq must never overtake an earlier one, or the coordinator would see a gap.
  const uint64_t front = ReportSeq(pending.front());
  size_t i = sent_upto_ >= front ? static_cast<size_t>(sent_upto_ - front + 1) : 0;
  for (; i < pending.size(); ++i) {
    if (!Send(pending[i])) return;
    sent_upto_ = ReportSeq(pending[i]);
  }
}

void Agent::SendRegister() {
  pb::AgentToCoordinator msg;
  pb::RegisterRequest* r = msg.mutable_register_();
  r->set_node_id(config_.node);
  *r->mutable_inventory() = BuildInventory(config_, nvml_);
  r->mutable_inventory()->set_transfer_endpoint(transfer_endpoint_);
  r->mutable_inventory()->set_transfer_public_key(transfer_server_->public_key());
  r->set_agent_version(Version());
  r->set_node_credential(node_credential_);
  r->set_join_token(join_token_);  // used only when the coordinator does not know this node
  r->set_spool_acked_seq(spool_->last_acked());
  for (auto& t : AllTasks()) *r->add_running_tasks() = std::move(t);
  spdlog::info("registering with coordinator {} as node {} (attempt {})", config_.coordinator, config_.node,
               register_attempts_ + 1);
  Connection(Send(msg) ? ConnectionEvent::kRegisterSent : ConnectionEvent::kRegisterNotSent);
}

void Agent::SendHeartbeat() {
  pb::AgentToCoordinator msg;
  pb::Heartbeat* h = msg.mutable_heartbeat();
  h->set_node_id(config_.node);
  h->set_session(session_);
  for (auto& t : AllTasks()) *h->add_tasks() = std::move(t);
  for (auto& g : nvml_.Query()) *h->add_gpus() = std::move(g);
  Send(msg);
}

void Agent::ResendPending() {
  if (!spool_->Pending().empty()) {
    spdlog::info("sending {} unacknowledged report(s) from seq {}", spool_->Pending().size(),
                 ReportSeq(spool_->Pending().front()));
  }
  sent_upto_ = 0;  // from the oldest unacknowledged report, in order; each keeps its seq
  last_ack_progress_ms_ = clock_.SteadyMs();
  FlushPending();
}

void Agent::Handle(const pb::CoordinatorToAgent& msg) {
  switch (msg.body_case()) {
    case pb::CoordinatorToAgent::kRegisterReply: {
      const auto& reply = msg.register_reply();
      if (!reply.accepted() && Registered()) {
        // The answer to an earlier, duplicate attempt: this registration was accepted already.
        spdlog::warn("ignoring a refusal of an earlier registration attempt: {}", reply.error().message());
        return;
      }
      if (!reply.accepted()) {
        const auto code = reply.error().code() == pb::OK ? StatusCode::kPermissionDenied
                                                         : static_cast<StatusCode>(reply.error().code());
        if (!shutting_down_) Refused(Status(code, reply.error().message()));
        return;
      }
      if (!reply.node_credential().empty()) {
        // The coordinator admitted this node: the credential is shown once, so it must be on disk before use.
        const std::string path = config_.work_dir + "/node-credential";
        if (Status st = WriteFileAtomic(path, reply.node_credential() + "\n", 0600); !st.ok()) {
          Refused(st.WithContext("storing the node credential"));
          return;
        }
        node_credential_ = reply.node_credential();
        spdlog::info("joined the cluster as node {}; node credential stored in {}", config_.node, path);
      }
      const bool was_registered = Registered();
      Connection(ConnectionEvent::kRegisterAccepted);
      session_ = reply.session();
      register_attempts_ = 0;
      register_backoff_ms_ = 0;
      if (reply.heartbeat_interval_ms() != 0) heartbeat_ms_ = reply.heartbeat_interval_ms();
      transfer_server_->SetSignerPublicKey(reply.transfer_signer_key());
      if (Status st = spool_->AdoptCoordinatorWatermark(reply.last_acked_seq()); !st.ok()) {
        spdlog::error("spool: {}", st.ToString());
      }
      if (!was_registered) {
        spdlog::info("registered with coordinator (session {}, coordinator has seq <= {}, heartbeat {} ms)", session_,
                     reply.last_acked_seq(), heartbeat_ms_);
      }
      ResendPending();
      SendHeartbeat();
      next_heartbeat_ms_ = clock_.SteadyMs() + heartbeat_ms_;
      return;
    }
    case pb::CoordinatorToAgent::kLaunch:
      if (shutting_down_) {
        spdlog::warn("launch of job {} ignored: the agent is shutting down", msg.launch().job_id());
        return;
      }
      Launch(msg.launch());
      return;
    case pb::CoordinatorToAgent::kStop:
      stager_->Cancel(msg.stop().job_id(), msg.stop().epoch(), "stopped: " + msg.stop().reason());
      supervisor_->Stop(msg.stop());
      return;
    case pb::CoordinatorToAgent::kPreempt:
      stager_->Cancel(msg.preempt().job_id(), msg.preempt().epoch(), "preempted: " + msg.preempt().reason());
      supervisor_->Preempt(msg.preempt());
      return;
    case pb::CoordinatorToAgent::kReplicateCheckpoint:
      stager_->Replicate(msg.replicate_checkpoint(), [this](pb::CheckpointReplicated done) {
        pb::AgentToCoordinator out;
        *out.mutable_checkpoint_replicated() = std::move(done);
        Report(std::move(out));
      });
      return;
    case pb::CoordinatorToAgent::kAck:
      if (msg.ack().seq() > spool_->last_acked()) last_ack_progress_ms_ = clock_.SteadyMs();
      if (Status st = spool_->Ack(msg.ack().seq()); !st.ok()) spdlog::error("spool: {}", st.ToString());
      return;
    case pb::CoordinatorToAgent::kDeleteCheckpoint: {
      pb::AgentToCoordinator out;
      *out.mutable_checkpoint_deleted() = supervisor_->DeleteCheckpoint(msg.delete_checkpoint());
      Report(std::move(out));
      return;
    }
    case pb::CoordinatorToAgent::kFetchLogs: {
      pb::AgentToCoordinator out;
      *out.mutable_log_chunk() = supervisor_->FetchLogs(msg.fetch_logs());
      Send(out);
      return;
    }
    case pb::CoordinatorToAgent::kError:
      if (Registered()) {
        // The coordinator does not know this session (it restarted, or declared the node down): register now.
        spdlog::warn("coordinator refused a message: {}; registering again", msg.error().message());
        Connection(ConnectionEvent::kSessionRefused);
        register_backoff_ms_ = 0;
        next_register_ms_ = clock_.SteadyMs();
      } else {
        // Not registered (yet): a refused registration, or stale messages from before a reconnect. The
        // registration retry keeps its backoff, so a coordinator that refuses us is not flooded.
        spdlog::warn("coordinator refused a message: {}", msg.error().message());
      }
      return;
    default:
      spdlog::warn("coordinator channel: empty or unknown message body {}", static_cast<int>(msg.body_case()));
  }
}

void Agent::OnTick() {
  const int64_t now = clock_.SteadyMs();
  DrainSocket();
  supervisor_->Tick();
  if (metrics_ && metrics_->PublishDue(now)) metrics_->Publish(supervisor_->Tasks(), now);
  if (!Registered() && now >= next_register_ms_) {
    // A fresh socket after a failed attempt drops stale queued messages and restarts ZeroMQ's reconnects.
    if (register_attempts_ > 0) OpenSocket();
    SendRegister();
    ++register_attempts_;
    register_backoff_ms_ = register_backoff_ms_ == 0
                               ? timing_.register_backoff_min_ms
                               : std::min(register_backoff_ms_ * 2, timing_.register_backoff_max_ms);
    next_register_ms_ = now + register_backoff_ms_;
  }
  if (Registered()) {
    FlushPending();
    if (now >= next_heartbeat_ms_) {
      SendHeartbeat();
      next_heartbeat_ms_ = now + heartbeat_ms_;
    }
    if (!spool_->Pending().empty() && now - last_ack_progress_ms_ >= timing_.resend_after_ms) ResendPending();
  }
  if (shutting_down_ && supervisor_->Idle() && stager_->Idle()) {
    if (shutdown_deadline_ms_ == 0) shutdown_deadline_ms_ = now + (Registered() ? 2000 : 0);
    if (spool_->Pending().empty() || now >= shutdown_deadline_ms_) {
      if (!spool_->Pending().empty()) {
        spdlog::warn("leaving {} unacknowledged report(s) in the spool for the next start", spool_->Pending().size());
      }
      done_ = true;
      io_.stop();
    }
  }
}

void Agent::ScheduleTick() {
  tick_timer_.expires_after(std::chrono::milliseconds(timing_.tick_ms));
  tick_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    OnTick();
    if (!done_) ScheduleTick();
  });
}

void Agent::WatchShutdownFd() {
  if (ShutdownFd() < 0) return;
  shutdown_fd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, ::dup(ShutdownFd()));
  shutdown_fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                           [this](const boost::system::error_code& ec) {
                             if (!ec) RequestShutdown();
                           });
}

void Agent::WatchSigchld() {
  sigchld_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    supervisor_->ReapNow();
    WatchSigchld();
  });
}

void Agent::RequestShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  stager_->CancelAll("agent shutdown");
  if (config_.keep_tasks_on_exit) {
    spdlog::info("shutting down; --keep-tasks-on-exit: leaving {} task(s) running for the next agent",
                 supervisor_->Tasks().size());
    supervisor_->Detach();
  } else {
    spdlog::info("shutting down: stopping {} task(s) (SIGKILL after {} ms)", supervisor_->Tasks().size(),
                 config_.shutdown_grace_ms);
    supervisor_->StopAll(config_.shutdown_grace_ms, "agent shutdown");
  }
}

Status Agent::Run() {
  sigchld_.add(SIGCHLD);
  WatchSigchld();
  WatchShutdownFd();
  next_register_ms_ = clock_.SteadyMs();
  last_ack_progress_ms_ = clock_.SteadyMs();
  ScheduleTick();
  io_.run();
  CloseSocket();
  return fatal_;
}

}  // namespace anneal::agent
