// Output directory lock (agent/output_lock.h).
#include "agent/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "common/fsutil.h"

namespace anneal::agent {

namespace {

// "<job> <epoch> <agent pid>\n", as LockOutputDir writes it; anything else leaves fields unknown.
OutputLockHolder ParseHolder(std::string record) {
  OutputLockHolder who;
  while (!record.empty() && (record.back() == '\n' || record.back() == ' ')) record.pop_back();
  const auto a = record.find(' ');
  if (a == std::string::npos) return who;
  who.job_id = record.substr(0, a);
  const auto b = record.find(' ', a + 1);
  const std::string ep = record.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
  if (b != std::string::npos) who.agent_pid = record.substr(b + 1);
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(ep.c_str(), &end, 10);
  who.epoch_known = !ep.empty() && std::isdigit(static_cast<unsigned char>(ep[0])) && errno == 0 && *end == '\0';
  if (who.epoch_known) who.epoch = value;
  return who;
}

}  // namespace

StatusOr<int> LockOutputDir(const std::string& output_dir, const std::string& job_id, uint64_t epoch,
                            OutputLockHolder* holder) {
  const std::string path = output_dir + "/" + kOutputLockName;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("opening the output lock " + path + ": " + ErrnoText(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != ::geteuid()) {
    ::close(fd);
    return FailedPreconditionError("output lock " + path +
                                   " is not a regular file of the agent's user with one link; remove it");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[256] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) return InternalError("locking " + path + ": " + ErrnoText(err));
    std::string record = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("? ? ?");
    const OutputLockHolder who = ParseHolder(record);
    if (holder != nullptr) *holder = who;
    const std::string ep = who.epoch_known ? std::to_string(who.epoch) : "?";
    return FailedPreconditionError("output directory " + output_dir + " is locked by job " + who.job_id + " epoch " +
                                   ep + " (agent pid " + who.agent_pid + ", " + path +
                                   "): two attempts never write one output directory");
  }
  const std::string text = job_id + " " + std::to_string(epoch) + " " + std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    ::close(fd);
    return InternalError("writing the output lock " + path + ": " + ErrnoText(err));
  }
  return fd;
}

}  // namespace anneal::agent
