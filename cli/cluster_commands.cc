// nodes, drain, up, down, model init.
#include <unistd.h>

#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "cli/local_cluster.h"
#include "cli/output.h"
#include "protocol/states.h"
#include "cli/settings.h"

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

int Drain(const GlobalOptions& g, const std::string& node, bool undrain) {
  auto client = MakeClient(g);
  if (!client.ok()) return ReportError("drain", client.status());
  pb::ClientRequest req;
  req.mutable_drain()->set_node_id(node);
  req.mutable_drain()->set_undrain(undrain);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return ReportError("drain", reply.status());
  const std::string state = std::string(protocol::StateName(reply->drain().state()));
  if (g.json) std::cout << nlohmann::json{{"node_id", node}, {"state", state}}.dump() << "\n";
  else std::cout << node << ": " << state << "\n";
  return kExitOk;
}

struct UpOptions {
  int agents = 1;
  int slots = 0;  // 0: one per GPU on a GPU machine, else 2 CPU slots
  std::string state_dir;
  int port = 0;
  double wait_s = 30;
};

int Up(const GlobalOptions& g, const UpOptions& o) {
  auto home = AnnealHome();
  if (!home.ok()) return ReportError("up", home.status());
  LocalClusterOptions lo;
  lo.agents = o.agents;
  const int gpus = NvidiaGpuCount();
  lo.slots = o.slots > 0 ? o.slots : (gpus > 0 ? 0 : 2);
  lo.state_dir = o.state_dir.empty() ? *home : o.state_dir;
  lo.port = o.port;
  lo.wait = std::chrono::milliseconds(static_cast<int64_t>(o.wait_s * 1000));
  auto cluster = StartLocalCluster(lo, std::cerr);
  if (!cluster.ok()) {
    const Status& st = cluster.status();
    return ReportError("up", st.code() == StatusCode::kInvalidArgument ? st : Status(StatusCode::kInternal, st.message()));
  }
  if (Status st = WriteClientConfig(*home, cluster->coordinator, cluster->token); !st.ok()) {
    return ReportError("up", st);
  }
  if (g.json) {
    nlohmann::json j = {{"coordinator", cluster->coordinator}, {"state_dir", lo.state_dir},
                        {"processes", nlohmann::json::array()}};
    for (const auto& p : cluster->processes) j["processes"].push_back({{"name", p.name}, {"pid", p.pid}, {"log", p.log}});
    std::cout << j.dump(2) << "\n";
  } else {
    const std::string slots = lo.slots > 0 ? fmt::format("{} slot(s)", lo.slots) : fmt::format("{} GPU(s)", gpus);
    std::cout << fmt::format("local cluster up: coordinator {}, {} agent(s) x {}\n", cluster->coordinator, o.agents,
                             slots)
              << fmt::format("state {}, logs {}/logs, client config {}\n", lo.state_dir, lo.state_dir,
                             ClientConfigPath(*home))
              << "stop it with: anneal down\n";
  }
  return kExitOk;
}

int Down(const std::string& state_dir_flag, double grace_s) {
  auto home = AnnealHome();
  if (!home.ok()) return ReportError("down", home.status());
  const std::string state_dir = state_dir_flag.empty() ? *home : state_dir_flag;
  Status st = StopLocalCluster(state_dir, std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)), std::cout);
  if (!st.ok()) return ReportError("down", st.code() == StatusCode::kNotFound ? Status(StatusCode::kInternal, st.message()) : st);
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
  drain->callback([&g, node, undrain, action] { *action = [&g, node, undrain] { return Drain(g, *node, *undrain); }; });
}

void AddClusterCommands(CLI::App& app, GlobalOptions& g, Action* action) {
  {
    auto o = std::make_shared<UpOptions>();
    auto* cmd = app.add_subcommand("up", "Start a local cluster: a coordinator and N agents on this machine");
    cmd->add_option("--agents", o->agents, "agents (nodes) to start")->capture_default_str();
    cmd->add_option("--slots", o->slots,
                    "rank slots per agent (default: one per GPU on a GPU machine, else 2 CPU slots)");
    cmd->add_option("--state-dir", o->state_dir, "state, logs and cluster.yaml (default ~/.anneal)");
    cmd->add_option("--port", o->port, "coordinator port (default: a free one)");
    cmd->add_option("--wait", o->wait_s, "seconds to wait for the agents to register")->capture_default_str();
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
