// Test doubles that speak the real protocol over real ZeroMQ: the anneal-coordinator process (started,
// killed, restarted), a scripted agent (DEALER) and a client (DEALER).
// The coordinator runs with CurveZMQ (its default): Start() reads the "server-key" line it prints and records
// it by endpoint (ServerKeyOf), and Client / ScriptedAgent connect as Curve clients pinning that key. A test
// about the transport itself picks the key (or plaintext) explicitly with a Security value.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "protocol/anneal.pb.h"
#include "common/client_config.h"
#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::itest {

using Clock = std::chrono::steady_clock;

inline int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// The server key each coordinator started by this test process printed, by endpoint.
inline std::map<std::string, std::string>& ServerKeys() {
  static std::map<std::string, std::string> keys;
  return keys;
}
inline std::string ServerKeyOf(const std::string& endpoint) {
  auto it = ServerKeys().find(endpoint);
  return it == ServerKeys().end() ? "" : it->second;
}

// How a test socket connects: the endpoint's recorded key (default), a given key, or plaintext.
struct Security {
  enum Mode { kRecordedKey, kKey, kPlaintext } mode = kRecordedKey;
  std::string key;
  static Security Key(std::string k) { return {kKey, std::move(k)}; }
  static Security Plaintext() { return {kPlaintext, ""}; }
};

// Makes `socket` a Curve client per `security` (before connect). A plaintext coordinator has no recorded key.
inline void ApplySecurity(zmq::socket_t& socket, const std::string& endpoint, const Security& security) {
  std::string key = security.mode == Security::kKey ? security.key : ServerKeyOf(endpoint);
  if (security.mode == Security::kPlaintext || key.empty()) return;
  ASSERT_TRUE(protocol::ConfigureCurveClient(socket, key).ok());
}

// A unique temp dir, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("anneal-coord-itest-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The join token of the coordinator at each endpoint (its bootstrap token), for the scripted agents.
inline std::map<std::string, std::string>& JoinTokens() {
  static std::map<std::string, std::string> tokens;
  return tokens;
}

inline std::string ReadTrimmed(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The anneal-coordinator binary as a child process. Start() waits for its "listening <endpoint>" line. It
// starts with --bootstrap-join-token-file <state_dir>.join-token, so scripted agents can join.
class CoordinatorProcess {
 public:
  CoordinatorProcess(std::string state_dir, std::vector<std::string> extra_flags = {})
      : state_dir_(std::move(state_dir)), extra_(std::move(extra_flags)) {}
  ~CoordinatorProcess() {
    Kill(SIGKILL);
    // Files beside the state dir (a TempDir removes only the directory itself).
    std::error_code ignored;
    for (const std::string& file : {join_token_file(), state_dir_ + ".yaml", client_config()})
      std::filesystem::remove(file, ignored);
  }
  std::string join_token_file() const { return state_dir_ + ".join-token"; }
  std::string join_token() const { return ReadTrimmed(join_token_file()); }

  // bind: "tcp://127.0.0.1:*" picks a port; a restart passes the previous endpoint to keep it.
  void Start(const std::string& bind = "tcp://127.0.0.1:*") {
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    std::vector<std::string> args = {ANNEAL_COORDINATOR_BIN,
                                     "--bind",
                                     bind,
                                     "--state-dir",
                                     state_dir_,
                                     "--log-level",
                                     "warn",
                                     "--bootstrap-admin-config",
                                     client_config(),
                                     "--bootstrap-join-token-file",
                                     join_token_file()};
    if (std::find(extra_.begin(), extra_.end(), "--config") == extra_.end()) {
      // The coordinator needs a path policy; these tests are not about it: every path is allowed.
      const std::string config = state_dir_ + ".yaml";
      std::ofstream(config) << "path_policy: {default: {models: [/], datasets: [/], outputs: [/]}}\n";
      args.insert(args.end(), {"--config", config});
    }
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      dup2(out[1], 1);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_fd_ = out[0];
    std::string line;
    const auto start = Clock::now();
    while (MsSince(start) < 10000) {
      pollfd p{stdout_fd_, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      char c;
      if (read(stdout_fd_, &c, 1) != 1) break;
      if (c == '\n') {
        if (line.rfind("server-key ", 0) == 0) {
          server_key_ = line.substr(11);
        } else if (line.rfind("listening ", 0) == 0) {
          endpoint_ = line.substr(10);
          JoinTokens()[endpoint_] = join_token();
          ServerKeys()[endpoint_] = server_key_;
          if (!expect_http_) return;
        } else if (line.rfind("http ", 0) == 0) {
          http_port_ = std::stoi(line.substr(5));
          return;
        }
        line.clear();
      } else {
        line.push_back(c);
      }
    }
    FAIL() << "anneal-coordinator did not report its endpoint within 10 s";
  }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    last_status_ = status;
    pid_ = -1;
    if (stdout_fd_ >= 0) close(stdout_fd_);
    stdout_fd_ = -1;
  }
  int last_status() const { return last_status_; }
  // With --http-bind among the flags: Start() also waits for the "http <port>" line.
  void expect_http() { expect_http_ = true; }
  int http_port() const { return http_port_; }
  const std::string& endpoint() const { return endpoint_; }
  // Where the coordinator wrote the cluster admin's client config when it bootstrapped the fresh state dir.
  std::string client_config() const { return state_dir_ + "-client.yaml"; }
  // The cluster admin's API token (from that client config).
  std::string admin_token() const {
    auto config = ReadClientConfigFile(client_config());
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    return config.ok() ? config->token : "";
  }
  const std::string& server_key() const { return server_key_; }  // empty with --insecure-plaintext
  pid_t pid() const { return pid_; }

 private:
  std::string server_key_;
  std::string state_dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string endpoint_;
  int last_status_ = 0;
  bool expect_http_ = false;
  int http_port_ = 0;
};

// A client: one DEALER, request/reply.
class Client {
 public:
  Client(zmq::context_t& ctx, const std::string& endpoint, std::string token = "", Security security = {})
      : socket_(ctx, zmq::socket_type::dealer), token_(std::move(token)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvtimeo, 10000);
    ApplySecurity(socket_, endpoint, security);
    socket_.connect(endpoint);
  }
  pb::ClientReply Call(pb::ClientRequest request) {
    request.set_token(token_);
    request.set_request_id(++next_id_);
    EXPECT_TRUE(protocol::Send(socket_, protocol::MessageKind::kClientRequest, request).ok());
    while (true) {
      auto frames = protocol::Receive(socket_, false);
      if (!frames.ok()) {
        ADD_FAILURE() << "no reply: " << frames.status().ToString();
        return {};
      }
      pb::ClientReply reply;
      EXPECT_TRUE(protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok());
      if (reply.request_id() == request.request_id()) return reply;
    }
  }
  std::string Submit(const std::string& yaml) {
    pb::ClientRequest req;
    req.mutable_submit()->set_spec_yaml(yaml);
    auto reply = Call(req);
    EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
    return reply.submit().job_id();
  }
  pb::JobRecord Job(const std::string& id) {
    pb::ClientRequest req;
    req.mutable_get_job()->set_job_id(id);
    return Call(req).get_job().job();
  }
  // Polls GetJob until the state is reached (or the deadline passes); returns the last record.
  pb::JobRecord WaitForState(const std::string& id, pb::JobState state, int64_t timeout_ms = 10000) {
    const auto start = Clock::now();
    pb::JobRecord job;
    while (MsSince(start) < timeout_ms) {
      job = Job(id);
      if (job.state() == state) return job;
      usleep(20000);
    }
    ADD_FAILURE() << id << " never reached " << pb::JobState_Name(state) << "; it is "
                  << pb::JobState_Name(job.state());
    return job;
  }
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
  std::string token_;
  uint64_t next_id_ = 0;
};

// A scripted agent: registers, heartbeats (listing the tasks it was launched with) while the test waits, sends
// sequenced reports and waits for their acks.
class ScriptedAgent {
 public:
  ScriptedAgent(zmq::context_t& ctx, const std::string& endpoint, std::string node_id, uint32_t slots)
      : ctx_(ctx), endpoint_(endpoint), node_id_(std::move(node_id)), slots_(slots) {
    Connect();
  }

  // A new DEALER (a new routing id), as after an agent restart or a reconnect.
  void Connect() {
    socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::rcvtimeo, 50);
    ApplySecurity(*socket_, endpoint_, {});
    socket_->connect(endpoint_);
  }

  // Registers as a real agent does: with its node credential once it has one, else with the join token of
  // the coordinator at the endpoint.
  pb::RegisterReply Register() {
    pb::AgentToCoordinator msg;
    auto* reg = msg.mutable_register_();
    reg->set_node_id(node_id_);
    if (credential_.empty()) reg->set_join_token(JoinTokens()[endpoint_]);
    reg->set_node_credential(credential_);
    reg->set_agent_version("scripted");
    reg->mutable_inventory()->set_slots(slots_);
    reg->mutable_inventory()->set_hostname(node_id_);
    reg->mutable_inventory()->set_address("127.0.0.1");
    reg->mutable_inventory()->set_rendezvous_port_begin(29500);
    reg->mutable_inventory()->set_rendezvous_port_end(29600);
    for (const auto& [job, t] : running_) *reg->add_running_tasks() = t;
    Send(msg);
    auto reply = WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_register_reply(); }, 5000);
    EXPECT_TRUE(reply.has_value()) << node_id_ << ": no RegisterReply";
    if (!reply) return {};
    session_ = reply->register_reply().session();
    if (!reply->register_reply().node_credential().empty()) credential_ = reply->register_reply().node_credential();
    return reply->register_reply();
  }

  void Heartbeat() {
    pb::AgentToCoordinator msg;
    msg.mutable_heartbeat()->set_node_id(node_id_);
    msg.mutable_heartbeat()->set_session(session_);
    for (const auto& [job, t] : running_) *msg.mutable_heartbeat()->add_tasks() = t;
    Send(msg);
    last_beat_ = Clock::now();
  }

  // Reports a task state (next seq, or `seq`), waits for its Ack; returns the seq.
  uint64_t ReportTask(const pb::LaunchTask& launch, pb::TaskState state, uint64_t seq = 0, int exit_code = 0) {
    pb::TaskStatus status;
    status.set_job_id(launch.job_id());
    status.set_attempt(launch.attempt());
    status.set_epoch(launch.epoch());
    status.set_state(state);
    status.set_exit_code(exit_code);
    if (state == pb::TASK_RUNNING || state == pb::TASK_LAUNCHING) running_[launch.job_id()] = status;
    else running_.erase(launch.job_id());
    pb::AgentToCoordinator msg;
    msg.mutable_task_update()->set_seq(seq == 0 ? ++seq_ : seq);
    *msg.mutable_task_update()->mutable_status() = status;
    return SendReport(msg, msg.task_update().seq());
  }

  uint64_t ReportCheckpoint(const pb::LaunchTask& launch, uint64_t step) {
    pb::AgentToCoordinator msg;
    msg.mutable_checkpoint_committed()->set_seq(++seq_);
    auto* c = msg.mutable_checkpoint_committed()->mutable_checkpoint();
    c->set_job_id(launch.job_id());
    c->set_step(step);
    c->set_path(launch.output_dir() + "/checkpoint-" + std::to_string(step));
    c->set_attempt(launch.attempt());
    c->set_epoch(launch.epoch());
    return SendReport(msg, seq_);
  }

  // Waits for a message matching `match`; others are kept for later waits. Heartbeats meanwhile if beating.
  std::optional<pb::CoordinatorToAgent> WaitFor(const std::function<bool(const pb::CoordinatorToAgent&)>& match,
                                                int64_t timeout_ms) {
    const auto start = Clock::now();
    while (true) {
      for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
        if (match(*it)) {
          auto found = *it;
          inbox_.erase(it);
          return found;
        }
      }
      if (MsSince(start) > timeout_ms) return std::nullopt;
      if (beating_ && session_ != 0 && MsSince(last_beat_) >= 200) Heartbeat();
      auto frames = protocol::Receive(*socket_, false);
      if (!frames.ok()) continue;
      pb::CoordinatorToAgent msg;
      if (protocol::Parse(*frames, protocol::MessageKind::kCoordinatorToAgent, &msg).ok()) inbox_.push_back(msg);
    }
  }
  std::optional<pb::LaunchTask> WaitForLaunch(int64_t timeout_ms = 5000) {
    auto m = WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_launch(); }, timeout_ms);
    if (!m) return std::nullopt;
    return m->launch();
  }
  std::optional<pb::StopTask> WaitForStop(int64_t timeout_ms = 5000) {
    auto m = WaitFor([](const pb::CoordinatorToAgent& m) { return m.has_stop(); }, timeout_ms);
    if (!m) return std::nullopt;
    return m->stop();
  }
  // Keeps heartbeating for `ms` (collecting messages).
  void Idle(int64_t ms) { WaitFor([](const pb::CoordinatorToAgent&) { return false; }, ms); }

  void set_beating(bool on) { beating_ = on; }
  void Send(const pb::AgentToCoordinator& msg) {
    EXPECT_TRUE(protocol::Send(*socket_, protocol::MessageKind::kAgentToCoordinator, msg).ok());
  }
  zmq::socket_t& socket() { return *socket_; }
  const std::string& node_id() const { return node_id_; }
  std::deque<pb::CoordinatorToAgent>& inbox() { return inbox_; }

 private:
  uint64_t SendReport(const pb::AgentToCoordinator& msg, uint64_t seq) {
    Send(msg);
    auto ack = WaitFor([&](const pb::CoordinatorToAgent& m) { return m.has_ack() && m.ack().seq() == seq; }, 5000);
    EXPECT_TRUE(ack.has_value()) << node_id_ << ": report seq " << seq << " not acked";
    return seq;
  }

  zmq::context_t& ctx_;
  std::string endpoint_;
  std::string node_id_;
  uint32_t slots_;
  std::unique_ptr<zmq::socket_t> socket_;
  uint64_t session_ = 0;
  std::string credential_;
  uint64_t seq_ = 0;
  bool beating_ = true;
  Clock::time_point last_beat_ = Clock::now();
  std::map<std::string, pb::TaskStatus> running_;
  std::deque<pb::CoordinatorToAgent> inbox_;
};

// Every call names its own output directory: two active jobs never share one (the coordinator refuses that).
// Every path is absolute, as `anneal submit` sends it (the path policy refuses relative ones).
inline std::string Spec(const std::string& extra = "") {
  static int next = 0;
  return "model_name_or_path: /models/tiny\ndataset: alpaca\ndataset_dir: /datasets\noutput_dir: /tmp/anneal-itest-out/" +
         std::to_string(++next) + "\n" + extra;
}

}  // namespace anneal::itest
