#include "agent/rank_logs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "common/fsutil.h"

namespace anneal::agent {
namespace {

uint64_t ReadBase(const std::string& log_path) {
  std::ifstream in(log_path + ".base");
  uint64_t base = 0;
  if (in) in >> base;
  return base;
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

StatusOr<std::string> ReadRange(const std::string& path, uint64_t at, uint32_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFoundError("log " + path + ": " + ErrnoText(errno));
  std::string out(max_bytes, '\0');
  ssize_t n;
  do {
    n = ::pread(fd, out.data(), max_bytes, static_cast<off_t>(at));
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n < 0) return InternalError("reading log " + path + ": " + ErrnoText(err));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

Status RotateLogIfLarger(const std::string& log_path, uint64_t max_bytes) {
  const uint64_t size = FileSize(log_path);
  if (max_bytes == 0 || size <= max_bytes) return Status::Ok();
  std::error_code ec;
  std::filesystem::copy_file(log_path, log_path + ".1", std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) return InternalError("rotating " + log_path + ": copy to .1: " + ec.message());
  // The copy may hold more than `size` bytes (the rank kept writing); truncate exactly after what was copied.
  const uint64_t copied = FileSize(log_path + ".1");
  if (::truncate(log_path.c_str(), 0) != 0) return InternalError("rotating " + log_path + ": truncate: " + ErrnoText(errno));
  return WriteFileAtomic(log_path + ".base", std::to_string(ReadBase(log_path) + copied) + "\n");
}

StatusOr<LogSlice> ReadLog(const std::string& log_path, uint64_t offset, uint32_t max_bytes) {
  if (!std::filesystem::exists(log_path)) return NotFoundError("no log file " + log_path);
  if (max_bytes == 0) max_bytes = 1 << 20;
  LogSlice s;
  const uint64_t base = ReadBase(log_path);
  const uint64_t current = FileSize(log_path);
  s.end = base + current;
  if (offset >= base) {
    s.offset = std::min(offset, s.end);
    ASSIGN_OR_RETURN(s.data, ReadRange(log_path, s.offset - base, max_bytes));
    return s;
  }
  const std::string old = log_path + ".1";
  const uint64_t old_size = FileSize(old);
  const uint64_t old_start = base >= old_size ? base - old_size : 0;
  s.offset = std::max(offset, old_start);
  const uint64_t want = std::min<uint64_t>(max_bytes, base - s.offset);
  ASSIGN_OR_RETURN(s.data, ReadRange(old, s.offset - old_start, static_cast<uint32_t>(want)));
  return s;
}

}  // namespace anneal::agent
