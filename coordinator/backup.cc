// Writing a backup and asking a running coordinator for one (coordinator/backup.h). The server is backup_server.cc.
#include "coordinator/backup.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <filesystem>

#include "common/fsutil.h"
#include "common/version.h"
#include "coordinator/backup_internal.h"
#include "protocol/curve.h"
#include "transfer/ticket.h"

namespace anneal::coordinator {
namespace fs = std::filesystem;
namespace {

Status CheckBackupTarget(const fs::path& out) {
  if (!out.is_absolute())
    return InvalidArgumentError(fmt::format("backup target {} is not an absolute path", out.string()));
  std::error_code ec;
  const fs::path parent = out.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return InvalidArgumentError(fmt::format(
        "backup target {}: its parent directory {} does not exist (create it first)", out.string(), parent.string()));
  }
  const auto status = fs::symlink_status(out, ec);
  if (!fs::exists(status)) return Status::Ok();
  if (fs::is_directory(status) && fs::is_empty(out, ec) && !ec) return Status::Ok();
  return AlreadyExistsError(fmt::format(
      "backup target {} already exists and is not an empty directory: a backup never overwrites, choose a new one",
      out.string()));
}

// The CurveZMQ keypair travels with the backup: a restored coordinator with a new key would lock every agent
// and client out until they pin it. So does the transfer ticket key (agents pin it at registration).
Status CopyKeys(const std::string& state_dir, const fs::path& staging) {
  for (auto [name, mode] : {std::pair{protocol::kCurveSecretKeyFile, 0600u},
                            {protocol::kCurvePublicKeyFile, 0644u},
                            {transfer::kTicketSecretKeyFile, 0600u},
                            {transfer::kTicketPublicKeyFile, 0644u}}) {
    const std::string from = state_dir + "/" + name;
    std::error_code ec;
    if (!fs::exists(from, ec)) continue;  // an --insecure-plaintext coordinator has none
    ASSIGN_OR_RETURN(std::string bytes, ReadFile(from));
    RETURN_IF_ERROR(WriteNewFile((staging / name).string(), bytes, mode));
  }
  return Status::Ok();
}

std::string Manifest(const std::string& state_dir, uint64_t sequence) {
  char when[32];
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return fmt::format(
      "anneal coordinator backup\ncreated {}\nstate_dir {}\nsequence {}\nschema_version {}\nanneal {}\n"
      "restore: stop the coordinator, move its state directory aside, put this directory in its place, start\n",
      when, state_dir, sequence, storage::kSchemaVersion, Version());
}

}  // namespace

namespace backup_internal {

// Reads one '\n'-terminated line (without it) within the deadline; at most `limit` bytes.
StatusOr<std::string> ReadLine(int fd, int timeout_ms, size_t limit, const std::string& what) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[512];
  while (line.find('\n') == std::string::npos) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return DeadlineExceededError(fmt::format("{}: no answer within {} ms", what, timeout_ms));
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return InternalError(fmt::format("{}: poll: {}", what, ErrnoText(errno)));
    if (ready == 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return InternalError(fmt::format("{}: read: {}", what, ErrnoText(errno)));
    if (n == 0) return UnavailableError(fmt::format("{}: connection closed before a full line", what));
    line.append(buf, static_cast<size_t>(n));
    if (line.size() > limit) return InvalidArgumentError(fmt::format("{}: line longer than {} bytes", what, limit));
  }
  line.resize(line.find('\n'));
  return line;
}

Status SendAll(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return UnavailableError(fmt::format("send: {}", ErrnoText(errno)));
    text.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace backup_internal

using backup_internal::ReadLine;
using backup_internal::SendAll;

StatusOr<uint64_t> WriteBackup(const storage::StateStore& store, const std::string& state_dir, const std::string& out) {
  const fs::path target = fs::path(out).lexically_normal();
  RETURN_IF_ERROR(CheckBackupTarget(target));
  static std::atomic<int> counter{0};
  const fs::path staging =
      target.parent_path() / fmt::format(".{}.partial-{}-{}", target.filename().string(), getpid(), counter++);
  auto written = [&]() -> StatusOr<uint64_t> {
    ASSIGN_OR_RETURN(uint64_t sequence, store.Checkpoint(staging.string()));
    RETURN_IF_ERROR(CopyKeys(state_dir, staging));
    RETURN_IF_ERROR(WriteNewFile((staging / kBackupManifestFile).string(), Manifest(state_dir, sequence), 0644));
    RETURN_IF_ERROR(FsyncPath(staging.string()));
    // rename(2) replaces an empty directory and fails on a non-empty one: `out` appears complete or not at all.
    if (rename(staging.c_str(), target.c_str()) != 0) {
      return AlreadyExistsError(fmt::format("backup target {}: cannot move the finished backup there: {}",
                                            target.string(), ErrnoText(errno)));
    }
    RETURN_IF_ERROR(FsyncPath(target.parent_path().string()));
    return sequence;
  }();
  if (!written.ok()) {
    std::error_code ec;
    fs::remove_all(staging, ec);
  }
  return written;
}

StatusOr<uint64_t> RequestBackup(const std::string& state_dir, const std::string& out, int timeout_ms) {
  const std::string path = state_dir + "/" + kAdminSocketFile;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return InvalidArgumentError(fmt::format("admin socket path {} is longer than {} bytes (AF_UNIX limit)", path,
                                            sizeof(address.sun_path) - 1));
  }
  path.copy(address.sun_path, path.size());
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError(fmt::format("socket: {}", ErrnoText(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int err = errno;
    if (err == ENOENT) return NotFoundError(fmt::format("no coordinator socket at {}", path));
    if (err == ECONNREFUSED) return UnavailableError(fmt::format("nothing listens on {}", path));
    if (err == EACCES || err == EPERM) {
      return PermissionDeniedError(fmt::format(
          "cannot connect to {}: {} (run the backup as the coordinator's user or as root)", path, ErrnoText(err)));
    }
    return InternalError(fmt::format("cannot connect to {}: {}", path, ErrnoText(err)));
  }
  // A coordinator answered the connect: from here on every failure is its answer or an error, never "nobody
  // listens" (which would send TakeBackup to open the store itself). A failed send may still have a refusal
  // waiting to be read.
  const Status sent = SendAll(fd, "backup " + out + "\n");
  auto reply = ReadLine(fd, timeout_ms, 1 << 16, "coordinator at " + path);
  if (!reply.ok()) {
    return InternalError(fmt::format("{}{}", reply.status().message(), sent.ok() ? "" : " (" + sent.message() + ")"));
  }
  if (reply->rfind("ok ", 0) == 0) {
    try {
      return static_cast<uint64_t>(std::stoull(reply->substr(3)));
    } catch (const std::exception&) {
    }
  }
  if (reply->rfind("error ", 0) == 0) return FailedPreconditionError("the coordinator refused: " + reply->substr(6));
  return InternalError(fmt::format("coordinator at {}: unexpected answer '{}'", path, *reply));
}

StatusOr<BackupResult> TakeBackup(const std::string& state_dir, const std::string& out, int timeout_ms) {
  std::error_code ec;
  if (!fs::is_directory(state_dir, ec)) {
    return NotFoundError(fmt::format("state directory {} does not exist (or is not a directory)", state_dir));
  }
  const std::string target = fs::absolute(out, ec).lexically_normal().string();
  auto online = RequestBackup(state_dir, target, timeout_ms);
  if (online.ok()) return BackupResult{.sequence = *online, .online = true};
  if (online.status().code() != StatusCode::kNotFound && online.status().code() != StatusCode::kUnavailable) {
    return online.status();
  }
  // Nobody serves the socket: the coordinator is stopped (or predates online backups). Opening the store
  // takes its lock, so a coordinator cannot start on it meanwhile.
  auto store = storage::StateStore::Open(state_dir, {.create_if_missing = false});
  if (!store.ok()) {
    if (store.status().code() == StatusCode::kUnavailable) {
      return UnavailableError(fmt::format(
          "state directory {} is in use by a coordinator that does not answer on {}/{} ({}): is it an older "
          "anneal-coordinator without online backups? Stop it or upgrade it, then retry",
          state_dir, state_dir, kAdminSocketFile, online.status().message()));
    }
    return store.status();
  }
  ASSIGN_OR_RETURN(uint64_t sequence, WriteBackup(**store, state_dir, target));
  return BackupResult{.sequence = sequence, .online = false};
}

}  // namespace anneal::coordinator
