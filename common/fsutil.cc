#include "common/fsutil.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace anneal {

std::string ErrnoText(int err) { return std::strerror(err); }

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == EACCES) return PermissionDeniedError("cannot read " + path + ": permission denied");
    return NotFoundError("cannot read " + path + ": " + ErrnoText(err));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return InternalError("cannot open " + path + " to fsync: " + ErrnoText(errno));
  int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return InternalError("fsync " + path + ": " + ErrnoText(err));
  return Status::Ok();
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return PermissionDeniedError("cannot create directory " + path + ": " + ec.message());
  return Status::Ok();
}

namespace {

// Writes all of `data` to `fd`, fsyncs and closes it; on failure closes it and unlinks `name` (the file `fd` is).
Status WriteSyncClose(int fd, const std::string& name, std::string_view data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(name.c_str());
      return ResourceExhaustedError("cannot write " + name + ": " + ErrnoText(err));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!synced) {
    ::unlink(name.c_str());
    return InternalError("fsync " + name + ": " + ErrnoText(err));
  }
  return Status::Ok();
}

Status FsyncParent(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return FsyncPath(dir.empty() ? "." : dir);
}

}  // namespace

Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // a leftover of a crashed writer would keep its old mode
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) return PermissionDeniedError("cannot create " + tmp + ": " + ErrnoText(errno));
  ::fchmod(fd, static_cast<mode_t>(mode));  // the umask must not widen or narrow it
  RETURN_IF_ERROR(WriteSyncClose(fd, tmp, data));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return InternalError("rename " + tmp + " -> " + path + ": " + ErrnoText(err));
  }
  return FsyncParent(path);
}

Status WriteNewFile(const std::string& path, std::string_view data, unsigned mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return AlreadyExistsError(path + " already exists");
    return PermissionDeniedError("cannot create " + path + ": " + ErrnoText(err));
  }
  RETURN_IF_ERROR(WriteSyncClose(fd, path, data));
  return FsyncParent(path);
}

}  // namespace anneal
