// Test harness for the agent's integration tests: a scripted coordinator (a real ROUTER socket on loopback
// that applies sequenced reports in order, acks them, and records everything), the real anneal-agent binary
// as a child process, and /proc checks for leftover processes.
//
// Thread-safety: single-threaded test helpers. Ownership: AgentProcess kills its process group on
// destruction; ScriptedCoordinator closes its socket.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "protocol/anneal.pb.h"
#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::agent::testing {

using Clock = std::chrono::steady_clock;
using protocol::MessageKind;

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/anneal-agent-it-XXXXXX";
    path = ::mkdtemp(tmpl);
    ::chmod(path.c_str(), 0755);  // an agent running as root starts ranks as nobody: they must reach the work dir
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline uint64_t SeqOf(const pb::AgentToCoordinator& m) {
  switch (m.body_case()) {
    case pb::AgentToCoordinator::kTaskUpdate: return m.task_update().seq();
    case pb::AgentToCoordinator::kCheckpointCommitted: return m.checkpoint_committed().seq();
    case pb::AgentToCoordinator::kMetricBatch: return m.metric_batch().seq();
    case pb::AgentToCoordinator::kCheckpointDeleted: return m.checkpoint_deleted().seq();
    default: return 0;
  }
}

// The scripted coordinator's CurveZMQ keypair (one per test process); AgentProcess pins its public key unless
// the test passes its own --server-key / --server-key-file / --insecure-plaintext.
inline const protocol::CurveKeyPair& TestServerKeys() {
  static const protocol::CurveKeyPair keys = *protocol::GenerateCurveKeyPair();
  return keys;
}

// The coordinator side, scripted by the test (a CurveZMQ server with TestServerKeys()).
class ScriptedCoordinator {
 public:
  ScriptedCoordinator() { Bind("tcp://127.0.0.1:*"); }
  const std::string& endpoint() const { return endpoint_; }

  // Closes the socket: the coordinator is "down".
  void Close() {
    router_.reset();
    agent_id_.reset();
  }
  // Binds again on the same port (the coordinator restarted).
  void Restart() { Bind(endpoint_); }

  // Receives until `pred` matches a message or `timeout_ms` passes. Every message is recorded; sequenced
  // reports are applied when they are the next seq (duplicates and gaps are not applied) and acked.
  std::optional<pb::AgentToCoordinator> WaitFor(const std::function<bool(const pb::AgentToCoordinator&)>& pred,
                                                int timeout_ms = 10000) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      auto m = ReceiveOne(50);
      if (m && pred(*m)) return m;
    }
    return std::nullopt;
  }
  // Keeps receiving (and acking) for `ms`.
  void Pump(int ms) {
    WaitFor([](const pb::AgentToCoordinator&) { return false; }, ms);
  }

  void Send(const pb::CoordinatorToAgent& msg) {
    ASSERT_TRUE(agent_id_.has_value()) << "no agent has talked to the coordinator yet";
    ASSERT_TRUE(protocol::Send(*router_, MessageKind::kCoordinatorToAgent, msg, &*agent_id_).ok());
  }

  static constexpr const char* kCredential =
      "anc_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  bool refuse_registrations = false;  // answer RegisterReply{accepted: false, PERMISSION_DENIED, refusal}
  std::string refusal = "node 'node-a' is already registered and has its own node credential";
  bool auto_ack = true;
  uint64_t applied = 0;                                   // highest seq applied, in order
  std::vector<pb::AgentToCoordinator> applied_reports;    // each seq once
  std::map<uint64_t, std::vector<std::string>> receipts;  // seq -> every received serialization
  std::vector<pb::AgentToCoordinator> all;                // everything received
  std::vector<pb::RegisterRequest> registrations;
  uint64_t session = 0;

 private:
  void Bind(const std::string& where) {
    router_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    router_->set(zmq::sockopt::linger, 0);
    router_->set(zmq::sockopt::rcvtimeo, 50);
    if (!protocol::ConfigureCurveServer(*router_, TestServerKeys()).ok()) ADD_FAILURE() << "no CurveZMQ";
    router_->bind(where);
    endpoint_ = router_->get(zmq::sockopt::last_endpoint);
  }

  std::optional<pb::AgentToCoordinator> ReceiveOne(int timeout_ms) {
    if (!router_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
      return std::nullopt;
    }
    zmq::pollitem_t items[] = {{router_->handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(timeout_ms));
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    auto frames = protocol::Receive(*router_, /*routed=*/true);
    if (!frames.ok()) return std::nullopt;
    pb::AgentToCoordinator m;
    if (!protocol::Parse(*frames, MessageKind::kAgentToCoordinator, &m).ok()) return std::nullopt;
    agent_id_ = frames->routing_id;
    all.push_back(m);
    if (m.has_register_()) {
      registrations.push_back(m.register_());
      pb::CoordinatorToAgent reply;
      if (refuse_registrations) {
        reply.mutable_register_reply()->set_accepted(false);
        reply.mutable_register_reply()->mutable_error()->set_code(pb::PERMISSION_DENIED);
        reply.mutable_register_reply()->mutable_error()->set_message(refusal);
        protocol::Send(*router_, MessageKind::kCoordinatorToAgent, reply, &*agent_id_).IgnoreError();
        return m;
      }
      reply.mutable_register_reply()->set_accepted(true);
      // A new node (no credential yet) is issued one, as the real coordinator does when a join token admits it.
      if (m.register_().node_credential().empty()) reply.mutable_register_reply()->set_node_credential(kCredential);
      reply.mutable_register_reply()->set_session(++session);
      reply.mutable_register_reply()->set_last_acked_seq(applied);
      reply.mutable_register_reply()->set_heartbeat_interval_ms(200);
      Send(reply);
    }
    if (const uint64_t seq = SeqOf(m); seq != 0) {
      receipts[seq].push_back(m.SerializeAsString());
      if (seq == applied + 1) {
        applied = seq;
        applied_reports.push_back(m);
      }
      if (auto_ack && seq <= applied) {
        pb::CoordinatorToAgent ack;
        ack.mutable_ack()->set_seq(applied);
        Send(ack);
      }
    }
    return m;
  }

  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> router_;
  std::string endpoint_;
  std::optional<std::string> agent_id_;
};

// The real anneal-agent binary.
class AgentProcess {
 public:
  static constexpr const char* kJoinToken =
      "anj_0123456789abcdef_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  AgentProcess(const std::string& work_dir, const std::string& coordinator, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {ANNEAL_AGENT_BIN,  "--coordinator", coordinator, "--node",        "node-a",
                                     "--work-dir",      work_dir,        "--slots",   "4",             "--trainer",
                                     FAKE_RANK_BIN,     "--heartbeat-ms", "200",      "--log-level",   "debug",
                                     "--min-free-bytes", "1024"};
    const bool own_security = std::any_of(extra.begin(), extra.end(), [](const std::string& e) {
      return e == "--server-key" || e == "--server-key-file" || e == "--insecure-plaintext";
    });
    if (!own_security) {
      args.push_back("--server-key");
      args.push_back(TestServerKeys().public_key);
    }
    std::filesystem::create_directories(work_dir);
    // A new node joins with a join token (node identity); tests of a node without one pass --no-join-token.
    bool join = true;
    for (auto& e : extra) {
      if (e == "--no-join-token") join = false;
      else args.push_back(e);
    }
    if (join) {
      const std::string token_file = work_dir + "/join-token";
      std::ofstream(token_file) << kJoinToken << "\n";
      ::chmod(token_file.c_str(), 0600);
      args.push_back("--join-token-file");
      args.push_back(token_file);
    }
    log_path = work_dir + "/agent-" + std::to_string(++counter_) + ".stderr";
    pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~AgentProcess() {
    if (pid > 0) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      int st;
      ::waitpid(pid, &st, 0);
    }
  }
  // SIGTERM and wait up to `timeout_ms`; returns the exit status (-1 on timeout, then SIGKILLed).
  int Terminate(int timeout_ms = 10000) {
    ::kill(pid, SIGTERM);
    return Wait(timeout_ms);
  }
  int Wait(int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
    pid = -1;
    return -1;
  }
  // Non-blocking: true (and the exit status in *code) once the agent has exited.
  bool Exited(int* code) {
    int st = 0;
    if (pid <= 0 || ::waitpid(pid, &st, WNOHANG) != pid) return pid <= 0;
    pid = -1;
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return true;
  }
  std::string Log() const { return ReadText(log_path); }

  pid_t pid = -1;
  std::string log_path;

 private:
  static inline int counter_ = 0;
};

// Pids of live (non-zombie) processes whose environment contains `marker` (e.g. "FAKE_MARKER=<dir>").
inline std::vector<pid_t> LiveProcessesWithEnv(const std::string& marker) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  while (dirent* e = dir ? ::readdir(dir) : nullptr) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    const std::string env = ReadText("/proc/" + std::to_string(pid) + "/environ");
    std::string needle = marker;
    needle.push_back('\0');
    if (env.find(needle) == std::string::npos) continue;
    const std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    if (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z') continue;
    out.push_back(static_cast<pid_t>(pid));
  }
  if (dir) ::closedir(dir);
  return out;
}

// Zombie children of `parent` (processes it has not reaped).
inline std::vector<pid_t> ZombieChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  while (dirent* e = dir ? ::readdir(dir) : nullptr) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    const std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (state == "Z" && ppid == parent) out.push_back(static_cast<pid_t>(pid));
  }
  if (dir) ::closedir(dir);
  return out;
}

// Waits until no live process carries `marker`; kills stragglers after the timeout (and fails then).
inline bool WaitNoProcesses(const std::string& marker, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (LiveProcessesWithEnv(marker).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t p : LiveProcessesWithEnv(marker)) ::kill(p, SIGKILL);
  return false;
}

// A LaunchTask for `ranks` local ranks (global = local) of a job with world size `ranks`.
inline pb::CoordinatorToAgent MakeLaunch(const std::string& job, uint64_t epoch, int ranks,
                                         const std::map<std::string, std::string>& env, const std::string& output_dir) {
  pb::CoordinatorToAgent msg;
  pb::LaunchTask* l = msg.mutable_launch();
  l->set_job_id(job);
  l->set_attempt(1);
  l->set_epoch(epoch);
  l->set_kind(pb::JOB_TRAIN);
  for (int r = 0; r < ranks; ++r) {
    pb::RankAssignment* a = l->add_ranks();
    a->set_global_rank(r);
    a->set_local_rank(r);
    a->set_slot(r);
  }
  l->set_world_size(ranks);
  l->set_master_addr("127.0.0.1");
  l->set_master_port(0);
  for (const auto& [k, v] : env) (*l->mutable_env())[k] = v;
  l->set_trainer_config_yaml("model_name_or_path: tiny\noutput_dir: " + output_dir + "\n");
  l->set_output_dir(output_dir);
  l->set_nnodes(1);
  return msg;
}

inline std::function<bool(const pb::AgentToCoordinator&)> TaskStateIs(const std::string& job, pb::TaskState state) {
  return [job, state](const pb::AgentToCoordinator& m) {
    return m.has_task_update() && m.task_update().status().job_id() == job && m.task_update().status().state() == state;
  };
}

}  // namespace anneal::agent::testing
