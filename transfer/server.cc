#include "transfer/server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq_addon.hpp>

#include "common/fsutil.h"
#include "transfer/manifest.h"
#include "transfer/path_confine.h"
#include "transfer/ticket.h"
#include "transfer/transfer.pb.h"

namespace anneal::transfer {
namespace {

constexpr int64_t kMaxFrameBytes = 1 << 20;  // ZeroMQ drops (and disconnects) anything larger
constexpr int kPollMs = 100;

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SetError(const Status& st, transferpb::TransferReply* reply) {
  reply->mutable_error()->set_code(static_cast<int>(st.code()));
  reply->mutable_error()->set_message(st.message());
}

}  // namespace

struct TransferServer::Impl {
  ServerOptions options;
  zmq::context_t context;
  zmq::socket_t frontend{context, zmq::socket_type::router};
  zmq::socket_t backend{context, zmq::socket_type::dealer};
  zmq::socket_t control_in{context, zmq::socket_type::pair};   // the proxy's end
  zmq::socket_t control_out{context, zmq::socket_type::pair};  // the destructor's end
  std::string endpoint;
  std::string backend_endpoint;
  std::thread proxy_thread;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};
  HashCache hash_cache;

  mutable std::mutex signer_mu;
  std::string signer_public_key;

  std::atomic<uint64_t> manifest_requests{0}, read_requests{0}, bytes_served{0}, refused{0};

  explicit Impl(ServerOptions opts) : options(std::move(opts)), hash_cache(options.hash_cache_path) {
    signer_public_key = options.signer_public_key;
  }

  std::string SignerKey() const {
    std::lock_guard lock(signer_mu);
    return signer_public_key;
  }

  void WorkerLoop();
  // Handles one request; `data` receives a Read's bytes.
  void Handle(const zmq::message_t& request, transferpb::TransferReply* reply, zmq::message_t* data);
  StatusOr<Ticket> Authorize(const transferpb::TransferRequest& request);
  Status ServeManifest(const Ticket& ticket, const transferpb::ManifestRequest& req, transferpb::TransferReply* reply);
  Status ServeRead(const Ticket& ticket, const transferpb::ReadRequest& req, transferpb::TransferReply* reply,
                   zmq::message_t* data);
};

void TransferServer::Impl::WorkerLoop() {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(backend_endpoint);
  while (!stopping.load()) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(kPollMs)) <= 0) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(socket, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
      if (parts.empty()) continue;
      transferpb::TransferReply reply;
      zmq::message_t data;
      bool has_data = false;
      if (parts.size() != 2) {
        // [routing id, request] is the only shape a DEALER client sends.
        SetError(InvalidArgumentError(fmt::format("a transfer request is one frame, got {}", parts.size() - 1)),
                 &reply);
        ++refused;
      } else {
        try {
          Handle(parts[1], &reply, &data);
        } catch (const std::exception& e) {  // never expected; a request must not take the server down
          reply.Clear();
          SetError(InternalError(fmt::format("transfer server failed on this request: {}", e.what())), &reply);
          ++refused;
        }
        has_data = !reply.has_error() && reply.has_read();
      }
      std::array<zmq::message_t, 3> out{zmq::message_t(parts[0].data(), parts[0].size()),
                                        zmq::message_t(reply.SerializeAsString()), std::move(data)};
      socket.send(out[0], zmq::send_flags::sndmore);
      socket.send(out[1], has_data ? zmq::send_flags::sndmore : zmq::send_flags::none);
      if (has_data) socket.send(out[2], zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::warn("transfer server worker: {}", e.what());
    }
  }
}

void TransferServer::Impl::Handle(const zmq::message_t& frame, transferpb::TransferReply* reply, zmq::message_t* data) {
  transferpb::TransferRequest request;
  Status st;
  if (frame.size() > kMaxRequestBytes) {
    st = InvalidArgumentError(
        fmt::format("transfer request of {} bytes, more than the {} allowed", frame.size(), kMaxRequestBytes));
  } else if (!request.ParseFromArray(frame.data(), static_cast<int>(frame.size()))) {
    st = InvalidArgumentError("not a transfer request (the frame does not parse as TransferRequest)");
  } else {
    reply->set_request_id(request.request_id());
    auto ticket = Authorize(request);
    if (!ticket.ok()) {
      st = ticket.status();
    } else if (request.has_manifest()) {
      ++manifest_requests;
      st = ServeManifest(*ticket, request.manifest(), reply);
    } else if (request.has_read()) {
      ++read_requests;
      st = ServeRead(*ticket, request.read(), reply, data);
    } else {
      st = InvalidArgumentError("transfer request names no operation (manifest or read)");
    }
  }
  if (!st.ok()) {
    ++refused;
    reply->clear_kind();
    SetError(st, reply);
    spdlog::warn("transfer server {}: refused: {}", options.node_id, st.ToString());
  }
}

StatusOr<Ticket> TransferServer::Impl::Authorize(const transferpb::TransferRequest& request) {
  const std::string key = SignerKey();
  if (key.empty()) {
    return UnavailableError(fmt::format(
        "node '{}' cannot check tickets yet (it has not learned the coordinator's signer key): try again later",
        options.node_id));
  }
  return VerifyTicket(request.ticket(), key, options.node_id, options.now_ms());
}

Status TransferServer::Impl::ServeManifest(const Ticket& ticket, const transferpb::ManifestRequest& req,
                                           transferpb::TransferReply* reply) {
  RETURN_IF_ERROR(ConfinePath(ticket.root, req.subpath(), /*allow_root=*/true).status());
  // Built from the path as the ticket names it, so a single file's entry carries the name the reader asks for.
  const std::string target = req.subpath().empty() ? ticket.root : ticket.root + "/" + req.subpath();
  ASSIGN_OR_RETURN(Manifest manifest, BuildManifest(target, &hash_cache));
  auto* out = reply->mutable_manifest();
  for (const auto& f : manifest.files) {
    auto* e = out->add_files();
    e->set_path(f.path);
    e->set_size(f.size);
    e->set_sha256(f.sha256);
  }
  spdlog::debug("transfer server {}: manifest of {}/{} ({} files) for {} of job {}", options.node_id, ticket.root,
                req.subpath(), manifest.files.size(), ticket.purpose, ticket.job_id);
  return Status::Ok();
}

Status TransferServer::Impl::ServeRead(const Ticket& ticket, const transferpb::ReadRequest& req,
                                       transferpb::TransferReply* reply, zmq::message_t* data) {
  if (req.length() == 0 || req.length() > kMaxChunkBytes) {
    return InvalidArgumentError(
        fmt::format("read of {} bytes: a read asks for 1 to {} bytes", req.length(), kMaxChunkBytes));
  }
  ASSIGN_OR_RETURN(std::string target, ConfinePath(ticket.root, req.path(), /*allow_root=*/false));
  const int fd = ::open(target.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return UnavailableError(fmt::format("cannot open '{}': {}", req.path(), ErrnoText(errno)));
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
  bytes_served += n;
  spdlog::debug("transfer server {}: read {} [{}, +{}) for {} of job {}", options.node_id, req.path(), req.offset(), n,
                ticket.purpose, ticket.job_id);
  return Status::Ok();
}

TransferServer::TransferServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusOr<std::unique_ptr<TransferServer>> TransferServer::Start(ServerOptions options) {
  if (options.node_id.empty()) return InvalidArgumentError("transfer server: node_id is empty");
  if (options.threads < 1) return InvalidArgumentError("transfer server: threads must be at least 1");
  if (!options.now_ms) options.now_ms = SystemNowMs;
  RETURN_IF_ERROR(protocol::CheckCurveKeyText(options.server_keys.public_key, "transfer server public key"));
  RETURN_IF_ERROR(protocol::CheckCurveKeyText(options.server_keys.secret_key, "transfer server secret key"));
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl& s = *impl;
  RETURN_IF_ERROR(protocol::ConfigureCurveServer(s.frontend, s.options.server_keys));
  try {
    s.frontend.set(zmq::sockopt::linger, 0);
    s.frontend.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
    s.frontend.set(zmq::sockopt::router_mandatory, 0);
    s.frontend.bind(s.options.bind_endpoint);
    s.endpoint = s.frontend.get(zmq::sockopt::last_endpoint);
    s.backend_endpoint = fmt::format("inproc://transfer-workers-{}", static_cast<void*>(&s));
    s.backend.set(zmq::sockopt::linger, 0);
    s.backend.bind(s.backend_endpoint);
    const std::string control = fmt::format("inproc://transfer-control-{}", static_cast<void*>(&s));
    s.control_in.bind(control);
    s.control_out.connect(control);
  } catch (const zmq::error_t& e) {
    return UnavailableError(fmt::format("transfer server cannot bind {}: {}", s.options.bind_endpoint, e.what()));
  }
  s.proxy_thread = std::thread([&s] {
    try {
      zmq::proxy_steerable(s.frontend, s.backend, zmq::socket_ref(), s.control_in);
    } catch (const zmq::error_t& e) {
      if (e.num() != ETERM) spdlog::error("transfer server proxy stopped: {}", e.what());
    }
  });
  for (int i = 0; i < s.options.threads; ++i) s.workers.emplace_back([&s] { s.WorkerLoop(); });
  spdlog::info("transfer server of node '{}' serving on {}", s.options.node_id, s.endpoint);
  return std::unique_ptr<TransferServer>(new TransferServer(std::move(impl)));
}

TransferServer::~TransferServer() {
  impl_->stopping = true;
  try {
    impl_->control_out.send(zmq::str_buffer("TERMINATE"), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
  }
  impl_->proxy_thread.join();
  for (auto& t : impl_->workers) t.join();
  impl_->frontend.close();
  impl_->backend.close();
  impl_->control_in.close();
  impl_->control_out.close();
  impl_->context.close();
}

std::string TransferServer::endpoint() const {
  return impl_->endpoint;
}
const std::string& TransferServer::public_key() const {
  return impl_->options.server_keys.public_key;
}

void TransferServer::SetSignerPublicKey(std::string key) {
  std::lock_guard lock(impl_->signer_mu);
  impl_->signer_public_key = std::move(key);
}

StatusOr<Manifest> TransferServer::LocalManifest(const std::string& path) {
  return BuildManifest(path, &impl_->hash_cache);
}

ServerStats TransferServer::stats() const {
  return {impl_->manifest_requests.load(), impl_->read_requests.load(), impl_->bytes_served.load(),
          impl_->refused.load()};
}

}  // namespace anneal::transfer
