#include "agent/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace anneal::agent {
namespace {

// Fields after the command name of /proc/<pid>/stat ("pid (comm) S ppid pgrp ..."); the name may contain
// spaces and parentheses, so parse from the last ')'.
bool ReadStatFields(pid_t pid, std::vector<std::string>* fields) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::string line;
  std::getline(in, line);
  const auto close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 1));
  std::string f;
  while (rest >> f) fields->push_back(f);
  return !fields->empty();
}

[[noreturn]] void ChildFail(int err_fd, int err) {
  ssize_t ignored = ::write(err_fd, &err, sizeof(err));
  (void)ignored;
  _exit(127);
}

}  // namespace

StatusOr<pid_t> Spawn(const SpawnSpec& spec) {
  // Everything the child needs is prepared before fork: after fork only async-signal-safe calls.
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(spec.program.c_str()));
  for (const auto& a : spec.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  const int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return InternalError("opening rank log " + spec.log_path + ": " + std::strerror(errno));
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(log_fd);
    return InternalError(std::string("pipe2 for spawn: ") + std::strerror(errno));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(log_fd);
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    return ResourceExhaustedError("fork for " + spec.program + ": " + std::strerror(err));
  }
  if (pid == 0) {
    // Child.
    if (::setsid() < 0) ChildFail(err_pipe[1], errno);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGCHLD, SIGHUP}) signal(sig, SIG_DFL);
    // The error pipe must not land on 1, 2 or 3: move it high first.
    const int err_fd = ::fcntl(err_pipe[1], F_DUPFD_CLOEXEC, 100);
    if (err_fd < 0) ChildFail(err_pipe[1], errno);
    int events = spec.events_fd;
    if (events >= 0) {
      events = ::fcntl(events, F_DUPFD, 101);  // above the targets so the dup2s below cannot clobber it
      if (events < 0) ChildFail(err_fd, errno);
    }
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0) ChildFail(err_fd, errno);
    if (::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ChildFail(err_fd, errno);
    if (events >= 0 && ::dup2(events, kRankEventsFd) < 0) ChildFail(err_fd, errno);
    // Close everything else except the error pipe (close-on-exec).
    const unsigned first = events >= 0 ? kRankEventsFd + 1 : 3;
    if (static_cast<unsigned>(err_fd) > first) ::close_range(first, static_cast<unsigned>(err_fd) - 1, 0);
    ::close_range(static_cast<unsigned>(err_fd) + 1, ~0U, 0);
    if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) ChildFail(err_fd, errno);
    ::execve(spec.program.c_str(), argv.data(), envp.data());
    ChildFail(err_fd, errno);
  }
  ::close(log_fd);
  ::close(err_pipe[1]);
  int child_err = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &child_err, sizeof(child_err));
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_err))) {
    int ignored;
    ::waitpid(pid, &ignored, 0);  // reap the failed child
    const std::string what = "starting trainer " + spec.program + ": " + std::strerror(child_err);
    if (child_err == ENOENT) return NotFoundError(what);
    if (child_err == EACCES || child_err == EPERM) return PermissionDeniedError(what);
    return InternalError(what);
  }
  return pid;
}

StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  std::vector<std::string> f;
  // After ')': state(3) ppid(4) ... starttime is field 22, i.e. index 22-3 = 19 here.
  if (!ReadStatFields(pid, &f) || f.size() < 20) {
    return NotFoundError("no process " + std::to_string(pid) + " in /proc");
  }
  return std::stoull(f[19]);
}

char ProcessState(pid_t pid) {
  std::vector<std::string> f;
  if (!ReadStatFields(pid, &f) || f[0].empty()) return '\0';
  return f[0][0];
}

bool ProcessAlive(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return false;
  std::vector<std::string> f;
  if (!ReadStatFields(pid, &f) || f.size() < 20) return false;
  if (f[0] == "Z" || f[0] == "X" || f[0] == "x") return false;
  return start_time == 0 || std::stoull(f[19]) == start_time;
}

bool SignalGroup(pid_t pgid, int sig) {
  if (pgid <= 1) return false;  // never signal init's group or everything
  if (::kill(-pgid, sig) == 0) return true;
  return ::kill(pgid, sig) == 0;
}

bool GroupHasLiveMembers(pid_t pgid) {
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return false;
  bool found = false;
  while (dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0') continue;
    std::vector<std::string> f;
    if (!ReadStatFields(static_cast<pid_t>(pid), &f) || f.size() < 3) continue;
    if (f[2] == std::to_string(pgid) && f[0] != "Z" && f[0] != "X") {
      found = true;
      break;
    }
  }
  ::closedir(dir);
  return found;
}

ExitInfo DecodeWaitStatus(int wstatus) {
  ExitInfo info;
  if (WIFEXITED(wstatus)) {
    info.exit_code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    info.signal = WTERMSIG(wstatus);
    info.exit_code = 128 + info.signal;
  }
  return info;
}

std::string ExitInfo::Describe() const {
  if (signal != 0) return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  return "exited with code " + std::to_string(exit_code);
}

}  // namespace anneal::agent
