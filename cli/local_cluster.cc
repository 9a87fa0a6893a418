#include "cli/local_cluster.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "cli/client.h"

namespace anneal::cli {
namespace fs = std::filesystem;
namespace {

std::string ClusterFile(const std::string& state_dir) { return state_dir + "/cluster.yaml"; }

std::string RandomToken() {
  std::random_device rd;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", rd());
  return token;
}

StatusOr<int> FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return InternalError(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return InternalError(fmt::format("cannot find a free port: {}", std::strerror(errno)));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// The last `n` lines of a file, each prefixed for the error report.
std::string Tail(const std::string& path, size_t n = 15) {
  std::ifstream in(path);
  if (!in) return fmt::format("\n  ({} is missing)", path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > n) lines.pop_front();
  }
  if (lines.empty()) return fmt::format("\n  ({} is empty)", path);
  std::string out = fmt::format("\nlast lines of {}:", path);
  for (const auto& l : lines) out += "\n  | " + l;
  return out;
}

// fork + setsid + exec with stdout/stderr appended to `log`. The child is its own session: closing the
// terminal or the CLI does not stop it.
StatusOr<pid_t> SpawnDaemon(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return InternalError(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    ::execv(args[0], args.data());
    std::string msg = fmt::format("anneal up: cannot exec {}: {}\n", argv[0], std::strerror(errno));
    ssize_t ignored = ::write(2, msg.data(), msg.size());
    (void)ignored;
    ::_exit(127);
  }
  return pid;
}

bool IsAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = content.rfind(')');
  return paren == std::string::npos || paren + 2 >= content.size() || content[paren + 2] != 'Z';
}

// The pid still runs `program` (guards against signalling a recycled pid).
bool Runs(pid_t pid, const std::string& program) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::string argv0;
  std::getline(in, argv0, '\0');
  return !argv0.empty() && fs::path(argv0).filename() == fs::path(program).filename();
}

Status WriteClusterFile(const std::string& state_dir, const LocalCluster& c) {
  YAML::Emitter e;
  e << YAML::BeginMap << YAML::Key << "coordinator" << YAML::Value << c.coordinator << YAML::Key << "token"
    << YAML::Value << YAML::DoubleQuoted << c.token << YAML::Key << "processes" << YAML::Value << YAML::BeginSeq;
  for (const auto& p : c.processes) {
    e << YAML::BeginMap << YAML::Key << "name" << YAML::Value << p.name << YAML::Key << "pid" << YAML::Value << p.pid
      << YAML::Key << "program" << YAML::Value << p.program << YAML::Key << "log" << YAML::Value << p.log
      << YAML::EndMap;
  }
  e << YAML::EndSeq << YAML::EndMap;
  std::ofstream out(ClusterFile(state_dir), std::ios::trunc);
  out << "# written by `anneal up`; `anneal down` stops these processes\n" << e.c_str() << "\n";
  if (!out.flush()) return InternalError(fmt::format("cannot write {}", ClusterFile(state_dir)));
  return Status::Ok();
}

StatusOr<LocalCluster> ReadClusterFile(const std::string& state_dir) {
  const std::string path = ClusterFile(state_dir);
  if (!fs::exists(path)) return NotFoundError(fmt::format("no local cluster recorded in {}", path));
  LocalCluster c;
  try {
    YAML::Node root = YAML::LoadFile(path);
    c.coordinator = root["coordinator"].as<std::string>("");
    c.token = root["token"].as<std::string>("");
    for (const auto& p : root["processes"]) {
      c.processes.push_back({p["name"].as<std::string>(""), p["program"].as<std::string>(""), p["pid"].as<pid_t>(0),
                             p["log"].as<std::string>("")});
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(fmt::format("{}: malformed: {}", path, e.what()));
  }
  return c;
}

// SIGTERM to every live process (last started first), SIGKILL to what is left after `grace`.
// `verify_program`: only signal a pid whose command line still names its program (pids read from cluster.yaml
// may have been recycled); our own unreaped children cannot be, so a failed `up` skips the check.
std::vector<std::string> StopProcesses(const std::vector<DaemonProcess>& processes, std::chrono::milliseconds grace,
                                       bool verify_program) {
  std::vector<std::string> report;
  std::vector<const DaemonProcess*> live;
  for (auto it = processes.rbegin(); it != processes.rend(); ++it) {
    if (IsAlive(it->pid) && (!verify_program || Runs(it->pid, it->program))) {
      ::kill(it->pid, SIGTERM);
      live.push_back(&*it);
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (const DaemonProcess* p : live) {
    while (IsAlive(p->pid) && std::chrono::steady_clock::now() < deadline) {
      ::waitpid(p->pid, nullptr, WNOHANG);  // reaps it when it is our child (a failed `up`)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (IsAlive(p->pid)) {
      ::kill(p->pid, SIGKILL);
      ::waitpid(p->pid, nullptr, WNOHANG);
      report.push_back(fmt::format("{} (pid {}) killed after {} ms", p->name, p->pid, grace.count()));
    } else {
      report.push_back(fmt::format("{} (pid {}) stopped", p->name, p->pid));
    }
  }
  return report;
}

// Polls ListNodes until `agents` nodes are UP; fails early when a daemon exits.
Status WaitForNodes(const LocalCluster& c, int agents, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  int up = 0;
  Status last = Status::Ok();
  while (std::chrono::steady_clock::now() < deadline) {
    for (const DaemonProcess& p : c.processes) {
      int status = 0;
      if (::waitpid(p.pid, &status, WNOHANG) == p.pid) {
        std::string how = WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                            : fmt::format("was killed by signal {}", WTERMSIG(status));
        return UnavailableError(fmt::format("{} {} during start-up{}", p.name, how, Tail(p.log)));
      }
    }
    CoordinatorClient client(c.coordinator, c.token, std::chrono::milliseconds(1000));
    pb::ClientRequest req;
    req.mutable_list_nodes();
    auto reply = client.Call(req);
    if (reply.ok()) {
      up = 0;
      for (const auto& n : reply->list_nodes().nodes()) up += n.state() == pb::NODE_UP ? 1 : 0;
      if (up >= agents) return Status::Ok();
    } else {
      last = reply.status();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string detail = up > 0 ? fmt::format("only {} of {} agents registered", up, agents)
                              : (last.ok() ? "no agent registered" : last.message());
  std::string tails;
  for (const DaemonProcess& p : c.processes) tails += Tail(p.log, 8);
  return DeadlineExceededError(
      fmt::format("the local cluster did not come up within {} s: {}{}", wait.count() / 1000.0, detail, tails));
}

}  // namespace

std::string SelfDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

std::vector<std::string> CoordinatorArgv(const std::string& program, const std::string& bind,
                                         const std::string& state_dir, const std::string& token,
                                         const std::string& config_file) {
  return {program, "--bind", bind, "--state-dir", state_dir, "--token", token, "--config", config_file};
}

std::vector<std::string> AgentArgv(const std::string& program, const std::string& coordinator,
                                   const std::string& node, const std::string& work_dir, int slots) {
  std::vector<std::string> argv = {program, "--coordinator", coordinator, "--node", node, "--work-dir", work_dir};
  if (slots > 0) {
    argv.push_back("--slots");
    argv.push_back(std::to_string(slots));
  }
  return argv;
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

StatusOr<LocalCluster> StartLocalCluster(const LocalClusterOptions& o, std::ostream& progress) {
  if (o.agents < 1) return InvalidArgumentError(fmt::format("--agents must be at least 1, got {}", o.agents));
  if (o.slots < 0) return InvalidArgumentError(fmt::format("--slots must be at least 1, got {}", o.slots));
  const std::string bin = o.bin_dir.empty() ? SelfDir() : o.bin_dir;
  const std::string coordinator_bin = bin + "/anneal-coordinator";
  const std::string agent_bin = bin + "/anneal-agent";
  for (const std::string& p : {coordinator_bin, agent_bin}) {
    if (::access(p.c_str(), X_OK) != 0) {
      return FailedPreconditionError(fmt::format("{} not found next to anneal (build the {} target)", p,
                                                 fs::path(p).filename().string()));
    }
  }
  std::error_code ec;
  for (const std::string& d : {o.state_dir + "/logs", o.state_dir + "/coordinator", o.state_dir + "/agents"}) {
    fs::create_directories(d, ec);
    if (ec) return InvalidArgumentError(fmt::format("cannot create {}: {}", d, ec.message()));
  }
  if (auto existing = ReadClusterFile(o.state_dir); existing.ok()) {
    for (const auto& p : existing->processes) {
      if (IsAlive(p.pid) && Runs(p.pid, p.program)) {
        return AlreadyExistsError(fmt::format("a local cluster is already running ({} pid {}, see {}): run anneal down "
                                              "first",
                                              p.name, p.pid, ClusterFile(o.state_dir)));
      }
    }
  }
  int port = o.port;
  if (port == 0) {
    ASSIGN_OR_RETURN(port, FreePort());
  }
  LocalCluster c;
  c.coordinator = fmt::format("tcp://127.0.0.1:{}", port);
  c.token = RandomToken();

  const std::string config_file = o.state_dir + "/coordinator.yaml";
  {
    std::ofstream cfg(config_file, std::ios::trunc);
    cfg << "# written by `anneal up`: the local cluster's coordinator; its flags carry the settings\n";
  }
  const std::string coordinator_log = o.state_dir + "/logs/coordinator.log";
  ASSIGN_OR_RETURN(pid_t cpid,
                   SpawnDaemon(CoordinatorArgv(coordinator_bin, c.coordinator, o.state_dir + "/coordinator", c.token,
                                               config_file),
                               coordinator_log));
  c.processes.push_back({"coordinator", coordinator_bin, cpid, coordinator_log});
  for (int i = 0; i < o.agents; ++i) {
    const std::string node = fmt::format("local-{}", i);
    const std::string work = o.state_dir + "/agents/" + node;
    fs::create_directories(work, ec);
    const std::string log = o.state_dir + "/logs/agent-" + node + ".log";
    auto pid = SpawnDaemon(AgentArgv(agent_bin, c.coordinator, node, work, o.slots), log);
    if (!pid.ok()) {
      StopProcesses(c.processes, std::chrono::seconds(5), /*verify_program=*/false);
      return pid.status();
    }
    c.processes.push_back({"agent " + node, agent_bin, *pid, log});
  }
  RETURN_IF_ERROR(WriteClusterFile(o.state_dir, c));
  progress << fmt::format("started coordinator at {} and {} agent(s); waiting for them to register...\n",
                          c.coordinator, o.agents);
  progress.flush();
  if (Status st = WaitForNodes(c, o.agents, o.wait); !st.ok()) {
    StopProcesses(c.processes, std::chrono::seconds(5), /*verify_program=*/false);
    fs::remove(ClusterFile(o.state_dir), ec);
    return st;
  }
  return c;
}

Status StopLocalCluster(const std::string& state_dir, std::chrono::milliseconds grace, std::ostream& progress) {
  ASSIGN_OR_RETURN(LocalCluster c, ReadClusterFile(state_dir));
  std::vector<std::string> report = StopProcesses(c.processes, grace, /*verify_program=*/true);
  if (report.empty()) progress << "nothing was running\n";
  for (const std::string& line : report) progress << line << "\n";
  std::error_code ec;
  fs::remove(ClusterFile(state_dir), ec);
  return Status::Ok();
}

}  // namespace anneal::cli
