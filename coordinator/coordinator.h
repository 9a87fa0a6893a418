// Coordinator: the cluster's single owner of state (Ray GCS style), driven by one event loop.
//
// It is the thin facade that wires one manager per concern, each with its own state and contract:
//   JobTable            job records, the pending queue, events, their persistence   coordinator/job_table.h
//   NodeRegistry        nodes, connections, heartbeats, slots, ports, applied seqs  coordinator/node_registry.h
//   CheckpointRegistry  committed checkpoints, the resume point, retention          coordinator/checkpoint_registry.h
//   IdentityRegistry    users, teams, roles, API tokens                             coordinator/identity.h
//   AuditLog            every mutating request and its outcome                      coordinator/audit.h
//   ModelRegistry       model versions, stages, promote-if-better, their protection coordinator/model_registry.h
//   Require*            the pure decision of who may do what                        coordinator/authz.h
//   NextTransition      the pure decision of a job's next edge                      coordinator/job_state_machine.h
//   PlaceGang           the pure placement of one gang                              coordinator/scheduler.h
// and answers the agent and client channels. It does no I/O of its own besides the injected StateStore: the
// transport (coordinator/server.h) hands it parsed messages and sends what Flush() returns; the clock is
// injected. Unit tests drive it directly with a FakeClock and a real StateStore in a temp dir.
//
// Its own files (the handlers that read messages, ask the managers and queue what to send):
//   coordinator.cc   Recover, dispatch, the Tick/Flush round, introspection
//   agents.cc        the agent channel: Register / re-adoption, heartbeats, failure detection, sequenced reports
//   jobs.cc          SubmitJob, CancelJob, applying NextTransition's decisions, stop deadlines
//   scheduling.cc    the queue walk, placements, launch orders
//   checkpoints.cc   checkpoint reports, retention's delete orders
//   clients.cc       reads, WatchJob long polls, GetLogs via the agent, DrainNode, metric reports
//   identity_requests.cc  authentication of every client request; users, teams, tokens, the audit log
//   node_identity.cc  node identity: join tokens, the credential check at Register, which reports a node may
//                    send, node removal (docs/architecture.md "Node identity")
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
#include <variant>
#include <vector>

#include "common/status.h"
#include "coordinator/artifacts.h"
#include "coordinator/audit.h"
#include "coordinator/checkpoint_registry.h"
#include "coordinator/clock.h"
#include "coordinator/identity.h"
#include "coordinator/job_state_machine.h"
#include "coordinator/job_table.h"
#include "coordinator/join_tokens.h"
#include "coordinator/limits.h"
#include "coordinator/metrics.h"
#include "coordinator/model_registry.h"
#include "coordinator/node_registry.h"
#include "coordinator/pipelines.h"
#include "coordinator/planner.h"
#include "coordinator/schedules.h"
#include "coordinator/team_usage.h"
#include "jobspec/jobspec.h"
#include "jobspec/path_policy.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

struct CoordinatorOptions {
  int64_t heartbeat_interval_ms = 2000;  // told to agents at Register
  int64_t heartbeat_timeout_ms = 10000;  // silent this long -> node DOWN, its tasks LOST
  int64_t stop_timeout_ms = 60000;       // a StopTask unconfirmed this long counts as done (node unreachable)
  // A DOWN node's running tasks are kept this long (the job stays RUNNING) in case the node reconnects, as after
  // a network partition: its ranks never needed the coordinator to train. 0: lost at once, as a dead node's.
  // A failure elsewhere in the gang, a cancel or a preemption ends the wait (the tasks count as lost then).
  int64_t reconnect_grace_ms = 60000;
  int64_t log_fetch_timeout_ms = 5000;  // GetLogs waits this long for the agent's LogChunk
  uint32_t default_port_begin = 29500;  // rendezvous ports when an inventory advertises none
  uint32_t default_port_end = 30000;
  uint32_t max_watch_items = 1000;         // events / metrics per WatchJob reply
  uint64_t audit_max_records = 1'000'000;  // the audit log keeps the newest this many
  // ---- agent identity (coordinator/node_identity.cc)
  int64_t join_token_ttl_ms = 24LL * 3600 * 1000;  // a join token's lifetime when its creator names none
  std::vector<std::string> coordinator_addresses;  // the join bundle's addresses (the bind endpoint)
  AgentLimits agent_limits;                        // bounds on registrations and reports (coordinator/node_registry.h)
  // ---- transport and limits (coordinator/limits.h)
  Limits limits;                  // request sizes, names, watchers and log fetches per peer
  std::string server_public_key;  // Z85 CurveZMQ public key; set by main (empty: plaintext)
  // Where each team's jobs may read and write, checked at submit (PrepareSubmit); its outputs roots also go to
  // the agents (LaunchTask.output_roots). Null: no path check (embedders and tests only: anneal-coordinator
  // refuses to start without a policy).
  std::shared_ptr<const jobspec::PathPolicy> path_policy;
  // ---- sharing (coordinator/planner.h, docs/coordinator.md "Scheduling")
  PlannerConfig planner;                                // preemption on/off, minimum runtime, backfill, share horizon
  int64_t preemption_grace_ms = 120000;                 // PreemptTask -> the gang is killed if it has not stopped
  int64_t usage_half_life_ms = 7LL * 24 * 3600 * 1000;  // fair-share usage decay (Slurm's default: 7 days)
  int64_t schedule_interval_ms = 1000;        // a pass at least this often while jobs wait or have time limits
  int64_t usage_persist_interval_ms = 60000;  // team usage is written at most this often
  // ---- schedules (coordinator/schedules.h, docs/pipelines.md "Schedules")
  ScheduleOptions schedules;  // misfire grace, minimum data-check interval, history length
  // ---- artifacts without a shared filesystem (coordinator/artifacts.h)
  ArtifactOptions artifacts;
};

// A SubmitJob whose spec was parsed and resolved (possibly on another thread: coordinator/spec_workers.h).
struct PreparedSubmit {
  std::string peer;
  pb::ClientRequest request;
  Principal submitter;  // authenticated on the loop, before the spec is prepared
  std::string team;     // the team it is submitted to (authorized on the loop; the path policy's roots)
  Status status;        // the spec's error, when it does not parse
  std::shared_ptr<const jobspec::JobSpec> spec;
  std::string resolved_yaml;  // jobspec::ToYaml(*spec)
};
// Parses request.submit() (never opening a file the spec names: jobspec::ParseOptions), resolves its defaults
// and checks its paths against `policy` for `team` (null: no check); a path outside the team's roots is the
// status (PERMISSION_DENIED naming the key, the path and the roots). Thread-safe (pure; reads the filesystem).
PreparedSubmit PrepareSubmit(std::string peer, pb::ClientRequest request, Principal submitter, std::string team,
                             const jobspec::PathPolicy* policy);

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

  // On a fresh state directory (no user yet): creates team "default" and the cluster admin `admin_name` and
  // returns its API token (shown once); the caller hands it to the operator, then Flush() makes it durable.
  // FAILED_PRECONDITION when the cluster already has users.
  StatusOr<std::string> BootstrapAdmin(const std::string& admin_name = "admin");
  bool HasUsers() const { return !identity_.empty(); }

  void OnAgentMessage(const std::string& peer, const pb::AgentToCoordinator& message);
  // Authenticates, authorizes and answers (or queues the answer of) one client request.
  void OnClientRequest(const std::string& peer, const pb::ClientRequest& request);
  // The first half of a SubmitJob prepared off the loop: authenticates the token and authorizes the team.
  // On a refusal it queues the error reply (and the audit record) itself and returns nullopt; otherwise the
  // caller prepares the spec (PrepareSubmit, any thread) and hands it to OnPreparedSubmit.
  struct SubmitTicket {
    Principal submitter;
    std::string team;
  };
  std::optional<SubmitTicket> AdmitSubmit(const std::string& peer, const pb::ClientRequest& request);
  void OnPreparedSubmit(const PreparedSubmit& prepared);
  // The request's sizes and names are within options.limits (coordinator/limits.h).
  Status WithinLimits(const pb::ClientRequest& request) const {
    return CheckClientRequestLimits(request, options_.limits);
  }
  const std::shared_ptr<const jobspec::PathPolicy>& path_policy() const { return options_.path_policy; }
  // A frame that did not parse: answered with an Error of the reply kind the sender expects.
  void OnBadAgentMessage(const std::string& peer, const Status& error);
  void OnBadClientMessage(const std::string& peer, uint64_t request_id, const Status& error);

  void Tick();
  StatusOr<std::vector<Outgoing>> Flush();
  // When Tick next has something to do (heartbeat deadline, long-poll deadline, stop deadline), in clock ms.
  int64_t NextWakeupMs() const;

  // --bootstrap-join-token-file: on a coordinator with no node and no join token yet, stores `token` as a join
  // token living options.join_token_ttl_ms and commits it. False (nothing stored) when the cluster already has
  // nodes or tokens; INVALID_ARGUMENT for a malformed token.
  StatusOr<bool> BootstrapJoinToken(const std::string& token);
  bool HasNodeIdentities() const { return !nodes_.empty() || !join_tokens_.empty(); }

  // Introspection (tests, HTTP, benchmarks): the in-memory view.
  const pb::JobRecord* FindActiveJob(const std::string& job_id) const;
  StatusOr<pb::JobRecord> GetJobRecord(const std::string& job_id) const;  // active or from the store
  const pb::NodeRecord* FindNode(const std::string& node_id) const;
  // Every node: the latest GPU figures of its heartbeats (memory only), slots_used, no credential hash.
  std::vector<pb::NodeRecord> Nodes() const;
  std::vector<pb::JobRecord> ActiveJobs() const;
  size_t ActiveJobCount() const { return jobs_.all().size(); }
  size_t PendingJobCount() const { return jobs_.PendingCount(); }
  std::map<pb::JobState, size_t> ActiveJobsByState() const;
  // The pending queue `who` may see (coordinator/sharing.h BuildQueueReply; queue_requests.cc).
  StatusOr<pb::QueueReply> Queue(const Principal& who, const std::string& team) const;
  // The model registry (coordinator/model_registry.h; model_registry_requests.cc): what `who` may read.
  StatusOr<pb::ListModelsReply> ListModels(const Principal& who, const std::string& team) const;
  StatusOr<pb::GetModelReply> GetModel(const Principal& who, const std::string& team, const std::string& name) const;
  const ModelRegistry& models() const { return models_; }
  // Scheduling latency, wait times, preemptions (coordinator/metrics.h; rendered for /metrics).
  const CoordinatorMetrics& metrics() const { return metrics_; }

  // ---- pipelines (coordinator/pipelines.h; pipeline_requests.cc)
  // Creates a pipeline run from its YAML (jobspec/pipeline.h; step job specs inline) with "STEP.KEY" overrides,
  // owned by `owner` in `team`, recording `origin` ("anneal pipeline submit by ana", "schedule nightly, fire
  // ..."); its record goes into this round's batch, its first jobs are created by the next Tick (same round
  // when called from a request). Audited. Errors: NOT_FOUND (team), PERMISSION_DENIED (owner not a member),
  // INVALID_ARGUMENT naming the step and key (bad YAML, cycle, unknown step or reference, a job spec that does
  // not parse), PERMISSION_DENIED naming the step, key and roots (path policy).
  StatusOr<std::string> CreatePipelineRun(const std::string& yaml, const std::string& team, const Principal& owner,
                                          const std::map<std::string, std::string>& overrides,
                                          const std::string& origin);
  bool PipelineRunActive(const std::string& run_id) const;  // created and not ended
  // Cancels the run (its running jobs too); a run that ended is left as it is. NOT_FOUND for an unknown id.
  Status CancelPipelineRun(const std::string& run_id, const std::string& reason);
  StatusOr<pb::PipelineRunRecord> GetPipelineRun(const std::string& run_id) const;  // active or from the store
  // The newest runs, ended ones included (HTTP).
  StatusOr<std::vector<pb::PipelineRunRecord>> RecentPipelineRuns(size_t limit) const;
  // ---- schedules (schedule_requests.cc, schedule_pipelines.cc; coordinator/schedules.h)
  const ScheduleManager& schedules() const { return *schedules_; }
  // What a schedule fires, through the pipelines part (schedule_pipelines.cc): the owner's pipeline run.
  Status ValidateScheduledPipeline(const std::string& yaml, const std::string& team, const std::string& owner,
                                   const std::map<std::string, std::string>& overrides);
  StatusOr<std::string> CreateScheduledPipeline(const std::string& yaml, const std::string& team,
                                                const std::string& owner,
                                                const std::map<std::string, std::string>& overrides,
                                                const std::string& origin);
  bool ScheduledPipelineActive(const std::string& run_id) const;
  Status CancelScheduledPipeline(const std::string& run_id, const std::string& reason);
  // The content hash of a data trigger's datasets (called on the hasher's thread; schedule_pipelines.cc).
  static StatusOr<std::string> HashScheduledDatasets(const std::vector<std::string>& paths);

 private:
  struct Watcher {
    Principal who;
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
    Principal who;
    std::string peer;
    pb::ClientRequest request;
  };

  // ---- agents.cc
  void HandleRegister(const std::string& peer, const pb::RegisterRequest& request);
  void ResendMissedOrders(Node& node, const std::set<std::string>& reported);
  void HandleHeartbeat(const std::string& peer, const pb::Heartbeat& heartbeat);
  void HandleSequenced(const std::string& peer, uint64_t seq, const pb::AgentToCoordinator& message);
  void ApplyTaskStatus(Node& node, const pb::TaskStatus& status);
  void HandleLogChunk(const std::string& peer, const pb::LogChunk& chunk);
  void DetectFailedNodes();
  // `may_reconnect`: a silent node (its running tasks get the reconnect grace); false: a removed node.
  void MarkNodeDown(Node& node, const std::string& reason, bool may_reconnect = true);
  // ---- reconnect.cc: the running tasks of a DOWN node, kept for reconnect_grace_ms (CoordinatorOptions)
  bool KeepDisconnectedTask(Job& job, const std::string& node_id, const std::string& reason);
  void ExpireDisconnectedTasks();
  void ReadoptDisconnectedTasks(const Node& node, const std::set<std::string>& reported);
  void ReleaseDisconnectedTasks(Job& job, const std::string& why);
  // The one way a task becomes LOST, and so the one place an attempt becomes an infrastructure restart
  // (job_state_machine.h): `what` is recorded as an "error" event, and as the job's result while the job is
  // STARTING or RUNNING (the first failure of an attempt describes it; a task lost while the gang is already
  // stopping does not replace that); the task leaves the reconnect grace and its slots are released. No-op for
  // a task already ended. The caller reconciles the job (one Reconcile after several losses).
  void LoseTask(Job& job, const std::string& node_id, const std::string& what);
  bool IsCurrentTask(const Job* job, const std::string& node_id, uint64_t epoch) const;
  void SendToNode(const Node& node, pb::CoordinatorToAgent message);
  void SendToPeer(const std::string& peer, pb::CoordinatorToAgent message);
  void SendStop(const Node& node, const std::string& job_id, uint64_t epoch, const std::string& reason);

  // ---- node_identity.cc
  // The registration's credential check: the identity to bind when a join token admitted a new node (nullopt
  // for a node that proved its own credential), or the refusal (UNAUTHENTICATED / PERMISSION_DENIED).
  StatusOr<std::optional<NodeIdentity>> Authenticate(const pb::RegisterRequest& request, std::string* credential);
  void RefuseRegister(const std::string& peer, const pb::RegisterRequest& request, const Status& error);
  // Why the node may not send this report (empty: it may): the job has no task of the node in that epoch, a
  // checkpoint path outside the job's output directory, a deletion nobody ordered.
  std::string ForeignReport(const Node& node, const pb::AgentToCoordinator& message) const;
  bool HasTaskInEpoch(const pb::JobRecord& job, const std::string& node_id, uint64_t epoch) const;
  // Join tokens (create, list, revoke) and node removal: cluster admin only; the mutations are audited.
  void HandleNodeAdminRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  StatusOr<pb::ClientReply> CreateJoinToken(const pb::CreateJoinTokenRequest& request);
  StatusOr<pb::ClientReply> RemoveNode(const pb::RemoveNodeRequest& request);

  // ---- jobs.cc
  void HandleSubmit(const PreparedSubmit& prepared);
  void HandleCancel(const Principal& who, const std::string& peer, uint64_t request_id,
                    const pb::CancelJobRequest& request);
  // The active job whose output directory is `output_dir`, lies inside it or contains it ("" when none).
  std::string OutputDirHolder(const std::string& output_dir);
  static std::string OutputDirKey(const std::string& dir);  // lexically normal, no trailing slash
  // Applies NextTransition's decisions until the job stays where it is.
  void Reconcile(Job& job, JobReport report = JobReport::kTasksChanged);
  void StopGang(Job& job, const std::string& reason);
  // PreemptTask (record.preempt_reason, options.preemption_grace_ms) to every task of the gang not ended.
  void PreemptGang(Job& job);
  void SetTaskState(Job& job, const std::string& node_id, pb::TaskState state);
  void CheckStopDeadlines();

  // ---- scheduling.cc
  // One pass: accrue usage, PlanSchedule over BuildPlannerInput, apply its preemptions, starts and reasons.
  void Schedule();
  // Schedule() timed, then the active jobs shown to metrics_ (coordinator/metrics_hooks.cc).
  void RunSchedulingPass();
  PlannerInput BuildPlannerInput(int64_t now) const;
  std::map<std::string, uint32_t> SlotsHeldByTeam() const;  // team -> slots its placed, not-ended tasks hold
  void ApplyPreemption(const Preemption& preemption);
  // drain --evict: preempts every job RUNNING on the node (checkpoint, then back to the queue); their ids.
  std::vector<std::string> EvictJobsOn(const std::string& node_id, const std::string& user);
  void Launch(Job& job, const std::vector<ChosenNode>& nodes);  // PENDING -> STARTING, LaunchTask to each node
  // The pending job's reason (rendered from the plan), position and estimate.
  void Explain(Job& job, const PendingExplanation& why, const std::string& reason);
  void SendLaunch(Job& job, const std::string& node_id);

  // ---- checkpoints.cc
  void HandleCheckpointCommitted(Node& node, const pb::CheckpointRecord& checkpoint);
  void HandleCheckpointDeleted(Node& node, const pb::CheckpointDeleted& deleted);
  void ApplyRetention(Job& job);
  void SendDeleteCheckpoint(const Job& job, const pb::CheckpointRecord& checkpoint);  // to every holder
  void SendDeleteCheckpointTo(const Job& job, const pb::CheckpointRecord& checkpoint, const std::string& node_id);

  // ---- artifacts.cc, replication.cc: no shared filesystem (coordinator/artifacts.h)
  struct ReplicaOrders {
    std::map<std::string, int64_t> pending;  // node -> when the ReplicateCheckpoint was sent
    std::set<std::string> failed;            // nodes that could not copy it (never asked again)
  };
  std::string SignTicket(const std::string& node_id, const std::string& root, const std::string& purpose,
                         const pb::JobRecord& job) const;
  // Fills the source fields and a fresh ticket; false when the node is unknown or serves no transfers.
  bool FillSource(const std::string& node_id, const std::string& path, const std::string& purpose,
                  const pb::JobRecord& job, pb::StageInput* input) const;
  void AddStaging(Job& job, const std::string& node_id, pb::LaunchTask* launch);
  void HandleFetchOutputs(const Principal& who, const std::string& peer, uint64_t request_id,
                          const pb::FetchOutputsRequest& request);
  bool ReplicationNeeded() const;
  std::vector<std::string> ReplicaTargets(const Job* job, const pb::CheckpointRecord& c, const ReplicaOrders& orders,
                                          size_t wanted) const;
  void StartReplication(Job* job, const pb::CheckpointRecord& c);
  void HandleCheckpointReplicated(Node& node, const pb::CheckpointReplicated& done);
  void TickReplication();

  // ---- clients.cc
  void HandleMetricBatch(const pb::MetricBatch& batch);
  void HandleGetLogs(const Principal& who, const std::string& peer, uint64_t request_id,
                     const pb::GetLogsRequest& request);
  void HandleDrain(const Principal& who, const std::string& peer, uint64_t request_id,
                   const pb::DrainNodeRequest& request);
  void HandleWatch(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  // The job's record when `who` may read its team's jobs; NOT_FOUND or PERMISSION_DENIED otherwise.
  StatusOr<pb::JobRecord> ReadableJob(const Principal& who, const std::string& job_id) const;
  void AnswerRead(const DeferredRead& read);
  bool WatchReady(const Watcher& watcher, int64_t now) const;
  void AnswerWatch(const Watcher& watcher);
  void AnswerWatchers(bool all_due);
  void ExpireLogRequests();
  void Reply(const std::string& peer, pb::ClientReply reply);
  void ReplyError(const std::string& peer, uint64_t request_id, const Status& error);
  StatusOr<std::vector<pb::JobEvent>> ReadEvents(const std::string& job_id, uint64_t after, size_t limit) const;
  StatusOr<std::vector<pb::MetricPoint>> ReadMetrics(const std::string& job_id, uint64_t after, size_t limit) const;

  // ---- model_registry_requests.cc: list, show, register, promote, archive (authorized, audited)
  void HandleModelRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  // `team`, or the one team `who` may read that has a model `name` (NOT_FOUND / INVALID_ARGUMENT otherwise).
  StatusOr<std::string> ResolveModelTeam(const Principal& who, const std::string& team, const std::string& name) const;
  // ---- pipeline_requests.cc, pipeline_client.cc, pipeline_promote.cc
  class PipelineJobs;  // the PipelineHost: jobs through the submit path
  static std::unique_ptr<PipelineHost> MakePipelineHost(Coordinator* core);
  StatusOr<pb::PipelineRunRecord> ValidatePipelineRun(const std::string& yaml, const std::string& team,
                                                      const Principal& owner,
                                                      const std::map<std::string, std::string>& overrides);
  bool HandlePipelineRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  StatusOr<std::string> PipelineProductionPath(const std::string& team, const std::string& model);
  StatusOr<PromoteOutcome> PipelinePromote(const pb::PipelineRunRecord& run, const pb::PipelineStepRecord& step);
  // The run's train step whose output (or a checkpoint-N in it) an export job merged; none when not found.
  std::optional<pb::JobRecord> TrainJobMergedBy(const pb::PipelineRunRecord& run, const pb::JobRecord& export_job);
  // The admission checks of a prepared submission (name, fit, output directory) and the job's creation.
  StatusOr<Job*> SubmitPrepared(const PreparedSubmit& prepared, std::vector<std::string>* warnings);

  // ---- identity_requests.cc
  std::optional<Principal> AuthenticateClient(const std::string& peer, const pb::ClientRequest& request);
  // Identity requests (whoami, tokens, users, teams, audit); false when `request` is not one.
  bool HandleIdentityRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  // Audits one mutating request and answers it: `reply` when `result` is OK, the error otherwise.
  void AuditAndReply(const Principal& who, const std::string& peer, const pb::ClientRequest& request,
                     const std::string& team, const std::string& target, const Status& result, pb::ClientReply reply,
                     const std::string& done = "");

  CoordinatorOptions options_;
  storage::StateStore* store_;
  Clock* clock_;

  storage::WriteBatch batch_;        // this round's changes, shared by the managers
  std::vector<Outgoing> outbox_;     // sent after batch_ is durable
  std::vector<DeferredRead> reads_;  // answered after batch_ is durable

  JobTable jobs_;
  NodeRegistry nodes_;
  CheckpointRegistry checkpoints_;
  IdentityRegistry identity_;
  AuditLog audit_;
  JoinTokenRegistry join_tokens_;
  std::deque<Watcher> watchers_;
  std::map<uint64_t, PendingLogRequest> log_requests_;
  std::set<std::string> disconnected_jobs_;  // jobs with a task kept on a DOWN node (Job::disconnected_ms)
  std::map<std::pair<std::string, uint64_t>, ReplicaOrders> replications_;  // (job, step) of REPLICATING checkpoints
  TeamUsage usage_;
  bool schedule_dirty_ = true;
  int64_t last_schedule_ms_ = 0;
  // Normalized output_dir -> the job that writes it; entries of ended jobs are dropped when met (jobs.cc).
  std::map<std::string, std::string> output_dirs_;
  ModelRegistry models_;  // model versions: protected from retention and output_dir reuse
  uint64_t next_request_id_ = 1;
  std::unique_ptr<PipelineHost> pipeline_host_;
  PipelineManager pipelines_;
  CoordinatorMetrics metrics_;  // counted from Recover() on (coordinator/metrics.h)

  // ---- schedule_requests.cc (issue 16): schedules fire pipelines; data triggers hash off the loop.
  std::unique_ptr<ScheduleManager> MakeScheduleManager();
  bool HandleScheduleRequest(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  void MutateSchedule(const Principal& who, const std::string& peer, const pb::ClientRequest& request);
  Status CheckDataPath(const std::string& team, const std::string& path) const;
  StatusOr<Principal> ScheduleOwner(const std::string& owner, const std::string& team) const;
  pb::ScheduleReply ScheduleReplyOf(const pb::ScheduleRecord& record, uint32_t next_count) const;
  std::unique_ptr<PipelineLauncher> schedule_launcher_;
  std::unique_ptr<DatasetHasher> dataset_hasher_;
  std::unique_ptr<ScheduleManager> schedules_ = MakeScheduleManager();  // after every member it borrows
};

}  // namespace anneal::coordinator
