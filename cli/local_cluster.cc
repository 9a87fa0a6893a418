#include "cli/local_cluster.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "cli/client.h"
#include "common/client_config.h"
#include "common/fsutil.h"
#include "common/net.h"
#include "common/secret.h"
#include "jobspec/path_policy.h"
#include "protocol/curve.h"

namespace anneal::cli {
namespace fs = std::filesystem;
namespace {

std::string ClusterFile(const std::string& state_dir) {
  return state_dir + "/cluster.yaml";
}

// The coordinator writes its CurveZMQ public key here at its first start (protocol/curve.h).
std::string ServerKeyFile(const std::string& state_dir) {
  return state_dir + "/coordinator/" + protocol::kCurvePublicKeyFile;
}

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The port of "tcp://HOST:PORT"; 0 when there is none.
int PortOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return 0;
  try {
    return std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
    return 0;
  }
}

std::string SlotsText(int slots) {
  return slots > 0 ? fmt::format("{} slot(s)", slots) : "one rank per GPU";
}

Status WriteClusterFile(const std::string& state_dir, const LocalCluster& c) {
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "coordinator" << YAML::Value << c.coordinator << YAML::Key << "agents"
    << YAML::Value << c.agents << YAML::Key << "slots" << YAML::Value << c.slots << YAML::Key << "processes"
    << YAML::Value << YAML::BeginSeq;
  for (const auto& p : c.processes) {
    e << YAML::BeginMap << YAML::Key << "name" << YAML::Value << p.name;
    if (!p.node.empty()) e << YAML::Key << "node" << YAML::Value << p.node;
    e << YAML::Key << "pid" << YAML::Value << p.pid << YAML::Key << "program" << YAML::Value << p.program << YAML::Key
      << "log" << YAML::Value << p.log << YAML::Key << "argv" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& a : p.argv) e << YAML::DoubleQuoted << a;
    e << YAML::EndSeq << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::EndMap;
  // Written whole, then renamed: a crash never leaves half a record of running daemons.
  const std::string path = ClusterFile(state_dir), tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  out << "# written by `anneal up`: `anneal down` stops these processes, `anneal up` restarts the ones gone\n"
      << e.c_str() << "\n";
  std::error_code ec;
  if (!out.flush()) return InternalError(fmt::format("cannot write {}", tmp));
  out.close();
  fs::rename(tmp, path, ec);
  if (ec) return InternalError(fmt::format("cannot write {}: {}", path, ec.message()));
  return Status::Ok();
}

// The recorded cluster. A file written by an older `anneal up` has no command lines: `legacy` is then true.
struct Recorded {
  LocalCluster cluster;
  bool legacy = false;
};

StatusOr<Recorded> ReadClusterFile(const std::string& state_dir) {
  const std::string path = ClusterFile(state_dir);
  if (!fs::exists(path)) return NotFoundError(fmt::format("no local cluster recorded in {}", path));
  Recorded r;
  LocalCluster& c = r.cluster;
  try {
    YAML::Node root = YAML::LoadFile(path);
    c.coordinator = root["coordinator"].as<std::string>("");
    c.slots = root["slots"].as<int>(0);
    for (const auto& p : root["processes"]) {
      DaemonProcess d{p["name"].as<std::string>(""),
                      p["program"].as<std::string>(""),
                      p["pid"].as<pid_t>(0),
                      p["log"].as<std::string>(""),
                      p["argv"].as<std::vector<std::string>>(std::vector<std::string>{}),
                      p["node"].as<std::string>("")};
      if (d.argv.empty()) r.legacy = true;
      if (!d.node.empty()) ++c.agents;
      c.processes.push_back(std::move(d));
    }
    r.legacy = r.legacy || !root["agents"];
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(fmt::format("{}: malformed: {}", path, e.what()));
  }
  if (auto key = protocol::ReadCurveKeyFile(ServerKeyFile(state_dir)); key.ok()) c.server_key = *key;
  return r;
}

// Polls ListNodes until every node in `nodes` is UP (or DRAINING) with a registration at or after `since_ms`;
// fails early when a daemon in `started` (this process's children) exits.
Status WaitForAgents(const LocalCluster& c, const std::string& client_config, const std::vector<std::string>& nodes,
                     int64_t since_ms, const std::vector<DaemonProcess>& started, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  size_t ready = 0;
  Status last = Status::Ok();
  while (std::chrono::steady_clock::now() < deadline) {
    for (const DaemonProcess& p : started) {
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
        std::string how = WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                            : fmt::format("was killed by signal {}", WTERMSIG(status));
        return UnavailableError(fmt::format("{} {} during start-up{}", p.name, how, LogTail(p.log)));
      }
    }
    // Re-read each time: a fresh coordinator writes the admin's credential there once it has bootstrapped.
    auto config = ReadClientConfigFile(client_config);
    CoordinatorClient client(c.coordinator, config.ok() ? config->token : "", std::chrono::milliseconds(1000),
                             {.server_key = c.server_key, .server_key_from = "the local coordinator's curve.pub"});
    pb::ClientRequest req;
    req.mutable_list_nodes();
    auto reply = client.Call(req);
    if (reply.ok()) {
      std::set<std::string> registered;
      for (const auto& n : reply->list_nodes().nodes()) {
        const bool serving = n.state() == pb::NODE_UP || n.state() == pb::NODE_DRAINING;
        if (serving && n.registered_at_ms() >= since_ms) registered.insert(n.node_id());
      }
      ready = std::count_if(nodes.begin(), nodes.end(), [&](const std::string& n) { return registered.count(n); });
      if (ready == nodes.size()) return Status::Ok();
    } else {
      last = reply.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string detail = ready > 0 ? fmt::format("only {} of {} agents registered", ready, nodes.size())
                                 : (last.ok() ? "no agent registered" : last.message());
  std::string tails;
  for (const DaemonProcess& p : started) tails += LogTail(p.log, 8);
  return DeadlineExceededError(
      fmt::format("the local cluster did not come up within {} s: {}{}", wait.count() / 1000.0, detail, tails));
}

// Waits for the coordinator's public key file (written at its first start, before it listens); fails early when
// the coordinator exits.
StatusOr<std::string> WaitForServerKey(const std::string& path, const DaemonProcess& coordinator,
                                       std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  Status last = NotFoundError(fmt::format("{} was not written", path));
  while (std::chrono::steady_clock::now() < deadline) {
    auto key = protocol::ReadCurveKeyFile(path);
    if (key.ok()) return *key;
    last = key.status();
    int status = 0;
    if (::waitpid(coordinator.pid, &status, WNOHANG) == coordinator.pid) {
      std::string how = WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                          : fmt::format("was killed by signal {}", WTERMSIG(status));
      return UnavailableError(fmt::format("{} {} during start-up{}", coordinator.name, how, LogTail(coordinator.log)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return DeadlineExceededError(
      fmt::format("the coordinator's public key: {}{}", last.message(), LogTail(coordinator.log)));
}

Status CheckExecutable(const std::string& program) {
  if (::access(program.c_str(), X_OK) == 0) return Status::Ok();
  return FailedPreconditionError(
      fmt::format("{} not found next to anneal (build the {} target)", program, fs::path(program).filename().string()));
}

// INVALID_ARGUMENT when an explicit --agents, --slots or --port contradicts the running cluster.
Status CheckRequestAgrees(const LocalClusterOptions& o, const LocalCluster& c) {
  std::vector<std::string> conflicts;
  if (o.agents && *o.agents != c.agents) {
    conflicts.push_back(fmt::format("--agents {} (it runs {} agent(s))", *o.agents, c.agents));
  }
  if (o.slots && *o.slots != c.slots) {
    conflicts.push_back(fmt::format("--slots {} (its agents have {})", *o.slots, SlotsText(c.slots)));
  }
  if (o.port && *o.port != 0 && *o.port != PortOf(c.coordinator)) {
    conflicts.push_back(fmt::format("--port {} (its coordinator is at {})", *o.port, c.coordinator));
  }
  if (conflicts.empty()) return Status::Ok();
  return InvalidArgumentError(fmt::format(
      "a local cluster of {} agent(s) x {} is running in {} and this request differs: {}; run anneal up without "
      "these flags to keep it, anneal down first to replace it (its running jobs are stopped), or use another "
      "--state-dir",
      c.agents, SlotsText(c.slots), o.state_dir, fmt::join(conflicts, "; ")));
}

// Restarts the recorded daemons that are gone, each with its recorded command line.
StatusOr<UpResult> Heal(const LocalClusterOptions& o, LocalCluster c, std::ostream& progress) {
  UpResult result;
  std::vector<size_t> gone;
  for (size_t i = 0; i < c.processes.size(); ++i) {
    if (!IsRunning(c.processes[i])) gone.push_back(i);
  }
  if (gone.empty()) {
    result.outcome = UpOutcome::kAlreadyRunning;
    result.cluster = std::move(c);
    return result;
  }
  for (size_t i : gone) RETURN_IF_ERROR(CheckExecutable(c.processes[i].argv.front()));
  const int64_t since_ms = WallMs();
  std::vector<DaemonProcess> started;
  bool coordinator_restarted = false;
  for (size_t i : gone) {
    DaemonProcess& p = c.processes[i];
    progress << fmt::format("{} (pid {}) is not running: restarting it\n", p.name, p.pid);
    auto pid = SpawnDaemon(p.argv, p.log);
    if (!pid.ok()) {
      StopDaemons(started, std::chrono::seconds(5), /*verify_program=*/false);
      return pid.status();
    }
    p.pid = *pid;
    started.push_back(p);
    result.restarted.push_back(p.name);
    coordinator_restarted = coordinator_restarted || p.node.empty();
  }
  RETURN_IF_ERROR(WriteClusterFile(o.state_dir, c));
  // A new coordinator hears again from every agent; a running coordinator only from the restarted agents.
  std::vector<std::string> nodes;
  for (const DaemonProcess& p : coordinator_restarted ? c.processes : started) {
    if (!p.node.empty()) nodes.push_back(p.node);
  }
  progress << fmt::format("waiting for {} agent(s) to register...\n", nodes.size());
  progress.flush();
  if (Status st = WaitForAgents(c, o.client_config, nodes, since_ms, started, o.wait); !st.ok()) {
    StopDaemons(started, std::chrono::seconds(5), /*verify_program=*/false);
    return st;
  }
  result.outcome = UpOutcome::kHealed;
  result.cluster = std::move(c);
  return result;
}

// The local cluster's path policy: the anneal home, the working directory and --allow-root, for every team.
StatusOr<jobspec::PathPolicy> LocalPathPolicy(const LocalClusterOptions& o) {
  std::vector<std::string> roots;
  auto add = [&](const std::string& path, const std::string& what) -> Status {
    std::error_code ec;
    const std::string root = fs::absolute(path, ec).lexically_normal().string();
    auto resolved = jobspec::ResolvePolicyPath(root);
    if (ec || !resolved.ok()) {
      return InvalidArgumentError(
          fmt::format("{} '{}': {}", what, path, ec ? ec.message() : resolved.status().message()));
    }
    std::string r = root;
    while (r.size() > 1 && r.back() == '/') r.pop_back();
    if (std::find(roots.begin(), roots.end(), r) == roots.end()) roots.push_back(r);
    return Status::Ok();
  };
  RETURN_IF_ERROR(add(o.state_dir, "the anneal home"));
  std::error_code ec;
  RETURN_IF_ERROR(add(fs::current_path(ec).string(), "the working directory"));
  for (const auto& r : o.allow_roots) RETURN_IF_ERROR(add(r, "--allow-root"));
  jobspec::PathPolicy policy;
  policy.defaults = {roots, roots, roots};
  return policy;
}

// Starts every daemon. `recorded` (a cluster.yaml whose daemons are all gone) gives the default shape.
StatusOr<UpResult> StartFresh(const LocalClusterOptions& o, const LocalCluster* recorded, std::ostream& progress) {
  LocalCluster c;
  c.agents = o.agents.value_or(recorded != nullptr ? recorded->agents : 1);
  c.slots = o.slots.value_or(recorded != nullptr ? recorded->slots : o.default_slots);
  if (c.agents < 1 || c.agents > 64) {
    return InvalidArgumentError(
        fmt::format("--agents must be 1..64 (each local agent gets its own 100 rendezvous ports), got {}", c.agents));
  }
  const std::string bin = o.bin_dir.empty() ? SelfDir() : o.bin_dir;
  const std::string coordinator_bin = bin + "/anneal-coordinator";
  const std::string agent_bin = bin + "/anneal-agent";
  RETURN_IF_ERROR(CheckExecutable(coordinator_bin));
  RETURN_IF_ERROR(CheckExecutable(agent_bin));
  int port = o.port.value_or(0);
  if (port == 0) {
    ASSIGN_OR_RETURN(port, FreeLoopbackPort());
  }
  c.coordinator = fmt::format("tcp://127.0.0.1:{}", port);

  const std::string config_file = o.state_dir + "/coordinator.yaml";
  {
    std::ofstream cfg(config_file, std::ios::trunc);
    cfg << "# written by `anneal up`: the local cluster's coordinator; its flags carry the settings\n";
    // path policy (helper D): the coordinator refuses to start without one.
    ASSIGN_OR_RETURN(const jobspec::PathPolicy policy, LocalPathPolicy(o));
    cfg << "# Jobs may read models and datasets and write outputs only below these roots (anneal up --allow-root\n"
           "# adds more; docs/coordinator.md, \"Path policy\").\n"
        << jobspec::PathPolicyYaml(policy);
    for (const auto& setting : o.coordinator_settings) {
      const size_t eq = setting.find('=');
      const std::string key = setting.substr(0, eq);
      if (eq == std::string::npos || key.empty() ||
          key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos ||
          setting.find_first_of("\n\r#{}[]\"'") != std::string::npos) {
        return InvalidArgumentError(
            fmt::format("--coordinator-set '{}': expected KEY=VALUE with a lower-case key "
                        "(e.g. min_runtime_ms=0) and a plain value",
                        setting));
      }
      const std::string value = setting.substr(eq + 1);
      // A value with ':' (http_bind=127.0.0.1:7071) is quoted so that it stays one YAML scalar.
      cfg << key << ": " << (value.find(':') == std::string::npos ? value : "\"" + value + "\"") << "\n";
    }
    if (!cfg) return InternalError(fmt::format("writing {}", config_file));
  }
  // --agent-set: one agent.yaml every agent reads (a value may hold ':' here: HOST:PORT is quoted).
  std::string agent_config_file;
  if (!o.agent_settings.empty()) {
    agent_config_file = o.state_dir + "/agent.yaml";
    std::ofstream cfg(agent_config_file, std::ios::trunc);
    cfg << "# written by `anneal up --agent-set`: settings every local agent reads (agent/config.h)\n";
    for (const auto& setting : o.agent_settings) {
      const size_t eq = setting.find('=');
      const std::string key = setting.substr(0, eq);
      if (eq == std::string::npos || key.empty() ||
          key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos ||
          setting.find_first_of("\n\r#{}[]\"'") != std::string::npos) {
        return InvalidArgumentError(fmt::format(
            "--agent-set '{}': expected KEY=VALUE with a lower-case key (e.g. metrics_bind=127.0.0.1:0) and a "
            "plain value",
            setting));
      }
      cfg << key << ": \"" << setting.substr(eq + 1) << "\"\n";
    }
    if (!cfg) return InternalError(fmt::format("writing {}", agent_config_file));
  }
  ASSIGN_OR_RETURN(const std::string join_token_file, EnsureLocalJoinToken(o.state_dir));
  const int64_t since_ms = WallMs();
  DaemonProcess coordinator{"coordinator",
                            coordinator_bin,
                            0,
                            o.state_dir + "/logs/coordinator.log",
                            CoordinatorArgv(coordinator_bin, c.coordinator, o.state_dir + "/coordinator",
                                            o.client_config, config_file, join_token_file),
                            ""};
  ASSIGN_OR_RETURN(coordinator.pid, SpawnDaemon(coordinator.argv, coordinator.log));
  c.processes.push_back(std::move(coordinator));
  // Curve on: the agents and the client config pin the key the coordinator made (or kept) in its state dir.
  const std::string key_file = ServerKeyFile(o.state_dir);
  auto key = WaitForServerKey(key_file, c.processes.front(), o.wait);
  if (!key.ok()) {
    StopDaemons(c.processes, std::chrono::seconds(5), /*verify_program=*/false);
    return key.status();
  }
  c.server_key = *key;
  std::vector<std::string> nodes;
  for (int i = 0; i < c.agents; ++i) {
    const std::string node = fmt::format("local-{}", i);
    const std::string work = o.state_dir + "/agents/" + node;
    std::error_code ec;
    fs::create_directories(work, ec);
    DaemonProcess agent{
        "agent " + node,
        agent_bin,
        0,
        o.state_dir + "/logs/agent-" + node + ".log",
        AgentArgv(agent_bin, c.coordinator, node, work, c.slots, key_file, join_token_file, i, agent_config_file),
        node};
    auto pid = SpawnDaemon(agent.argv, agent.log);
    if (!pid.ok()) {
      StopDaemons(c.processes, std::chrono::seconds(5), /*verify_program=*/false);
      return pid.status();
    }
    agent.pid = *pid;
    c.processes.push_back(std::move(agent));
    nodes.push_back(node);
  }
  RETURN_IF_ERROR(WriteClusterFile(o.state_dir, c));
  progress << fmt::format("started coordinator at {} and {} agent(s); waiting for them to register...\n", c.coordinator,
                          c.agents);
  progress.flush();
  if (Status st = WaitForAgents(c, o.client_config, nodes, since_ms, c.processes, o.wait); !st.ok()) {
    StopDaemons(c.processes, std::chrono::seconds(5), /*verify_program=*/false);
    std::error_code ec;
    fs::remove(ClusterFile(o.state_dir), ec);
    return st;
  }
  UpResult result;
  result.outcome = UpOutcome::kStarted;
  result.cluster = std::move(c);
  return result;
}

}  // namespace

std::string SelfDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

std::vector<std::string> CoordinatorArgv(const std::string& program, const std::string& bind,
                                         const std::string& state_dir, const std::string& client_config,
                                         const std::string& config_file, const std::string& join_token_file) {
  std::vector<std::string> argv = {program,       "--bind",   bind,
                                   "--state-dir", state_dir,  "--bootstrap-admin-config",
                                   client_config, "--config", config_file};
  if (!join_token_file.empty()) {
    argv.push_back("--bootstrap-join-token-file");
    argv.push_back(join_token_file);
  }
  return argv;
}

std::vector<std::string> AgentArgv(const std::string& program, const std::string& coordinator, const std::string& node,
                                   const std::string& work_dir, int slots, const std::string& server_key_file,
                                   const std::string& join_token_file, int index, const std::string& config_file) {
  // --ranks-survive-agent: a crashed local agent is restarted by `anneal up` and re-adopts its ranks (the local
  // cluster heals); `anneal down` still stops them (SIGTERM to the agents, which stop their ranks).
  std::vector<std::string> argv = {
      program,  "--coordinator",         coordinator,         "--node",       node, "--work-dir",
      work_dir, "--ranks-survive-agent", "--server-key-file", server_key_file};
  if (slots > 0) {
    argv.push_back("--slots");
    argv.push_back(std::to_string(slots));
  }
  if (!join_token_file.empty()) {
    argv.push_back("--join-token-file");
    argv.push_back(join_token_file);
  }
  const int first_port = 29500 + 100 * index;
  argv.push_back("--rendezvous-ports");
  argv.push_back(fmt::format("{}-{}", first_port, first_port + 99));
  if (!config_file.empty()) {
    argv.push_back("--config");
    argv.push_back(config_file);
  }
  return argv;
}

StatusOr<std::string> EnsureLocalJoinToken(const std::string& state_dir) {
  const std::string path = state_dir + "/join-token";
  const std::string token = FormatJoinToken(RandomHex(kJoinTokenIdBytes), RandomHex(kSecretBytes));
  Status st = WriteNewFile(path, token + "\n", 0600);
  if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st.WithContext("the local cluster's join token");
  return path;
}

int NvidiaGpuCount() {
  std::error_code ec;
  int n = 0;
  for (auto it = fs::directory_iterator("/proc/driver/nvidia/gpus", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

StatusOr<UpResult> UpLocalCluster(const LocalClusterOptions& o, std::ostream& progress) {
  if (o.agents && *o.agents < 1)
    return InvalidArgumentError(fmt::format("--agents must be at least 1, got {}", *o.agents));
  if (o.slots && *o.slots < 0) return InvalidArgumentError(fmt::format("--slots must be at least 1, got {}", *o.slots));
  std::error_code ec;
  for (const std::string& d : {o.state_dir + "/logs", o.state_dir + "/coordinator", o.state_dir + "/agents"}) {
    fs::create_directories(d, ec);
    if (ec) return InvalidArgumentError(fmt::format("cannot create {}: {}", d, ec.message()));
  }
  auto recorded = ReadClusterFile(o.state_dir);
  if (!recorded.ok()) {
    if (recorded.status().code() != StatusCode::kNotFound) return recorded.status();
    return StartFresh(o, nullptr, progress);
  }
  const auto& processes = recorded->cluster.processes;
  auto running = std::find_if(processes.begin(), processes.end(), [](const DaemonProcess& p) { return IsRunning(p); });
  if (running == processes.end()) return StartFresh(o, recorded->legacy ? nullptr : &recorded->cluster, progress);
  if (recorded->legacy) {
    return AlreadyExistsError(
        fmt::format("a local cluster is already running ({} pid {}, see {}), recorded by an "
                    "older anneal up that cannot restart it: run anneal down first",
                    running->name, running->pid, ClusterFile(o.state_dir)));
  }
  RETURN_IF_ERROR(CheckRequestAgrees(o, recorded->cluster));
  return Heal(o, std::move(recorded->cluster), progress);
}

Status StopLocalCluster(const std::string& state_dir, std::chrono::milliseconds grace, std::ostream& progress) {
  ASSIGN_OR_RETURN(Recorded recorded, ReadClusterFile(state_dir));
  std::vector<std::string> report = StopDaemons(recorded.cluster.processes, grace, /*verify_program=*/true);
  if (report.empty()) progress << "nothing was running\n";
  for (const std::string& line : report) progress << line << "\n";
  std::error_code ec;
  fs::remove(ClusterFile(state_dir), ec);
  return Status::Ok();
}

}  // namespace anneal::cli
