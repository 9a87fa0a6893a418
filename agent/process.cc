#include "agent/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
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

// What the child was doing when it failed (reported with errno through the error pipe).
enum ChildStep : int { kStepExec = 0, kStepSession, kStepCgroup, kStepCredentials, kStepVerify, kStepSetup };

const char* StepText(int step) {
  switch (step) {
    case kStepSession:
      return "creating its session";
    case kStepCgroup:
      return "joining the task cgroup";
    case kStepCredentials:
      return "switching to the rank's user";
    case kStepVerify:
      return "verifying the rank's user (it kept privileges)";
    case kStepSetup:
      return "setting up descriptors and working directory";
    default:
      return nullptr;
  }
}

[[noreturn]] void ChildFail(int err_fd, int err, int step = kStepSetup) {
  const int report[2] = {err, step};
  ssize_t ignored = ::write(err_fd, report, sizeof(report));
  (void)ignored;
  _exit(127);
}

// In the child, after the switch: every id is the target and root cannot be regained.
bool CredentialsTook(uid_t uid, gid_t gid) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (::getresuid(&ru, &eu, &su) != 0 || ::getresgid(&rg, &eg, &sg) != 0) return false;
  if (ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid || uid == 0) return false;
  return ::setuid(0) != 0;  // must fail
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

  if (spec.switch_user && (spec.uid == 0 || spec.gid == 0)) {
    return PermissionDeniedError("starting trainer " + spec.program + ": refusing to run a rank as uid/gid 0");
  }
  const std::vector<gid_t> groups = spec.groups.empty() ? std::vector<gid_t>{spec.gid} : spec.groups;
  const pid_t parent = ::getpid();
  int cgroup_fd = -1;
  if (!spec.cgroup_procs.empty()) {
    cgroup_fd = ::open(spec.cgroup_procs.c_str(), O_WRONLY | O_CLOEXEC);
    if (cgroup_fd < 0) return InternalError("opening " + spec.cgroup_procs + ": " + std::strerror(errno));
  }
  const int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    const int err = errno;
    if (cgroup_fd >= 0) ::close(cgroup_fd);
    return InternalError("opening rank log " + spec.log_path + ": " + std::strerror(err));
  }
  int err_pipe[2];
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(log_fd);
    if (cgroup_fd >= 0) ::close(cgroup_fd);
    return InternalError(std::string("pipe2 for spawn: ") + std::strerror(err));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(log_fd);
    if (cgroup_fd >= 0) ::close(cgroup_fd);
    ::close(err_pipe[0]);
    ::close(err_pipe[1]);
    return ResourceExhaustedError("fork for " + spec.program + ": " + std::strerror(err));
  }
  if (pid == 0) {
    // Child.
    if (::setsid() < 0) ChildFail(err_pipe[1], errno, kStepSession);
    if (cgroup_fd >= 0 && ::write(cgroup_fd, "0", 1) != 1) ChildFail(err_pipe[1], errno, kStepCgroup);
    if (spec.switch_user) {
      if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(spec.gid, spec.gid, spec.gid) != 0 ||
          ::setresuid(spec.uid, spec.uid, spec.uid) != 0) {
        ChildFail(err_pipe[1], errno, kStepCredentials);
      }
      if (!CredentialsTook(spec.uid, spec.gid)) ChildFail(err_pipe[1], EPERM, kStepVerify);
    }
    if (spec.die_with_parent) {
      // After the credential change, which clears the death signal. If the agent died before this point,
      // nobody would send it: the parent is then already someone else.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) ChildFail(err_pipe[1], errno, kStepSetup);
      if (::getppid() != parent) _exit(127);
    }
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
    ChildFail(err_fd, errno, kStepExec);
  }
  ::close(log_fd);
  if (cgroup_fd >= 0) ::close(cgroup_fd);
  ::close(err_pipe[1]);
  int report[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(err_pipe[0], report, sizeof(report));
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(report))) {
    int ignored;
    ::waitpid(pid, &ignored, 0);  // reap the failed child
    const int child_err = report[0];
    std::string what = "starting trainer " + spec.program + ": ";
    if (const char* step = StepText(report[1])) what += std::string(step) + ": ";
    what += std::strerror(child_err);
    if (spec.switch_user && report[1] == kStepExec && (child_err == EACCES || child_err == ENOENT)) {
      what += " (as uid " + std::to_string(spec.uid) +
              ": the program and every directory above it must be readable and searchable by that user)";
    }
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
