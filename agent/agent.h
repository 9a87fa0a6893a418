// Agent: the anneal-agent daemon's event loop. One Boost.Asio io_context (one thread) owns all state: the
// ZeroMQ DEALER connected to the coordinator's ROUTER, the spool of sequenced reports, the task supervisor.
//
// Channel (protocol/anneal.proto, agent channel); its states (UNREGISTERED -> REGISTERING -> REGISTERED) and
// every edge are drawn in agent/lifecycle.h:
// - Register on every (re)connection (RegisterRequest with inventory and the tasks still supervised), retried
//   with exponential backoff until a RegisterReply arrives; ZeroMQ itself reconnects with backoff.
// - Node identity (docs/agent.md): a registration carries the node credential from <work_dir>/node-credential
//   and, when --join-token-file is set, the join token. A new node makes its credential itself (random, stored
//   0600 and fsynced before the first registration) and proposes it with the join token; a credential in a
//   RegisterReply (a coordinator that made one) replaces it. Init fails when there is neither a credential nor
//   a join token; a refused registration (RegisterReply.accepted false) stops the agent: Run returns it.
// - Heartbeat every heartbeat interval (the RegisterReply's, else --heartbeat-ms) with tasks and fresh GPU data.
// - Reports (TaskUpdate, MetricBatch, CheckpointCommitted, CheckpointDeleted) are spooled with a seq before
//   they are sent; Ack{seq} acknowledges every seq up to it; after a registration the agent drops what
//   RegisterReply.last_acked_seq covers and resends the rest in order, and it resends every unacknowledged
//   report when no ack progress happened for a resend interval (go-back-N). Resent reports keep their seq.
// - Coordinator orders: LaunchTask, StopTask (fenced by epoch in the supervisor), DeleteCheckpoint (answered
//   with a sequenced CheckpointDeleted), FetchLogs (answered with a LogChunk), Error (re-register).
// Shutdown (SIGTERM/SIGINT through common/shutdown.h, or RequestShutdown): stops every rank (SIGTERM, SIGKILL
// after --shutdown-grace-ms) and exits once they are reaped and reported; with keep_tasks_on_exit the ranks
// are left running for the next agent to re-adopt.
//
// Thread-safety: not thread-safe; Run() is called from one thread, RequestShutdown from that thread too (use
// the shutdown self-pipe from other threads or signal handlers).
// Ownership: borrows the clock and the Nvml; owns the socket, spool and supervisor.
//
// Example:
//   anneal::agent::SystemClock clock; anneal::agent::Nvml nvml;
//   anneal::agent::Agent agent(config, clock, nvml);
//   RETURN_IF_ERROR(agent.Init());
//   return agent.Run();   // until SIGTERM
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "agent/clock.h"
#include "agent/config.h"
#include "agent/inventory.h"
#include "agent/lifecycle.h"
#include "agent/metrics_service.h"
#include "agent/spool.h"
#include "agent/stager.h"
#include "agent/supervisor.h"
#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::transfer {
class TransferServer;
}

namespace anneal::agent {

struct AgentTiming {
  int64_t tick_ms = 50;
  int64_t register_backoff_min_ms = 250;
  int64_t register_backoff_max_ms = 5000;
  int64_t resend_after_ms = 3000;  // no ack progress for this long: resend every pending report
  int zmq_reconnect_ivl_ms = 100;
  int zmq_reconnect_ivl_max_ms = 2000;
  // A connect() the network swallows (a cut host) is abandoned after this and retried every reconnect interval;
  // without it the kernel's SYN backoff (1, 2, 4 ... 64 s) decides, and a healed host re-registers up to a
  // minute late while its stale ranks run on.
  int zmq_connect_timeout_ms = 2000;
};

class Agent {
 public:
  Agent(AgentConfig config, const Clock& clock, Nvml& nvml, AgentTiming timing = {});
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Opens the spool and the work directory, recovers tasks left by an earlier agent, connects.
  Status Init();
  // Runs the loop until shutdown completes. Returns OK after a clean shutdown.
  Status Run();
  void RequestShutdown();

 private:
  Status LockWorkDir();
  Status LoadIdentity();  // node_credential_ / join_token_, or the error why this node cannot register
  void Refused(const Status& why);
  void ScheduleTick();
  void OnTick();
  void WatchSocket();
  void WatchShutdownFd();
  void WatchSigchld();
  void DrainSocket();  // DrainSocketOnce, again after an EINTR
  void DrainSocketOnce();
  void DrainMonitor();
  void WarnHandshakeFailed();  // logs (rate-limited) that the Curve or plaintext handshake failed
  void Handle(const pb::CoordinatorToAgent& msg);
  void OpenSocket();
  void CloseSocket();
  void SendRegister();
  void SendHeartbeat();
  void ResendPending();
  void FlushPending();  // sends pending reports after sent_upto_, in order, until the socket refuses
  bool Send(const pb::AgentToCoordinator& msg);
  void Report(pb::AgentToCoordinator msg);

  AgentConfig config_;
  const Clock& clock_;
  Nvml& nvml_;
  AgentTiming timing_;
  boost::asio::io_context io_;
  boost::asio::steady_timer tick_timer_{io_};
  boost::asio::signal_set sigchld_{io_};
  std::unique_ptr<boost::asio::posix::stream_descriptor> shutdown_fd_;
  zmq::context_t zmq_{1};
  std::unique_ptr<zmq::socket_t> socket_;
  std::unique_ptr<zmq::socket_t> monitor_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> socket_fd_;  // ZMQ_FD; released, never closed
  uint64_t socket_generation_ = 0;
  int64_t last_handshake_warning_ms_ = -1;  // failed CurveZMQ handshakes are logged at most every 30 s
  uint64_t failed_handshakes_ = 0;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<AgentMetricsService> metrics_;  // GET /metrics when config.metrics_bind is set
  // No shared filesystem (docs/transfers.md): the file server other nodes copy from, and the staging of inputs.
  std::unique_ptr<transfer::TransferServer> transfer_server_;
  std::unique_ptr<Stager> stager_;
  std::string transfer_endpoint_;  // what other nodes connect to: tcp://<--address>:<bound port>
  Status StartTransfers();
  void Launch(const pb::LaunchTask& launch);  // staged first when it names inputs to copy
  void StagingDone(const pb::LaunchTask& launch, StatusOr<pb::LaunchTask> ready);
  std::vector<pb::TaskStatus> AllTasks() const;  // the Supervisor's and the Stager's

  void Connection(ConnectionEvent event) { connection_ = NextConnectionState(connection_, event); }
  bool Registered() const { return connection_ == ConnectionState::kRegistered; }

  ConnectionState connection_ = ConnectionState::kUnregistered;
  uint64_t session_ = 0;
  uint32_t heartbeat_ms_ = 2000;
  int64_t next_register_ms_ = 0;
  int64_t register_backoff_ms_ = 0;
  int register_attempts_ = 0;
  int64_t next_heartbeat_ms_ = 0;
  int64_t last_ack_progress_ms_ = 0;
  uint64_t sent_upto_ = 0;  // highest seq handed to the current registration's socket
  bool shutting_down_ = false;
  int64_t shutdown_deadline_ms_ = 0;  // leave even with unsent reports (they stay spooled)
  bool done_ = false;
  int lock_fd_ = -1;             // flock on <work dir>/agent.lock
  std::string node_credential_;  // "anc_...", from <work dir>/node-credential
  std::string join_token_;       // "anj_...", from --join-token-file
  Status fatal_;                 // a refusal: Run returns it
};

}  // namespace anneal::agent
