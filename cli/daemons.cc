#include "cli/daemons.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>

namespace anneal::cli {
namespace fs = std::filesystem;
namespace {

// The pid exists and is not a zombie (an exited child nobody reaped yet).
bool IsAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = content.rfind(')');
  return paren == std::string::npos || paren + 2 >= content.size() || content[paren + 2] != 'Z';
}

// The pid's argv[0] names `program` (guards against signalling a recycled pid).
bool Runs(pid_t pid, const std::string& program) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::string argv0;
  std::getline(in, argv0, '\0');
  return !argv0.empty() && fs::path(argv0).filename() == fs::path(program).filename();
}

}  // namespace

StatusOr<pid_t> SpawnDaemon(const std::vector<std::string>& argv, const std::string& log) {
  if (argv.empty()) return InvalidArgumentError("cannot start a daemon without a command line");
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

bool IsRunning(pid_t pid, const std::string& program) {
  return IsAlive(pid) && Runs(pid, program);
}

std::vector<std::string> StopDaemons(const std::vector<DaemonProcess>& daemons, std::chrono::milliseconds grace,
                                     bool verify_program) {
  std::vector<std::string> report;
  std::vector<const DaemonProcess*> live;
  for (auto it = daemons.rbegin(); it != daemons.rend(); ++it) {
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

std::string LogTail(const std::string& path, size_t n) {
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

}  // namespace anneal::cli
