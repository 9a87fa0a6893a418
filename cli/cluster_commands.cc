// nodes, drain, up, down, model init.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>

#include "cli/commands.h"
#include "cli/local_cluster.h"
#include "cli/output.h"
#include "cli/settings.h"
#include "protocol/states.h"

namespace anneal::cli {
namespace {

int Nodes(const GlobalOptions& g) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("nodes", client.status());
  pb::ClientRequest req;
  req.mutable_list_nodes();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("nodes", reply.status());
  if (g.json) {
    nlohmann::json nodes = nlohmann::json::array();
    for (const auto& n : reply->list_nodes().nodes()) nodes.push_back(ToJson(n));
    std::cout << nodes.dump(2) << "\n";
    return kExitOk;
  }
  const int64_t now = NowMs();
  Table t({"NODE", "STATE", "SLOTS", "GPUS", "ADDRESS", "HEARTBEAT", "VERSION"});
  for (const auto& n : reply->list_nodes().nodes()) {
    const auto& inv = n.inventory();
    std::string gpus = inv.gpus().empty() ? "-" : fmt::format("{}x {}", inv.gpus_size(), inv.gpus(0).name());
    t.Add({n.node_id(), std::string(protocol::StateName(n.state())), std::to_string(inv.slots()), gpus,
           inv.address().empty() ? "-" : inv.address(), Age(n.last_heartbeat_ms(), now) + " ago",
           n.agent_version().empty() ? "-" : n.agent_version()});
  }
  t.Print(std::cout);
  return kExitOk;
}

int Drain(const GlobalOptions& g, const std::string& node, bool undrain, bool evict) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("drain", client.status());
  pb::ClientRequest req;
  req.mutable_drain()->set_node_id(node);
  req.mutable_drain()->set_undrain(undrain);
  req.mutable_drain()->set_evict(evict);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("drain", reply.status());
  const std::string state = std::string(protocol::StateName(reply->drain().state()));
  const auto& evicted = reply->drain().evicted_job_ids();
  if (g.json) {
    std::cout << nlohmann::json{{"node_id", node},
                                {"state", state},
                                {"evicted_job_ids", std::vector<std::string>(evicted.begin(), evicted.end())}}
                     .dump()
              << "\n";
  } else {
    std::cout << node << ": " << state;
    if (!evicted.empty()) std::cout << "; evicting " << fmt::format("{}", fmt::join(evicted, ", "));
    std::cout << "\n";
  }
  return kExitOk;
}

struct UpOptions {
  std::optional<int> agents;  // unset: the running (or recorded) cluster's, else 1
  std::optional<int> slots;   // unset: the running cluster's, else one per GPU on a GPU machine, else 2 CPU slots
  std::string state_dir;
  std::optional<int> port;
  double wait_s = 30;
  std::vector<std::string> allow_roots;
  std::vector<std::string> coordinator_settings;
  std::vector<std::string> agent_settings;
};

std::string Pids(const std::vector<DaemonProcess>& processes) {
  std::vector<std::string> out;
  for (const auto& p : processes) out.push_back(fmt::format("{} (pid {})", p.name, p.pid));
  return fmt::format("{}", fmt::join(out, ", "));
}

int Up(const GlobalOptions& g, const UpOptions& o) {
  auto home = AnnealHome();
  if (!home.ok()) return ReportError("up", home.status());
  LocalClusterOptions lo;
  lo.agents = o.agents;
  lo.slots = o.slots;
  const int gpus = NvidiaGpuCount();
  lo.default_slots = gpus > 0 ? 0 : 2;
  lo.state_dir = o.state_dir.empty() ? *home : o.state_dir;
  lo.port = o.port;
  lo.wait = std::chrono::milliseconds(static_cast<int64_t>(o.wait_s * 1000));
  lo.client_config = ClientConfigPath(*home);
  lo.allow_roots = o.allow_roots;
  lo.coordinator_settings = o.coordinator_settings;
  lo.agent_settings = o.agent_settings;
  auto up = UpLocalCluster(lo, std::cerr);
  if (!up.ok()) {
    const Status& st = up.status();
    return ReportError("up",
                       st.code() == StatusCode::kInvalidArgument ? st : Status(StatusCode::kInternal, st.message()));
  }
  const LocalCluster& cluster = up->cluster;
  // The coordinator wrote the admin's credential there when it bootstrapped; the address and key may be new.
  if (Status st = UpdateClientConfig(*home, cluster.coordinator, cluster.server_key); !st.ok()) {
    return ReportError("up", st);
  }
  const char* outcome = up->outcome == UpOutcome::kStarted          ? "started"
                        : up->outcome == UpOutcome::kAlreadyRunning ? "already_running"
                                                                    : "healed";
  if (g.json) {
    nlohmann::json j = {{"outcome", outcome},
                        {"coordinator", cluster.coordinator},
                        {"state_dir", lo.state_dir},
                        {"restarted", up->restarted},
                        {"processes", nlohmann::json::array()}};
    for (const auto& p : cluster.processes)
      j["processes"].push_back({{"name", p.name}, {"pid", p.pid}, {"log", p.log}});
    std::cout << j.dump(2) << "\n";
    return kExitOk;
  }
  const std::string slots =
      cluster.slots > 0 ? fmt::format("{} slot(s)", cluster.slots) : fmt::format("{} GPU(s)", gpus);
  const std::string shape = fmt::format("coordinator {}, {} agent(s) x {}", cluster.coordinator, cluster.agents, slots);
  switch (up->outcome) {
    case UpOutcome::kStarted:
      std::cout << "local cluster up: " << shape << "\n";
      break;
    case UpOutcome::kAlreadyRunning:
      std::cout << "local cluster already running, nothing to do: " << shape << "\n"
                << "running: " << Pids(cluster.processes) << "\n";
      break;
    case UpOutcome::kHealed: {
      std::vector<DaemonProcess> restarted, kept;
      for (const auto& p : cluster.processes) {
        const bool was_restarted = std::find(up->restarted.begin(), up->restarted.end(), p.name) != up->restarted.end();
        (was_restarted ? restarted : kept).push_back(p);
      }
      std::cout << "local cluster healed: " << shape << "\n"
                << "restarted: " << Pids(restarted) << "\n"
                << "kept running: " << (kept.empty() ? "-" : Pids(kept)) << "\n";
      break;
    }
  }
  std::cout << fmt::format("state {}, logs {}/logs, client config {}\n", lo.state_dir, lo.state_dir,
                           ClientConfigPath(*home))
            << "stop it with: anneal down\n";
  return kExitOk;
}

int Down(const std::string& state_dir_flag, double grace_s) {
  auto home = AnnealHome();
  if (!home.ok()) return ReportError("down", home.status());
  const std::string state_dir = state_dir_flag.empty() ? *home : state_dir_flag;
  Status st = StopLocalCluster(state_dir, std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)), std::cout);
  if (!st.ok())
    return ReportError("down", st.code() == StatusCode::kNotFound ? Status(StatusCode::kInternal, st.message()) : st);
  return kExitOk;
}

int ModelInit(const std::vector<std::string>& args) {
  const std::string trainer = SelfDir() + "/anneal-train";
  if (::access(trainer.c_str(), X_OK) != 0) {
    std::cerr << "anneal model init: the trainer was not built: " << trainer
              << " does not exist (configure with LibTorch and build the anneal-train target)\n";
    return kExitFailed;
  }
  std::vector<std::string> argv = {trainer, "model", "init"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::cout.flush();
  ::execv(trainer.c_str(), cargv.data());
  std::cerr << "anneal model init: cannot run " << trainer << ": " << std::strerror(errno) << "\n";
  return kExitFailed;
}

}  // namespace

void AddNodeCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  app.add_subcommand("nodes", "List the cluster's nodes")->callback([&g, action] {
    *action = [&g] { return Nodes(g); };
  });
  auto node = std::make_shared<std::string>();
  auto* drain = app.add_subcommand("drain", "Stop placing new jobs on a node (running jobs continue)");
  drain->add_option("node", *node, "node name")->required();
  auto undrain = std::make_shared<bool>(false);
  drain->add_flag("--undrain", *undrain, "put a draining node back into service (it gets placements again)");
  auto evict = std::make_shared<bool>(false);
  drain->add_flag("--evict", *evict,
                  "also preempt its running jobs: they checkpoint and go back to the queue (not an attempt)");
  drain->callback([&g, node, undrain, evict, action] {
    *action = [&g, node, undrain, evict] { return Drain(g, *node, *undrain, *evict); };
  });
}

void AddClusterCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  {
    auto o = std::make_shared<UpOptions>();
    auto* cmd = app.add_subcommand("up",
                                   "Start a local cluster (a coordinator and N agents on this machine), or "
                                   "restart the daemons of a running one that are gone");
    cmd->add_option("--agents", o->agents, "agents (nodes) to start (default: the recorded cluster's, else 1)");
    cmd->add_option("--slots", o->slots,
                    "rank slots per agent (default: the recorded cluster's, else one per GPU on a GPU machine, "
                    "else 2 CPU slots)");
    cmd->add_option("--state-dir", o->state_dir, "state, logs and cluster.yaml (default ~/.anneal)");
    cmd->add_option("--port", o->port, "coordinator port (default: a free one)");
    cmd->add_option("--wait", o->wait_s, "seconds to wait for the agents to register")->capture_default_str();
    cmd->add_option("--allow-root", o->allow_roots,
                    "a directory jobs may read models/datasets from and write outputs to, besides the anneal home "
                    "and the directory anneal up runs in (repeatable)");
    cmd->add_option("--coordinator-set", o->coordinator_settings,
                    "a coordinator setting KEY=VALUE written into its coordinator.yaml, e.g. min_runtime_ms=0 "
                    "(repeatable; docs/coordinator.md lists the keys)");
    cmd->add_option("--agent-set", o->agent_settings,
                    "an agent setting KEY=VALUE written into agent.yaml, which every agent reads, e.g. "
                    "metrics_bind=127.0.0.1:0 (repeatable; docs/agent.md lists the keys)");
    cmd->callback([&g, o, action] { *action = [&g, o] { return Up(g, *o); }; });
  }
  {
    auto dir = std::make_shared<std::string>();
    auto grace = std::make_shared<double>(10.0);
    auto* cmd = app.add_subcommand("down", "Stop the local cluster started by anneal up");
    cmd->add_option("--state-dir", *dir, "the directory given to anneal up (default ~/.anneal)");
    cmd->add_option("--grace", *grace, "seconds between SIGTERM and SIGKILL")->capture_default_str();
    cmd->callback([dir, grace, action] { *action = [dir, grace] { return Down(*dir, *grace); }; });
  }
}

void AddModelCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  auto* model = app.add_subcommand("model", "Model utilities (run by anneal-train)");
  model->require_subcommand(1);
  auto args = std::make_shared<std::vector<std::string>>();
  auto* init = model->add_subcommand("init", "Create a small random model directory: anneal-train model init ARGS");
  // Everything after `init` belongs to anneal-train: no option of ours is parsed there.
  init->prefix_command();
  init->allow_extras();
  init->fallthrough(false);
  init->callback([init, args, action] {
    *args = init->remaining();
    *action = [args] { return ModelInit(*args); };
  });
}

}  // namespace anneal::cli
