// Task cgroups (agent/task_cgroup.h): the cgroup2 mount from /proc/self/mountinfo, the agent's own cgroup
// from /proc/self/cgroup ("0::/path"), a probe child proving the directory is writable and has cgroup.kill.
#include "agent/task_cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "common/fsutil.h"

namespace anneal::agent {
namespace {

// The mount point of the cgroup2 filesystem ("" when none).
std::string Cgroup2Mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "... mount-point options - fstype source super-options": the fstype follows " - ".
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream after(line.substr(dash + 3));
    std::string fstype;
    after >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream before(line.substr(0, dash));
    std::string field, mount;
    for (int i = 0; i < 5 && before >> field; ++i) {
      if (i == 4) mount = field;
    }
    if (!mount.empty()) return mount;
  }
  return "";
}

// The agent's cgroup v2 path ("/..." from the "0::" line of /proc/self/cgroup).
std::string OwnCgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return "";
}

Status WriteSmall(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return InternalError("opening " + path + ": " + ErrnoText(errno));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return InternalError("writing " + path + ": " + ErrnoText(err));
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> TaskCgroupBase() {
  const std::string mount = Cgroup2Mount();
  if (mount.empty()) return FailedPreconditionError("no cgroup2 filesystem is mounted");
  const std::string own = OwnCgroup();
  if (own.empty()) return FailedPreconditionError("this process has no cgroup v2 path in /proc/self/cgroup");
  const std::string base = own == "/" ? mount : mount + own;
  const std::string probe = base + "/anneal-probe-" + std::to_string(::getpid());
  if (::mkdir(probe.c_str(), 0755) != 0 && errno != EEXIST) {
    return FailedPreconditionError("cgroup " + base + " is not writable: " + ErrnoText(errno));
  }
  struct stat st {};
  const bool has_kill = ::stat((probe + "/cgroup.kill").c_str(), &st) == 0;
  ::rmdir(probe.c_str());
  if (!has_kill) return FailedPreconditionError("cgroup " + base + " has no cgroup.kill (Linux 5.14 or later)");
  return base;
}

StatusOr<std::string> CreateTaskCgroup(const std::string& base, const std::string& name) {
  const std::string path = base + "/" + name;
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return InternalError("creating task cgroup " + path + ": " + ErrnoText(errno));
  }
  return path;
}

Status KillTaskCgroup(const std::string& cgroup) {
  if (cgroup.empty() || ::access(cgroup.c_str(), F_OK) != 0) return Status::Ok();
  return WriteSmall(cgroup + "/cgroup.kill", "1");
}

bool TaskCgroupPopulated(const std::string& cgroup) {
  std::ifstream in(cgroup + "/cgroup.procs");
  std::string pid;
  return static_cast<bool>(in >> pid);
}

Status RemoveTaskCgroup(const std::string& cgroup) {
  if (cgroup.empty() || ::rmdir(cgroup.c_str()) == 0 || errno == ENOENT) return Status::Ok();
  return InternalError("removing task cgroup " + cgroup + ": " + ErrnoText(errno));
}

}  // namespace anneal::agent
