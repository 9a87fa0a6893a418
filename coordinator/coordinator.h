// Coordinator: the cluster's single owner of state (Ray GCS style), driven by one event loop.
//
// It holds the jobs (queue + state machine, coordinator/job_state_machine.h), the node registry with failure
// detection, the checkpoint registry with retention, and answers the agent and client channels. It does no
// I/O of its own besides the injected StateStore: the transport (coordinator/server.h) hands it parsed
// messages and sends what Flush() returns; the clock is injected. Unit tests drive it directly with a
// FakeClock and a real StateStore in a temp dir.
//
// The loop contract (group commit):
//   1. OnAgentMessage / OnClientRequest / OnBadMessage for every message that arrived (any number);
//   2. Tick(): failure detection, deadlines, scheduling;
//   3. Flush(): commits every change of this round in ONE synced WriteBatch (each transition with its event),
//      then answers the reads and long polls, and returns the messages to send. Nothing is sent before the
//      write that it reports is durable, so an acknowledged SubmitJob survives kill -9.
// A failed commit is fatal (memory is ahead of disk): the caller must exit and let recovery reload the store.
//
// Thread-safety: none; one thread (the event loop) owns a Coordinator.
// Ownership: borrows the store and the clock; both must outlive it.
//
// Example:
//   Coordinator core(options, store.get(), &clock);
//   RETURN_IF_ERROR(core.Recover());
//   core.OnClientRequest(peer, request);
//   core.Tick();
//   ASSIGN_OR_RETURN(std::vector<Outgoing> out, core.Flush());
//   for (auto& msg : out) transport.Send(msg);
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "coordinator/scheduler.h"
#include "jobspec/jobspec.h"
#include "jobspec/retention.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

struct CoordinatorOptions {
  std::string admin_token;                 // required on every client request; empty: no check
  int64_t heartbeat_interval_ms = 2000;    // told to agents at Register
  int64_t heartbeat_timeout_ms = 10000;    // silent this long -> node DOWN, its tasks LOST
  int64_t stop_timeout_ms = 60000;         // a StopTask unconfirmed this long counts as done (node unreachable)
  int64_t log_fetch_timeout_ms = 5000;     // GetLogs waits this long for the agent's LogChunk
  uint32_t default_port_begin = 29500;     // rendezvous ports when an inventory advertises none
  uint32_t default_port_end = 30000;
  uint32_t max_watch_items = 1000;         // events / metrics per WatchJob reply
};

// A SubmitJob whose spec was parsed and resolved (possibly on another thread: coordinator/spec_workers.h).
struct PreparedSubmit {
  std::string peer;
  pb::ClientRequest request;
  Status status;                // the spec's error, when it does not parse
  std::shared_ptr<const jobspec::JobSpec> spec;
  std::string resolved_yaml;    // jobspec::ToYaml(*spec)
};
// Parses request.submit() and resolves its defaults. Thread-safe (pure).
PreparedSubmit PrepareSubmit(std::string peer, pb::ClientRequest request);

// One message to send: to an agent (CoordinatorToAgent) or a client (ClientReply), by ZeroMQ routing id.
struct Outgoing {
  std::string routing_id;
  std::variant<pb::CoordinatorToAgent, pb::ClientReply> message;
};

class Coordinator {
 public:
  Coordinator(CoordinatorOptions options, storage::StateStore* store, Clock* clock);
  ~Coordinator();

  // Loads nodes, active jobs, checkpoints and counters from the store. Nodes get a full heartbeat timeout to
  // re-register before they count as down. Call once before anything else.
  Status Recover();

  void OnAgentMessage(const std::string& peer, const pb::AgentToCoordinator& message);
  void OnClientRequest(const std::string& peer, const pb::ClientRequest& request);
  // A SubmitJob prepared off the loop (the token was checked with Authorized() before).
  void OnPreparedSubmit(const PreparedSubmit& prepared);
  bool Authorized(const pb::ClientRequest& request) const {
    return options_.admin_token.empty() || request.token() == options_.admin_token;
  }
  // A frame that did not parse: answered with an Error of the reply kind the sender expects.
  void OnBadAgentMessage(const std::string& peer, const Status& error);
  void OnBadClientMessage(const std::string& peer, uint64_t request_id, const Status& error);

  void Tick();
  StatusOr<std::vector<Outgoing>> Flush();
  // When Tick next has something to do (heartbeat deadline, long-poll deadline, stop deadline), in clock ms.
  int64_t NextWakeupMs() const;

  // Introspection (tests, HTTP, benchmarks): the in-memory view.
  const pb::JobRecord* FindActiveJob(const std::string& job_id) const;
  StatusOr<pb::JobRecord> GetJobRecord(const std::string& job_id) const;  // active or from the store
  const pb::NodeRecord* FindNode(const std::string& node_id) const;
  std::vector<pb::NodeRecord> Nodes() const;
  std::vector<pb::JobRecord> ActiveJobs() const;
  size_t ActiveJobCount() const { return jobs_.size(); }
  size_t PendingJobCount() const { return queue_.size(); }
  std::map<pb::JobState, size_t> ActiveJobsByState() const;

 private:
  struct JobRuntime {
    pb::JobRecord record;
    jobspec::RetentionPolicy retention;
    std::map<uint64_t, pb::CheckpointRecord> checkpoints;  // by step
    std::optional<uint64_t> last_metric_step;
    int64_t stop_deadline_ms = 0;                          // RESTARTING / CANCELLING
    std::map<std::string, int64_t> task_last_seen_ms;      // node -> last sign of the task
    std::string wait_reason;                               // last "not placed" reason (evented once)
  };
  struct NodeRuntime {
    pb::NodeRecord record;
    std::string routing_id;             // empty until the agent (re-)registers with this process
    uint64_t last_applied_seq = 0;      // sequenced reports up to this are applied (durable, meta table)
    int64_t last_heartbeat_ms = 0;
    std::set<uint32_t> used_slots;
    std::set<uint32_t> used_ports;
    std::set<std::string> task_jobs;    // jobs with a task here that has not ended (index for node events)
  };
  using QueueKey = std::tuple<int64_t, uint64_t, std::string>;  // (-priority, submit_seq, job id)
  struct Watcher {
    std::string peer;
    uint64_t request_id;
    pb::WatchJobRequest request;
    int64_t deadline_ms;
  };
  struct PendingLogRequest {
    std::string node_id;
    std::string peer;
    uint64_t client_request_id;
    uint64_t offset;
    int64_t deadline_ms;
  };
  struct DeferredRead {
    std::string peer;
    pb::ClientRequest request;
  };

  // ---- agents.cc
  void HandleRegister(const std::string& peer, const pb::RegisterRequest& request);
  void HandleHeartbeat(const std::string& peer, const pb::Heartbeat& heartbeat);
  void HandleSequenced(const std::string& peer, uint64_t seq, const pb::AgentToCoordinator& message);
  void ApplyTaskStatus(NodeRuntime& node, const pb::TaskStatus& status);
  void HandleLogChunk(const pb::LogChunk& chunk);
  void DetectFailedNodes();
  void MarkNodeDown(NodeRuntime& node, const std::string& reason);
  NodeRuntime* NodeByPeer(const std::string& peer);
  bool IsCurrentTask(std::map<std::string, JobRuntime>::const_iterator job, const std::string& node_id,
                     uint64_t epoch) const;
  void SendToNode(const NodeRuntime& node, pb::CoordinatorToAgent message);
  void SendToPeer(const std::string& peer, pb::CoordinatorToAgent message);
  void SendStop(const NodeRuntime& node, const std::string& job_id, uint64_t epoch, const std::string& reason);
  void SendLaunch(const JobRuntime& job, const std::string& node_id);
  void PersistNode(const NodeRuntime& node);

  // ---- jobs.cc
  void HandleSubmit(const PreparedSubmit& prepared);
  void HandleCancel(const std::string& peer, uint64_t request_id, const pb::CancelJobRequest& request);
  void Transition(JobRuntime& job, pb::JobState to, const std::string& message);
  void AddEvent(JobRuntime& job, const std::string& kind, const std::string& message);
  void PersistJob(const JobRuntime& job);
  void Reconcile(JobRuntime& job);                     // moves the job on after its tasks changed
  void FailAttempt(JobRuntime& job, const std::string& reason);
  void StopGang(JobRuntime& job, const std::string& reason);
  void SetTaskState(JobRuntime& job, const std::string& node_id, pb::TaskState state);
  void ReleaseTask(const JobRuntime& job, const std::string& node_id);
  void ReserveTasks(const JobRuntime& job);
  void Schedule();
  bool TryPlace(JobRuntime& job, std::vector<NodeCapacity>& capacities);  // false: blocks the queue
  std::vector<NodeCapacity> Capacities() const;
  void CheckStopDeadlines();
  void ResumeFromLatestCheckpoint(JobRuntime& job);
  Status LoadJob(const pb::JobRecord& record);

  // ---- checkpoints.cc
  void HandleCheckpointCommitted(NodeRuntime& node, const pb::CheckpointRecord& checkpoint);
  void HandleCheckpointDeleted(NodeRuntime& node, const pb::CheckpointDeleted& deleted);
  void ApplyRetention(JobRuntime& job);
  void SendDeleteCheckpoint(const JobRuntime& job, const pb::CheckpointRecord& checkpoint);
  const pb::CheckpointRecord* LatestCommittedCheckpoint(const JobRuntime& job) const;

  // ---- clients.cc
  void HandleMetricBatch(const pb::MetricBatch& batch);
  void HandleGetLogs(const std::string& peer, uint64_t request_id, const pb::GetLogsRequest& request);
  void HandleDrain(const std::string& peer, uint64_t request_id, const pb::DrainNodeRequest& request);
  void AnswerRead(const DeferredRead& read);
  bool WatchReady(const Watcher& watcher, int64_t now) const;
  void AnswerWatch(const Watcher& watcher);
  void AnswerWatchers(bool all_due);
  void ExpireLogRequests();
  void Reply(const std::string& peer, pb::ClientReply reply);
  void ReplyError(const std::string& peer, uint64_t request_id, const Status& error);
  StatusOr<std::vector<pb::JobEvent>> ReadEvents(const std::string& job_id, uint64_t after, size_t limit) const;
  StatusOr<std::vector<pb::MetricPoint>> ReadMetrics(const std::string& job_id, uint64_t after, size_t limit) const;
  StatusOr<std::vector<pb::CheckpointRecord>> ReadCheckpoints(const std::string& job_id) const;

  CoordinatorOptions options_;
  storage::StateStore* store_;
  Clock* clock_;

  storage::WriteBatch batch_;                          // this round's changes
  std::vector<Outgoing> outbox_;                       // sent after batch_ is durable
  std::vector<DeferredRead> reads_;                    // answered after batch_ is durable
  std::set<std::string> dirty_jobs_;                   // records to write in this round's batch (once each)
  std::vector<std::string> to_erase_;                  // terminal jobs leave jobs_ after the commit

  std::map<std::string, JobRuntime> jobs_;             // every non-terminal job
  std::set<QueueKey> queue_;                           // PENDING jobs in scheduling order
  std::map<std::string, NodeRuntime> nodes_;
  std::map<std::string, std::string> node_by_peer_;    // routing id -> node id
  std::deque<Watcher> watchers_;
  std::set<std::string> changed_jobs_;                 // jobs whose watchers may have news
  std::map<uint64_t, PendingLogRequest> log_requests_;
  bool schedule_dirty_ = true;

  uint64_t next_job_number_ = 1;
  uint64_t next_epoch_ = 1;
  uint64_t next_request_id_ = 1;
};

}  // namespace anneal::coordinator
