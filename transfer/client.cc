#include "transfer/client.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <vector>
#include <zmq_addon.hpp>

#include "common/fsutil.h"
#include "protocol/curve.h"
#include "transfer/channel.h"
#include "transfer/server.h"
#include "transfer/transfer.pb.h"

namespace anneal::transfer {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPollSliceMs = 50;                 // how often a wait checks the cancel flag
constexpr int64_t kMaxReplyBytes = 256ll << 20;  // a manifest of kMaxManifestFiles long paths fits

struct Reply {
  transferpb::TransferReply message;
  std::string data;  // a Read's bytes
};

}  // namespace

Channel::Channel(Source source, const FetchOptions& options) : source_(std::move(source)), options_(options) {}

Channel::~Channel() {
  socket_.reset();
  context_.close();
}

Status Channel::Open() {
  RETURN_IF_ERROR(protocol::CheckCurveKeyText(source_.server_public_key,
                                              fmt::format("the transfer server key of {}", source_.endpoint)));
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  try {
    socket_->set(zmq::sockopt::linger, 0);
    socket_->set(zmq::sockopt::maxmsgsize, kMaxReplyBytes);
    RETURN_IF_ERROR(protocol::ConfigureCurveClient(*socket_, source_.server_public_key));
    socket_->connect(source_.endpoint);
  } catch (const zmq::error_t& e) {
    socket_.reset();
    return InvalidArgumentError(fmt::format("cannot connect to transfer server {}: {}", source_.endpoint, e.what()));
  }
  return Status::Ok();
}

Status Channel::CheckCancel() const {
  if (options_.cancel != nullptr && options_.cancel->load()) {
    return CancelledError(fmt::format("transfer from {} cancelled", source_.endpoint));
  }
  return Status::Ok();
}

Status Channel::NoReply(int timeout_ms) const {
  return DeadlineExceededError(fmt::format(
      "no reply from transfer server {} after {} tries of {} ms: it is down or unreachable, or its public key is "
      "not the one this client was given",
      source_.endpoint, options_.max_retries + 1, timeout_ms));
}

namespace {

// Sends one request without blocking (a request that cannot be queued is retried by the timeout path).
void SendRequest(zmq::socket_t& socket, const transferpb::TransferRequest& request) {
  const std::string bytes = request.SerializeAsString();
  (void)socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
}

// Waits up to `ms` for a reply; nullopt when none came (or a malformed one, which is dropped).
std::optional<Reply> ReceiveReply(zmq::socket_t& socket, int ms) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(ms)) <= 0) return std::nullopt;
  std::vector<zmq::message_t> parts;
  if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait) || parts.empty() ||
      parts.size() > 2) {
    return std::nullopt;
  }
  Reply reply;
  if (!reply.message.ParseFromArray(parts[0].data(), static_cast<int>(parts[0].size()))) return std::nullopt;
  if (parts.size() == 2) reply.data = parts[1].to_string();
  return reply;
}

Status ServerError(const transferpb::TransferError& error, const std::string& endpoint) {
  const int code = std::clamp(error.code(), 1, static_cast<int>(StatusCode::kCancelled));
  return Status(static_cast<StatusCode>(code), fmt::format("transfer server {}: {}", endpoint, error.message()));
}

std::string JoinPath(const std::string& subpath, const std::string& path) {
  return subpath.empty() ? path : subpath + "/" + path;
}

}  // namespace

StatusOr<Manifest> Channel::GetManifest(const std::string& subpath) {
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    RETURN_IF_ERROR(Open());  // a fresh socket per try: a lost handshake or reply does not linger
    transferpb::TransferRequest request;
    request.set_request_id(next_request_id_++);
    request.set_ticket(source_.ticket);
    request.mutable_manifest()->set_subpath(subpath);
    SendRequest(*socket_, request);
    const auto deadline =
        Clock::now() + std::chrono::milliseconds(std::max(options_.timeout_ms, options_.manifest_timeout_ms));
    while (Clock::now() < deadline) {
      RETURN_IF_ERROR(CheckCancel());
      auto reply = ReceiveReply(*socket_, kPollSliceMs);
      if (!reply || reply->message.request_id() != request.request_id()) continue;
      if (reply->message.has_error()) return ServerError(reply->message.error(), source_.endpoint);
      if (!reply->message.has_manifest()) {
        return DataLossError(
            fmt::format("transfer server {} answered a manifest request with no manifest", source_.endpoint));
      }
      Manifest manifest;
      for (const auto& f : reply->message.manifest().files())
        manifest.files.push_back({f.path(), f.size(), f.sha256()});
      if (Status st = ValidateManifest(manifest); !st.ok()) {
        return st.WithContext(fmt::format("manifest from transfer server {}", source_.endpoint));
      }
      return manifest;
    }
  }
  return NoReply(std::max(options_.timeout_ms, options_.manifest_timeout_ms));
}

Status Channel::ReadRange(const std::string& path, uint64_t from, uint64_t size,
                          const std::function<Status(uint64_t offset, std::string_view bytes)>& sink) {
  if (from >= size) return Status::Ok();
  const uint64_t chunk = std::clamp<uint64_t>(options_.chunk_bytes, 1, kMaxChunkBytes);
  const size_t window = static_cast<size_t>(std::max(1, options_.window));
  if (!socket_) RETURN_IF_ERROR(Open());
  uint64_t next_send = from, next_write = from;
  std::map<uint64_t, uint64_t> in_flight;  // request id -> offset
  std::map<uint64_t, std::string> ready;   // offset -> bytes, arrived ahead of next_write
  int retries = 0;
  auto last_progress = Clock::now();
  while (next_write < size) {
    RETURN_IF_ERROR(CheckCancel());
    while (in_flight.size() + ready.size() < window && next_send < size) {
      transferpb::TransferRequest request;
      request.set_request_id(next_request_id_++);
      request.set_ticket(source_.ticket);
      auto* read = request.mutable_read();
      read->set_path(path);
      read->set_offset(next_send);
      read->set_length(std::min(chunk, size - next_send));
      SendRequest(*socket_, request);
      in_flight[request.request_id()] = next_send;
      next_send += read->length();
    }
    auto reply = ReceiveReply(*socket_, kPollSliceMs);
    if (!reply) {
      if (Clock::now() - last_progress < std::chrono::milliseconds(options_.timeout_ms)) continue;
      if (++retries > options_.max_retries) return NoReply(options_.timeout_ms);
      RETURN_IF_ERROR(Open());  // the lost requests are sent again on a fresh socket
      spdlog::warn(
          "transfer: no reply from {} for {} ms reading '{}': resumed at byte {} of {} on a fresh socket "
          "(retry {} of {})",
          source_.endpoint, options_.timeout_ms, path, next_write, size, retries, options_.max_retries);
      if (options_.stats != nullptr) {
        ++options_.stats->re_requests;
        options_.stats->last_re_request_offset = next_write;
      }
      in_flight.clear();
      next_send = next_write;
      ready.clear();
      last_progress = Clock::now();
      continue;
    }
    const auto it = in_flight.find(reply->message.request_id());
    if (it == in_flight.end()) continue;  // a reply to a request given up on
    const uint64_t offset = it->second;
    in_flight.erase(it);
    if (reply->message.has_error()) {
      return ServerError(reply->message.error(), source_.endpoint).WithContext(fmt::format("reading '{}'", path));
    }
    if (!reply->message.has_read() || reply->message.read().offset() != offset) {
      return DataLossError(fmt::format("transfer server {} answered a read of '{}' at {} with another reply",
                                       source_.endpoint, path, offset));
    }
    if (reply->message.read().file_size() != size) {
      return DataLossError(fmt::format("'{}' on {} is now {} bytes, the manifest says {}", path, source_.endpoint,
                                       reply->message.read().file_size(), size));
    }
    const uint64_t expected = std::min(chunk, size - offset);
    if (reply->data.size() != expected) {
      return DataLossError(fmt::format("transfer server {} returned {} bytes of '{}' at {}, expected {}",
                                       source_.endpoint, reply->data.size(), path, offset, expected));
    }
    ready.emplace(offset, std::move(reply->data));
    while (!ready.empty() && ready.begin()->first == next_write) {
      RETURN_IF_ERROR(sink(next_write, ready.begin()->second));
      next_write += ready.begin()->second.size();
      ready.erase(ready.begin());
    }
    retries = 0;
    last_progress = Clock::now();
  }
  return Status::Ok();
}

StatusOr<Manifest> FetchManifest(const Source& source, const std::string& subpath, const FetchOptions& options) {
  Channel channel(source, options);
  return channel.GetManifest(subpath);
}

Status FetchFile(const Source& source, const std::string& path, const std::string& dest_path,
                 const FetchOptions& options) {
  Channel channel(source, options);
  ASSIGN_OR_RETURN(Manifest manifest, channel.GetManifest(JoinPath(options.subpath, path)));
  if (manifest.files.size() != 1) {
    return InvalidArgumentError(fmt::format("'{}' on {} is a directory, not a file", path, source.endpoint));
  }
  const uint64_t size = manifest.files[0].size;
  const int fd = ::open(dest_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return UnavailableError(fmt::format("cannot create {}: {}", dest_path, ErrnoText(errno)));
  Status st = channel.ReadRange(JoinPath(options.subpath, path), 0, size, [&](uint64_t offset, std::string_view bytes) {
    if (::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(bytes.size())) {
      return UnavailableError(fmt::format("cannot write {}: {}", dest_path, ErrnoText(errno)));
    }
    if (options.progress) options.progress(offset + bytes.size(), size);
    return Status::Ok();
  });
  ::close(fd);
  RETURN_IF_ERROR(st);
  ASSIGN_OR_RETURN(std::string sha, Sha256File(dest_path));
  if (sha != manifest.files[0].sha256) {
    return DataLossError(fmt::format("'{}' from {}: the bytes do not match its SHA-256", path, source.endpoint));
  }
  return Status::Ok();
}

}  // namespace anneal::transfer
