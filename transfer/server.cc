#include "transfer/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>
#include <zmq_addon.hpp>

#include "transfer/manifest.h"
#include "transfer/request_handler.h"
#include "transfer/transfer.pb.h"

namespace anneal::transfer {
namespace {

constexpr int64_t kMaxFrameBytes = 1 << 20;  // ZeroMQ drops (and disconnects) anything larger
constexpr int kPollMs = 100;

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct TransferServer::Impl {
  ServerOptions options;
  zmq::context_t context{2};  // two I/O threads: CurveZMQ encrypts there, so one would cap a server at one core
  zmq::socket_t frontend{context, zmq::socket_type::router};
  zmq::socket_t backend{context, zmq::socket_type::dealer};
  zmq::socket_t control_in{context, zmq::socket_type::pair};   // the proxy's end
  zmq::socket_t control_out{context, zmq::socket_type::pair};  // the destructor's end
  std::string endpoint;
  std::string backend_endpoint;
  std::thread proxy_thread;
  std::vector<std::thread> workers;
  std::atomic<bool> stopping{false};
  RequestHandler handler;

  explicit Impl(ServerOptions opts)
      : options(std::move(opts)),
        handler(options.node_id, options.signer_public_key, options.now_ms, options.hash_cache_path, options.read_as) {}

  void WorkerLoop();
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
      // [routing id, request] is the only shape a DEALER client sends.
      handler.Handle(parts.size() == 2 ? std::string_view(parts[1].data<char>(), parts[1].size()) : std::string_view(),
                     parts.size() - 1, &reply, &data);
      const bool has_data = !reply.has_error() && reply.has_read();
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

TransferServer::TransferServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusOr<std::unique_ptr<TransferServer>> TransferServer::Start(ServerOptions options) {
  if (options.node_id.empty()) return InvalidArgumentError("transfer server: node_id is empty");
  if (options.threads < 1) return InvalidArgumentError("transfer server: threads must be at least 1");
  if (!options.now_ms) options.now_ms = SystemNowMs;  // before Impl copies it into the handler
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
  impl_->handler.SetSignerPublicKey(std::move(key));
}

StatusOr<Manifest> TransferServer::LocalManifest(const std::string& path) {
  return impl_->handler.LocalManifest(path);
}

ServerStats TransferServer::stats() const {
  return impl_->handler.stats();
}

}  // namespace anneal::transfer
