// Coordinator benchmark (docs/coordinator.md "Benchmark"). One process: the real Coordinator + Server on a thread
// (real RocksDB with synced writes, real ZeroMQ on loopback), N simulated agents on another thread (a DEALER
// each, registering, heartbeating every 2 s, answering launches with RUNNING then SUCCEEDED reports), and
// clients. Prints one table. Goals: >= 2,000 accepted submissions/s, placement p99 < 10 ms, startup over 100k
// job records < 1 s. The peer row is RocksDB itself: one synced write per submission, no group commit.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <zmq.hpp>

#include "coordinator/clock.h"
#include "common/secret.h"
#include "coordinator/coordinator.h"
#include "coordinator/server.h"
#include "coordinator/store_keys.h"
#include "protocol/anneal.pb.h"
#include "protocol/curve.h"
#include "protocol/framing.h"
#include "storage/state_store.h"

namespace {

// The cluster admin's API token (every submission is authenticated) and the agents' join token.
std::string g_admin_token;
std::string g_join_token;

using namespace anneal;
using Steady = std::chrono::steady_clock;

double Ms(Steady::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

const std::string kSpec =
    "model_name_or_path: /models/tiny\ndataset: alpaca\ndataset_dir: /datasets\noutput_dir: /tmp/anneal-bench-out\n";

// Launch receipt times by job id, filled by the agents' thread.
// The coordinator's CurveZMQ public key in this round; empty: plaintext. Every simulated agent and client pins it.
std::string g_server_key;

void Secure(zmq::socket_t& socket) {
  if (!g_server_key.empty()) protocol::ConfigureCurveClient(socket, g_server_key).IgnoreError();
}

struct LaunchBoard {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Steady::time_point> launched;
  bool Wait(const std::string& job, Steady::time_point* at, int timeout_ms) {
    std::unique_lock<std::mutex> lock(mu);
    bool ok = cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return launched.count(job) > 0; });
    if (ok) *at = launched[job];
    return ok;
  }
};

// N agents on one thread.
class AgentSwarm {
 public:
  AgentSwarm(zmq::context_t& ctx, const std::string& endpoint, int count, LaunchBoard* board) : board_(board) {
    for (int i = 0; i < count; ++i) {
      Agent a;
      a.node_id = fmt::format("node-{:04d}", i);
      a.socket = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
      a.socket->set(zmq::sockopt::linger, 0);
      a.socket->set(zmq::sockopt::rcvtimeo, 0);
      Secure(*a.socket);
      a.socket->connect(endpoint);
      agents_.push_back(std::move(a));
    }
  }

  void Run(std::atomic<bool>* stop, std::atomic<int>* registered) {
    const auto start = Steady::now();
    for (size_t i = 0; i < agents_.size(); ++i) {
      pb::AgentToCoordinator msg;
      auto* reg = msg.mutable_register_();
      reg->set_node_id(agents_[i].node_id);
      reg->set_join_token(g_join_token);
      reg->mutable_inventory()->set_slots(8);
      reg->mutable_inventory()->set_address("127.0.0.1");
      reg->mutable_inventory()->set_rendezvous_port_begin(29500);
      reg->mutable_inventory()->set_rendezvous_port_end(29600);
      protocol::Send(*agents_[i].socket, protocol::MessageKind::kAgentToCoordinator, msg).IgnoreError();
      // Heartbeats staggered over the 2 s interval.
      agents_[i].next_beat = start + std::chrono::milliseconds(2000 * i / agents_.size());
    }
    std::vector<zmq::pollitem_t> items;
    for (auto& a : agents_) items.push_back({a.socket->handle(), 0, ZMQ_POLLIN, 0});
    while (!stop->load()) {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(5));
      for (size_t i = 0; i < agents_.size(); ++i) {
        if (items[i].revents & ZMQ_POLLIN) Drain(agents_[i], registered);
      }
      const auto now = Steady::now();
      for (auto& a : agents_) {
        if (a.session == 0 || now < a.next_beat) continue;
        pb::AgentToCoordinator beat;
        beat.mutable_heartbeat()->set_node_id(a.node_id);
        beat.mutable_heartbeat()->set_session(a.session);
        protocol::Send(*a.socket, protocol::MessageKind::kAgentToCoordinator, beat).IgnoreError();
        a.next_beat = now + std::chrono::seconds(2);
        ++heartbeats_;
      }
    }
  }
  uint64_t heartbeats() const { return heartbeats_; }

 private:
  struct Agent {
    std::string node_id;
    std::unique_ptr<zmq::socket_t> socket;
    uint64_t session = 0;
    uint64_t seq = 0;
    Steady::time_point next_beat;
  };

  void Drain(Agent& a, std::atomic<int>* registered) {
    while (true) {
      auto frames = protocol::Receive(*a.socket, false);
      if (!frames.ok()) return;
      pb::CoordinatorToAgent msg;
      if (!protocol::Parse(*frames, protocol::MessageKind::kCoordinatorToAgent, &msg).ok()) continue;
      if (msg.has_register_reply()) {
        a.session = msg.register_reply().session();
        registered->fetch_add(1);
      } else if (msg.has_launch()) {
        {
          std::lock_guard<std::mutex> lock(board_->mu);
          board_->launched[msg.launch().job_id()] = Steady::now();
        }
        board_->cv.notify_all();
        for (auto state : {pb::TASK_RUNNING, pb::TASK_SUCCEEDED}) {
          pb::AgentToCoordinator report;
          report.mutable_task_update()->set_seq(++a.seq);
          auto* s = report.mutable_task_update()->mutable_status();
          s->set_job_id(msg.launch().job_id());
          s->set_attempt(msg.launch().attempt());
          s->set_epoch(msg.launch().epoch());
          s->set_state(state);
          protocol::Send(*a.socket, protocol::MessageKind::kAgentToCoordinator, report).IgnoreError();
        }
      }
    }
  }

  LaunchBoard* board_;
  std::vector<Agent> agents_;
  uint64_t heartbeats_ = 0;
};


pb::ClientRequest SubmitRequest(uint64_t id) {
  pb::ClientRequest req;
  req.set_request_id(id);
  req.set_token(g_admin_token);
  req.mutable_submit()->set_spec_yaml(kSpec);
  req.mutable_submit()->add_overrides(fmt::format("seed={}", id));  // every submission resolves differently
  // Two active jobs never share an output directory (the coordinator refuses that).
  req.mutable_submit()->add_overrides(fmt::format("output_dir=/tmp/anneal-bench-out/{}", id));
  return req;
}

// Pipelined submissions from `clients` DEALERs with `window` requests in flight each; returns accepted/s.
double SubmitThroughput(zmq::context_t& ctx, const std::string& endpoint, int total, int clients, int window) {
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  const auto start = Steady::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      zmq::socket_t sock(ctx, zmq::socket_type::dealer);
      sock.set(zmq::sockopt::linger, 0);
      sock.set(zmq::sockopt::rcvtimeo, 10000);
      Secure(sock);
      sock.connect(endpoint);
      const int mine = total / clients;
      int sent = 0, done = 0;
      while (done < mine) {
        while (sent < mine && sent - done < window) {
          protocol::Send(sock, protocol::MessageKind::kClientRequest, SubmitRequest(c * 1'000'000 + sent))
              .IgnoreError();
          ++sent;
        }
        auto frames = protocol::Receive(sock, false);
        if (!frames.ok()) break;
        pb::ClientReply reply;
        if (protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok() &&
            reply.error().code() == pb::OK) {
          accepted.fetch_add(1);
        }
        ++done;
      }
    });
  }
  for (auto& t : threads) t.join();
  return accepted.load() / std::chrono::duration<double>(Steady::now() - start).count();
}

// Sequential submit -> LaunchTask at an agent, `count` times.
std::vector<double> PlacementLatencies(zmq::context_t& ctx, const std::string& endpoint, int count,
                                       LaunchBoard* board) {
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::rcvtimeo, 10000);
  Secure(sock);
  sock.connect(endpoint);
  std::vector<double> out;
  for (int i = 0; i < count; ++i) {
    const auto sent = Steady::now();
    protocol::Send(sock, protocol::MessageKind::kClientRequest, SubmitRequest(i + 1)).IgnoreError();
    auto frames = protocol::Receive(sock, false);
    if (!frames.ok()) break;
    pb::ClientReply reply;
    if (!protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok()) break;
    Steady::time_point launched;
    if (!board->Wait(reply.submit().job_id(), &launched, 10000)) break;
    out.push_back(Ms(launched - sent));
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

// The peer: one synced RocksDB write per submission (no group commit).
double SyncedSingleWritesPerSecond(const std::string& dir, int count) {
  auto store = storage::StateStore::Open(dir);
  if (!store.ok()) return 0;
  pb::JobRecord record;
  record.set_spec_yaml(std::string(1500, 'x'));
  const auto start = Steady::now();
  for (int i = 0; i < count; ++i) {
    storage::WriteBatch batch;
    record.set_job_id(fmt::format("job-{:06d}", i));
    batch.Put(storage::Table::kJobs, record.job_id(), record);
    (*store)->Commit(batch).IgnoreError();
  }
  return count / std::chrono::duration<double>(Steady::now() - start).count();
}

// Writes `terminal` finished job records (with an event each) and `active` pending ones, then times
// StateStore::Open + Coordinator::Recover.
double StartupMs(const std::string& dir, int terminal, int active) {
  {
    auto store = storage::StateStore::Open(dir, {.create_if_missing = true, .sync_writes = false});
    if (!store.ok()) return -1;
    pb::JobRecord record;
    record.set_spec_yaml(kSpec + std::string(1200, '#'));
    storage::WriteBatch batch;
    for (int i = 0; i < terminal + active; ++i) {
      record.set_job_id(fmt::format("job-{:06d}", i + 1));
      record.set_submit_seq(i + 1);
      record.set_state(i < terminal ? pb::JOB_SUCCEEDED : pb::JOB_PENDING);
      batch.Put(storage::Table::kJobs, record.job_id(), record);
      pb::JobEvent event;
      event.set_job_id(record.job_id());
      event.set_seq(1);
      batch.Put(storage::Table::kEvents, record.job_id() + std::string(1, '\0') + std::string(7, '\0') + '\1', event);
      if (i >= terminal) batch.PutRaw(storage::Table::kMeta, coordinator::ActiveKey(record.job_id()), "");
      if (batch.count() >= 5000) {
        (*store)->Commit(batch).IgnoreError();
        batch.Clear();
      }
    }
    batch.PutU64(storage::Table::kMeta, coordinator::kNextJobKey, terminal + active + 1);
    (*store)->Commit(batch).IgnoreError();
  }
  const auto start = Steady::now();
  auto store = storage::StateStore::Open(dir);
  if (!store.ok()) return -1;
  coordinator::SystemClock clock;
  coordinator::Coordinator core({}, store->get(), &clock);
  if (!core.Recover().ok()) return -1;
  const double ms = Ms(Steady::now() - start);
  if (core.ActiveJobCount() != static_cast<size_t>(active)) return -1;
  return ms;
}

// One full round (fresh state, coordinator, agents, clients) with CurveZMQ on or off.
struct RoundResult {
  double register_ms = 0, submits_per_s = 0, p50 = 0, p99 = 0;
  int registered = 0;
  size_t samples = 0;
  uint64_t beats = 0;
};

std::optional<RoundResult> RunRound(const std::filesystem::path& dir, bool curve, int agents, int jobs,
                                    int latency_samples, int clients, int window) {
  auto store = storage::StateStore::Open(dir.string());
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return std::nullopt;
  }
  std::optional<protocol::CurveKeyPair> keys;
  if (curve) keys = *protocol::GenerateCurveKeyPair();
  g_server_key = curve ? keys->public_key : "";
  coordinator::SystemClock clock;
  // As in production, every submission's paths are checked (a policy allowing everything walks the same paths).
  coordinator::CoordinatorOptions options;
  auto policy = std::make_shared<jobspec::PathPolicy>();
  policy->defaults = {{"/"}, {"/"}, {"/"}};
  options.path_policy = policy;
  coordinator::Coordinator core(options, store->get(), &clock);
  if (!core.Recover().ok()) return std::nullopt;
  // As in production: clients authenticate with the cluster admin's API token, agents join with a join token.
  auto admin = core.BootstrapAdmin();
  g_join_token = FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes));
  if (!admin.ok() || !core.BootstrapJoinToken(g_join_token).ok() || !core.Flush().ok()) return std::nullopt;
  g_admin_token = *admin;
  coordinator::Server server({.bind = "tcp://127.0.0.1:*", .curve = keys}, &core, &clock);
  if (!server.Bind().ok()) return std::nullopt;
  std::thread loop([&] { server.Run().IgnoreError(); });

  zmq::context_t ctx;
  ctx.set(zmq::ctxopt::max_sockets, agents + 256);
  LaunchBoard board;
  AgentSwarm swarm(ctx, server.endpoint(), agents, &board);
  std::atomic<bool> stop_agents{false};
  std::atomic<int> registered{0};
  const auto reg_start = Steady::now();
  std::thread swarm_thread([&] { swarm.Run(&stop_agents, &registered); });
  while (registered.load() < agents && Ms(Steady::now() - reg_start) < 60000) usleep(10000);
  RoundResult r;
  r.register_ms = Ms(Steady::now() - reg_start);
  r.registered = registered.load();
  auto latencies = PlacementLatencies(ctx, server.endpoint(), latency_samples, &board);
  r.submits_per_s = SubmitThroughput(ctx, server.endpoint(), jobs, clients, window);
  r.beats = swarm.heartbeats();
  stop_agents = true;
  swarm_thread.join();
  server.RequestStop();
  loop.join();
  r.p50 = Percentile(latencies, 0.50);
  r.p99 = Percentile(latencies, 0.99);
  r.samples = latencies.size();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coordinator benchmark"};
  int agents = 1000, jobs = 20000, latency_samples = 1000, clients = 8, window = 128, startup_jobs = 100000;
  app.add_option("--agents", agents, "simulated agents (8 slots each)");
  app.add_option("--jobs", jobs, "submissions in the throughput phase");
  app.add_option("--latency-samples", latency_samples, "sequential submissions timed to their LaunchTask");
  app.add_option("--clients", clients, "concurrent submitting clients");
  app.add_option("--window", window, "requests in flight per client");
  app.add_option("--startup-jobs", startup_jobs, "job records for the startup measurement");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  rlimit limit;
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);

  const auto root = std::filesystem::temp_directory_path() / fmt::format("anneal-coord-bench-{}", getpid());
  std::filesystem::create_directories(root);
  // Both transports in the same run, plaintext first, each on a fresh state directory.
  auto plain = RunRound(root / "plain", false, agents, jobs, latency_samples, clients, window);
  auto curve = RunRound(root / "curve", true, agents, jobs, latency_samples, clients, window);
  if (!plain || !curve) return 1;
  const double peer_per_s = SyncedSingleWritesPerSecond((root / "peer").string(), 500);
  const double startup_ms = StartupMs((root / "startup").string(), startup_jobs - 1000, 1000);
  std::filesystem::remove_all(root);

  std::printf(
      "\nanneal-coordinator benchmark: %d agents x 8 slots heartbeating every 2 s (plaintext: %d registered in "
      "%.0f ms; CurveZMQ: %d registered in %.0f ms)\n\n",
      agents, plain->registered, plain->register_ms, curve->registered, curve->register_ms);
  std::printf("| %-58s | %12s | %12s | %10s | %-4s |\n", "measure", "plaintext", "CurveZMQ", "goal", "ok");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(60, '-').c_str(), std::string(14, '-').c_str(),
              std::string(14, '-').c_str(), std::string(12, '-').c_str(), std::string(6, '-').c_str());
  auto row = [](const std::string& what, const std::string& a, const std::string& b, const std::string& goal, bool ok) {
    std::printf("| %-58s | %12s | %12s | %10s | %-4s |\n", what.c_str(), a.c_str(), b.c_str(), goal.c_str(),
                ok ? "yes" : "NO");
  };
  row(fmt::format("submissions accepted/s (synced, {} clients x {} in flight)", clients, window),
      fmt::format("{:.0f}", plain->submits_per_s), fmt::format("{:.0f}", curve->submits_per_s), ">= 2000",
      curve->submits_per_s >= 2000);
  row(fmt::format("placement latency p50, submit -> LaunchTask ({} samples)", curve->samples),
      fmt::format("{:.2f} ms", plain->p50), fmt::format("{:.2f} ms", curve->p50), "-", true);
  row("placement latency p99", fmt::format("{:.2f} ms", plain->p99), fmt::format("{:.2f} ms", curve->p99), "< 10 ms",
      curve->p99 < 10);
  row("peer: RocksDB, one synced write per submission", fmt::format("{:.0f}", peer_per_s), "", "-", true);
  row(fmt::format("startup over {} job records (1000 active)", startup_jobs), fmt::format("{:.0f} ms", startup_ms), "",
      "< 1000 ms", startup_ms >= 0 && startup_ms < 1000);
  std::printf("\n");
  return 0;
}
