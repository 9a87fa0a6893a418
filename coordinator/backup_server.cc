// BackupServer: online backups of a serving coordinator over <state dir>/admin.sock (coordinator/backup.h).
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

#include "common/fsutil.h"
#include "coordinator/backup.h"
#include "coordinator/backup_internal.h"

namespace anneal::coordinator {
namespace {

constexpr int kRequestTimeoutMs = 10000;
constexpr size_t kMaxRequestBytes = 4096;
constexpr std::string_view kBackupVerb = "backup ";

// The answer is one line: newlines inside a message would end it early.
std::string ErrorLine(std::string message) {
  for (char& c : message) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return "error " + message + "\n";
}

}  // namespace

BackupServer::BackupServer(const storage::StateStore* store, std::string state_dir)
    : store_(store), state_dir_(std::move(state_dir)), socket_path_(state_dir_ + "/" + kAdminSocketFile) {}

BackupServer::~BackupServer() {
  Stop();
}

Status BackupServer::Start() {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(address.sun_path)) {
    return InvalidArgumentError(
        fmt::format("admin socket path {} is longer than {} bytes (AF_UNIX limit): use a "
                    "shorter --state-dir to get online backups",
                    socket_path_, sizeof(address.sun_path) - 1));
  }
  socket_path_.copy(address.sun_path, socket_path_.size());
  // A socket left by a killed coordinator: ours to replace (the caller holds the store's lock). Anything else
  // at that path is not ours to delete.
  struct stat st {};
  if (lstat(socket_path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return FailedPreconditionError(fmt::format("{} exists and is not a socket: move it away", socket_path_));
    }
    unlink(socket_path_.c_str());
  }
  listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return InternalError(fmt::format("admin socket: {}", ErrnoText(errno)));
  if (bind(listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      chmod(socket_path_.c_str(), 0600) != 0 || listen(listen_fd_, 4) != 0 || pipe2(wake_pipe_, O_CLOEXEC) != 0) {
    const int err = errno;
    Stop();
    return InternalError(fmt::format("admin socket {}: {}", socket_path_, ErrnoText(err)));
  }
  thread_ = std::thread([this] { Loop(); });
  return Status::Ok();
}

void BackupServer::Stop() {
  if (thread_.joinable()) {
    const char wake = 'x';
    [[maybe_unused]] ssize_t n = write(wake_pipe_[1], &wake, 1);
    thread_.join();
  }
  for (int* fd : {&listen_fd_, &wake_pipe_[0], &wake_pipe_[1]}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  struct stat st {};
  if (lstat(socket_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(socket_path_.c_str());
}

void BackupServer::Loop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("admin socket {}: poll: {}; online backups stop", socket_path_, ErrnoText(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int connection = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;  // the peer went away (ECONNABORTED), or EINTR
    Serve(connection);
    close(connection);
  }
}

// One request: who asks (SO_PEERCRED), then `backup <out>`, answered with `ok <sequence>` or `error <why>`.
void BackupServer::Serve(int connection) {
  ucred peer{};
  socklen_t size = sizeof(peer);
  if (getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return;
  const uid_t self = geteuid();
  if (peer.uid != self && peer.uid != 0) {
    const std::string why =
        fmt::format("backup refused: uid {} (pid {}) is neither the coordinator's user (uid {}) nor root", peer.uid,
                    peer.pid, self);
    spdlog::warn("{} on {}", why, socket_path_);
    // Take the request first (briefly): closing on unread bytes could reset the connection before the client
    // reads why it was refused.
    (void)backup_internal::ReadLine(connection, 1000, kMaxRequestBytes, "refused request");
    (void)backup_internal::SendAll(connection, ErrorLine(why));
    return;
  }
  auto request = backup_internal::ReadLine(connection, kRequestTimeoutMs, kMaxRequestBytes, "backup request");
  if (!request.ok()) {
    spdlog::warn("admin socket {}: {} (uid {}, pid {})", socket_path_, request.status().message(), peer.uid, peer.pid);
    (void)backup_internal::SendAll(connection, ErrorLine(request.status().message()));
    return;
  }
  if (request->rfind(kBackupVerb, 0) != 0) {
    (void)backup_internal::SendAll(connection, "error unknown request (expected 'backup <absolute dir>')\n");
    return;
  }
  const std::string out = request->substr(kBackupVerb.size());
  spdlog::info("backup into {} requested by uid {} (pid {})", out, peer.uid, peer.pid);
  auto sequence = WriteBackup(*store_, state_dir_, out);
  if (!sequence.ok()) {
    spdlog::warn("backup into {} failed: {}", out, sequence.status().message());
    (void)backup_internal::SendAll(connection, ErrorLine(sequence.status().message()));
    return;
  }
  spdlog::info("backup into {} done (sequence {})", out, *sequence);
  (void)backup_internal::SendAll(connection, fmt::format("ok {}\n", *sequence));
}

}  // namespace anneal::coordinator
