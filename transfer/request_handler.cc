#include "transfer/request_handler.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <optional>

#include "common/fsutil.h"
#include "transfer/path_confine.h"
#include "transfer/server.h"
#include "transfer/ticket.h"

namespace anneal::transfer {
namespace {

void SetError(const Status& st, transferpb::TransferReply* reply) {
  reply->mutable_error()->set_code(static_cast<int>(st.code()));
  reply->mutable_error()->set_message(st.message());
}

// This thread's filesystem identity (setfsuid/setfsgid act on the calling thread only; the raw syscalls, as glibc
// does not broadcast them) for the life of the object: opens and stats are checked as that user, with the
// filesystem capabilities (CAP_DAC_OVERRIDE, ...) dropped while the fsuid is not 0.
class ScopedFsIdentity {
 public:
  ScopedFsIdentity(uid_t uid, gid_t gid) {
    old_gid_ = static_cast<gid_t>(::syscall(SYS_setfsgid, gid));
    old_uid_ = static_cast<uid_t>(::syscall(SYS_setfsuid, uid));
  }
  ~ScopedFsIdentity() {
    ::syscall(SYS_setfsuid, old_uid_);
    ::syscall(SYS_setfsgid, old_gid_);
  }
  ScopedFsIdentity(const ScopedFsIdentity&) = delete;
  ScopedFsIdentity& operator=(const ScopedFsIdentity&) = delete;

 private:
  uid_t old_uid_;
  gid_t old_gid_;
};

}  // namespace

RequestHandler::RequestHandler(std::string node_id, std::string signer_public_key, std::function<int64_t()> now_ms,
                               const std::string& hash_cache_path, ReadAs read_as)
    : node_id_(std::move(node_id)),
      now_ms_(std::move(now_ms)),
      read_as_(std::move(read_as)),
      hash_cache_(hash_cache_path),
      signer_public_key_(std::move(signer_public_key)) {}

void RequestHandler::SetSignerPublicKey(std::string key) {
  std::lock_guard lock(signer_mu_);
  signer_public_key_ = std::move(key);
}

std::string RequestHandler::SignerPublicKey() const {
  std::lock_guard lock(signer_mu_);
  return signer_public_key_;
}

ServerStats RequestHandler::stats() const {
  return {manifest_requests_.load(), read_requests_.load(), bytes_served_.load(), refused_.load()};
}

StatusOr<Manifest> RequestHandler::LocalManifest(const std::string& path) {
  return BuildManifest(path, &hash_cache_);
}

void RequestHandler::Handle(std::string_view frame, size_t frames, transferpb::TransferReply* reply,
                            zmq::message_t* data) {
  Status st;
  try {
    st = Dispatch(frame, frames, reply, data);
  } catch (const std::exception& e) {  // never expected; a request must not take the server down
    st = InternalError(fmt::format("transfer server failed on this request: {}", e.what()));
  }
  if (!st.ok()) {
    ++refused_;
    reply->clear_kind();
    SetError(st, reply);
    spdlog::warn("transfer server {}: refused: {}", node_id_, st.ToString());
  }
}

Status RequestHandler::Dispatch(std::string_view frame, size_t frames, transferpb::TransferReply* reply,
                                zmq::message_t* data) {
  if (frames != 1) return InvalidArgumentError(fmt::format("a transfer request is one frame, got {}", frames));
  if (frame.size() > kMaxRequestBytes) {
    return InvalidArgumentError(
        fmt::format("transfer request of {} bytes, more than the {} allowed", frame.size(), kMaxRequestBytes));
  }
  transferpb::TransferRequest request;
  if (!request.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    return InvalidArgumentError("not a transfer request (the frame does not parse as TransferRequest)");
  }
  reply->set_request_id(request.request_id());
  ASSIGN_OR_RETURN(Ticket ticket, Authorize(request));
  std::optional<ScopedFsIdentity> as_team;
  if (read_as_) {
    auto ids = read_as_(ticket.team);
    if (!ids.ok()) {
      return PermissionDeniedError(
          fmt::format("no user to read files as for team '{}': {}", ticket.team, ids.status().message()));
    }
    as_team.emplace(ids->first, ids->second);
  }
  if (request.has_manifest()) {
    ++manifest_requests_;
    return ServeManifest(ticket, request.manifest(), reply);
  }
  if (request.has_read()) {
    ++read_requests_;
    return ServeRead(ticket, request.read(), reply, data);
  }
  return InvalidArgumentError("transfer request names no operation (manifest or read)");
}

StatusOr<Ticket> RequestHandler::Authorize(const transferpb::TransferRequest& request) {
  const std::string key = SignerPublicKey();
  if (key.empty()) {
    return UnavailableError(fmt::format(
        "node '{}' cannot check tickets yet (it has not learned the coordinator's signer key): try again later",
        node_id_));
  }
  return VerifyTicket(request.ticket(), key, node_id_, now_ms_());
}

Status RequestHandler::ServeManifest(const Ticket& ticket, const transferpb::ManifestRequest& req,
                                     transferpb::TransferReply* reply) {
  RETURN_IF_ERROR(ConfinePath(ticket.root, req.subpath(), /*allow_root=*/true).status());
  // Built from the path as the ticket names it, so a single file's entry carries the name the reader asks for.
  const std::string target = req.subpath().empty() ? ticket.root : ticket.root + "/" + req.subpath();
  ASSIGN_OR_RETURN(Manifest manifest, BuildManifest(target, &hash_cache_));
  auto* out = reply->mutable_manifest();
  for (const auto& f : manifest.files) {
    auto* e = out->add_files();
    e->set_path(f.path);
    e->set_size(f.size);
    e->set_sha256(f.sha256);
  }
  spdlog::debug("transfer server {}: manifest of {}/{} ({} files) for {} of job {}", node_id_, ticket.root,
                req.subpath(), manifest.files.size(), ticket.purpose, ticket.job_id);
  return Status::Ok();
}

Status RequestHandler::ServeRead(const Ticket& ticket, const transferpb::ReadRequest& req,
                                 transferpb::TransferReply* reply, zmq::message_t* data) {
  if (req.length() == 0 || req.length() > kMaxChunkBytes) {
    return InvalidArgumentError(
        fmt::format("read of {} bytes: a read asks for 1 to {} bytes", req.length(), kMaxChunkBytes));
  }
  ASSIGN_OR_RETURN(std::string target, ConfinePath(ticket.root, req.path(), /*allow_root=*/false));
  const int fd = ::open(target.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string text = fmt::format("cannot open '{}': {}", req.path(), ErrnoText(err));
    return err == EACCES ? PermissionDeniedError(text) : UnavailableError(text);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(fmt::format("'{}' is not a regular file", req.path()));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const uint64_t n = req.offset() >= size ? 0 : std::min<uint64_t>(req.length(), size - req.offset());
  zmq::message_t bytes(n);
  uint64_t done = 0;
  while (done < n) {
    const ssize_t got =
        ::pread(fd, static_cast<char*>(bytes.data()) + done, n - done, static_cast<off_t>(req.offset() + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = got < 0 ? errno : 0;
      ::close(fd);
      return UnavailableError(fmt::format("cannot read '{}' at {}: {}", req.path(), req.offset() + done,
                                          got < 0 ? ErrnoText(err) : "the file shrank"));
    }
    done += static_cast<uint64_t>(got);
  }
  ::close(fd);
  reply->mutable_read()->set_file_size(size);
  reply->mutable_read()->set_offset(req.offset());
  *data = std::move(bytes);
  bytes_served_ += n;
  spdlog::debug("transfer server {}: read {} [{}, +{}) for {} of job {}", node_id_, req.path(), req.offset(), n,
                ticket.purpose, ticket.job_id);
  return Status::Ok();
}

}  // namespace anneal::transfer
