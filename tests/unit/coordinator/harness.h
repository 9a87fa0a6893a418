// Test harness: a Coordinator over a real StateStore in a temp dir, driven with a FakeClock. Agents and
// clients are just routing ids; the test reads what Flush() would have sent.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "coordinator/clock.h"
#include "coordinator/coordinator.h"
#include "storage/state_store.h"

namespace anneal::coordinator::testing {

// Every call names its own output directory: two active jobs never share one (the coordinator refuses that).
inline std::string BaseSpec(const std::string& extra = "") {
  static int next = 0;
  return "model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: /out/run-" + std::to_string(++next) + "\n" +
         extra;
}

class Harness {
 public:
  explicit Harness(CoordinatorOptions options = {}) : options_(std::move(options)) {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("anneal-coord-test-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
    Open();
  }
  ~Harness() {
    core_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Simulates kill -9 + restart: whatever Flush committed is all that survives.
  void Restart() {
    core_.reset();
    store_.reset();
    Open();
  }

  Coordinator& core() { return *core_; }
  FakeClock& clock() { return clock_; }
  storage::StateStore& store() { return *store_; }

  // One loop round: Tick + Flush; the messages sent are kept for inspection (replacing the last round's).
  void Round() {
    core_->Tick();
    auto out = core_->Flush();
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    sent_ = std::move(*out);
  }
  void Advance(int64_t ms) {
    clock_.Advance(ms);
    Round();
  }

  static std::string Peer(const std::string& node) { return "peer-" + node; }

  // A RegisterRequest as a real agent sends it: its node credential once it has one, else the harness's join
  // token (created on first use through the client channel).
  static pb::AgentToCoordinator RegisterMessage(const std::string& node, uint32_t slots,
                                                std::vector<pb::TaskStatus> running = {}, uint32_t port_begin = 29500,
                                                uint32_t port_end = 29510) {
    pb::AgentToCoordinator msg;
    auto* reg = msg.mutable_register_();
    reg->set_node_id(node);
    reg->mutable_inventory()->set_slots(slots);
    reg->mutable_inventory()->set_address(node + ".cluster");
    reg->mutable_inventory()->set_hostname(node);
    reg->mutable_inventory()->set_rendezvous_port_begin(port_begin);
    reg->mutable_inventory()->set_rendezvous_port_end(port_end);
    for (auto& t : running) *reg->add_running_tasks() = t;
    return msg;
  }
  void Register(const std::string& node, uint32_t slots, std::vector<pb::TaskStatus> running = {},
                uint32_t port_begin = 29500, uint32_t port_end = 29510) {
    pb::AgentToCoordinator msg = RegisterMessage(node, slots, std::move(running), port_begin, port_end);
    if (credentials_.count(node)) {
      msg.mutable_register_()->set_node_credential(credentials_[node]);
    } else {
      msg.mutable_register_()->set_join_token(JoinToken());
    }
    SendRegister(node, msg);
  }
  // Sends `msg` from the node's peer as is, one round; keeps the session and any credential it was given.
  void SendRegister(const std::string& node, const pb::AgentToCoordinator& msg, const std::string& peer = "") {
    core_->OnAgentMessage(peer.empty() ? Peer(node) : peer, msg);
    Round();
    for (const auto& m : AgentMessages(node)) {
      if (m.has_register_reply() && m.register_reply().accepted()) {
        sessions_[node] = m.register_reply().session();
        if (!m.register_reply().node_credential().empty()) credentials_[node] = m.register_reply().node_credential();
      }
    }
  }
  // The harness's join token (a 24 h one, created through the client channel on first use).
  std::string JoinToken() {
    if (join_token_.empty()) {
      pb::ClientRequest req;
      req.mutable_create_join_token();
      join_token_ = Call(req, "admin").create_join_token().token();
      EXPECT_FALSE(join_token_.empty());
    }
    return join_token_;
  }
  std::string Credential(const std::string& node) { return credentials_[node]; }
  uint64_t NextSeq(const std::string& node) { return ++seqs_[node]; }
  void ForgetCredential(const std::string& node) { credentials_.erase(node); }
  // The register reply (or error) last sent to the node's peer.
  pb::RegisterReply LastRegisterReply(const std::string& node) const {
    for (const auto& m : AgentMessages(node)) {
      if (m.has_register_reply()) return m.register_reply();
    }
    return {};
  }

  void Heartbeat(const std::string& node, std::vector<pb::TaskStatus> tasks = {}) {
    pb::AgentToCoordinator msg;
    msg.mutable_heartbeat()->set_node_id(node);
    msg.mutable_heartbeat()->set_session(sessions_[node]);
    for (auto& t : tasks) *msg.mutable_heartbeat()->add_tasks() = t;
    core_->OnAgentMessage(Peer(node), msg);
  }

  // Sends a sequenced TaskUpdate with the node's next seq (or `seq` when given); returns the seq used.
  uint64_t ReportTask(const std::string& node, const pb::TaskStatus& status, uint64_t seq = 0) {
    if (seq == 0) seq = ++seqs_[node];
    pb::AgentToCoordinator msg;
    msg.mutable_task_update()->set_seq(seq);
    *msg.mutable_task_update()->mutable_status() = status;
    core_->OnAgentMessage(Peer(node), msg);
    Round();
    return seq;
  }

  // Reports a checkpoint of the job's current attempt (its epoch) under the job's output dir.
  uint64_t ReportCheckpoint(const std::string& node, const std::string& job, uint64_t step,
                            std::map<std::string, double> metrics = {}) {
    const uint64_t seq = ++seqs_[node];
    pb::AgentToCoordinator msg;
    msg.mutable_checkpoint_committed()->set_seq(seq);
    auto* c = msg.mutable_checkpoint_committed()->mutable_checkpoint();
    const pb::JobRecord record = Job(job);
    c->set_job_id(job);
    c->set_step(step);
    c->set_epoch(record.epoch());
    c->set_attempt(record.attempt());
    c->set_path(Job(job).output_dir() + "/checkpoint-" + std::to_string(step));
    for (auto& [k, v] : metrics) (*c->mutable_metrics())[k] = v;
    core_->OnAgentMessage(Peer(node), msg);
    Round();
    return seq;
  }

  void ReportCheckpointDeleted(const std::string& node, const std::string& job, uint64_t step, bool ok) {
    pb::AgentToCoordinator msg;
    msg.mutable_checkpoint_deleted()->set_seq(++seqs_[node]);
    msg.mutable_checkpoint_deleted()->set_job_id(job);
    msg.mutable_checkpoint_deleted()->set_step(step);
    msg.mutable_checkpoint_deleted()->set_ok(ok);
    core_->OnAgentMessage(Peer(node), msg);
    Round();
  }

  // The cluster admin's token (bootstrapped on the fresh store); requests without a token are sent with it.
  const std::string& admin_token() const { return admin_token_; }

  pb::ClientReply Call(pb::ClientRequest request, const std::string& client = "client-1") {
    if (request.token().empty()) request.set_token(admin_token_);
    return CallExactly(std::move(request), client);
  }
  // Sends the request with exactly its token (none when empty).
  pb::ClientReply CallExactly(pb::ClientRequest request, const std::string& client = "client-1") {
    request.set_request_id(++request_id_);
    core_->OnClientRequest(client, request);
    Round();
    for (auto& m : sent_) {
      if (m.routing_id == client && std::holds_alternative<pb::ClientReply>(m.message)) {
        return std::get<pb::ClientReply>(m.message);
      }
    }
    ADD_FAILURE() << "no reply to client request " << request.ShortDebugString();
    return {};
  }

  // Submits (to `team` when set) and expects success; returns the job id.
  std::string Submit(const std::string& yaml, const std::string& team = "") {
    pb::ClientRequest req;
    req.mutable_submit()->set_spec_yaml(yaml);
    if (!team.empty()) req.mutable_submit()->set_team(team);
    pb::ClientReply reply = Call(req);
    EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
    return reply.submit().job_id();
  }

  pb::ClientReply Cancel(const std::string& job) {
    pb::ClientRequest req;
    req.mutable_cancel()->set_job_id(job);
    return Call(req);
  }

  pb::JobRecord Job(const std::string& id) {
    auto r = core_->GetJobRecord(id);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : pb::JobRecord();
  }
  pb::JobState State(const std::string& id) { return Job(id).state(); }

  std::vector<pb::CoordinatorToAgent> AgentMessages(const std::string& node) const {
    std::vector<pb::CoordinatorToAgent> out;
    for (const auto& m : sent_) {
      if (m.routing_id == Peer(node) && std::holds_alternative<pb::CoordinatorToAgent>(m.message)) {
        out.push_back(std::get<pb::CoordinatorToAgent>(m.message));
      }
    }
    return out;
  }
  std::vector<pb::LaunchTask> Launches(const std::string& node) const {
    std::vector<pb::LaunchTask> out;
    for (auto& m : AgentMessages(node)) if (m.has_launch()) out.push_back(m.launch());
    return out;
  }
  std::vector<pb::StopTask> Stops(const std::string& node) const {
    std::vector<pb::StopTask> out;
    for (auto& m : AgentMessages(node)) if (m.has_stop()) out.push_back(m.stop());
    return out;
  }
  std::vector<uint64_t> Acks(const std::string& node) const {
    std::vector<uint64_t> out;
    for (auto& m : AgentMessages(node)) if (m.has_ack()) out.push_back(m.ack().seq());
    return out;
  }
  const std::vector<Outgoing>& sent() const { return sent_; }

  static pb::TaskStatus Task(const pb::JobRecord& job, pb::TaskState state, int exit_code = 0) {
    pb::TaskStatus t;
    t.set_job_id(job.job_id());
    t.set_attempt(job.attempt());
    t.set_epoch(job.epoch());
    t.set_state(state);
    t.set_exit_code(exit_code);
    return t;
  }
  // Reports `state` for the job's task on every node of its placement.
  void ReportAll(const std::string& job_id, pb::TaskState state) {
    pb::JobRecord job = Job(job_id);
    for (const auto& n : job.placement().nodes()) ReportTask(n.node_id(), Task(job, state));
  }

  std::vector<pb::JobEvent> Events(const std::string& job_id) {
    std::vector<pb::JobEvent> out;
    EXPECT_TRUE(store_->ScanRecords<pb::JobEvent>(storage::Table::kEvents, job_id + std::string(1, '\0'),
                                                  [&](const pb::JobEvent& e) {
                                                    out.push_back(e);
                                                    return true;
                                                  }).ok());
    return out;
  }

 private:
  void Open() {
    // No fsync in unit tests: Restart() closes the store cleanly, so durability is not what they measure.
    auto store = storage::StateStore::Open(dir_.string(), {.create_if_missing = true, .sync_writes = false});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
    core_ = std::make_unique<Coordinator>(options_, store_.get(), &clock_);
    ASSERT_TRUE(core_->Recover().ok());
    if (!core_->HasUsers()) {
      auto token = core_->BootstrapAdmin("admin");
      ASSERT_TRUE(token.ok()) << token.status().ToString();
      admin_token_ = *token;
      ASSERT_TRUE(core_->Flush().ok());
    }
    sent_.clear();
  }

  CoordinatorOptions options_;
  std::filesystem::path dir_;
  FakeClock clock_;
  std::unique_ptr<storage::StateStore> store_;
  std::unique_ptr<Coordinator> core_;
  std::vector<Outgoing> sent_;
  std::map<std::string, uint64_t> sessions_;
  std::map<std::string, uint64_t> seqs_;
  std::map<std::string, std::string> credentials_;
  std::string join_token_;
  uint64_t request_id_ = 0;
  std::string admin_token_;
};

}  // namespace anneal::coordinator::testing
