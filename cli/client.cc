#include "cli/client.h"

#include <fmt/format.h>

#include <cstring>
#include <random>

#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::cli {

using Clock = std::chrono::steady_clock;

CoordinatorClient::CoordinatorClient(std::string address, std::string token, std::chrono::milliseconds timeout,
                                     ClientTransport transport)
    : address_(std::move(address)),
      token_(std::move(token)),
      timeout_(timeout),
      context_(1),
      transport_(std::move(transport)) {
  // Request ids start at a random point so a reply meant for an earlier CLI process is never mistaken for ours.
  next_request_id_ = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
}

Status CoordinatorClient::Connect() {
  if (socket_) return Status::Ok();
  if (address_.rfind("tcp://", 0) != 0 && address_.rfind("ipc://", 0) != 0) {
    return InvalidArgumentError(fmt::format(
        "invalid coordinator address '{}': expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:7070)", address_));
  }
  if (transport_.server_key.empty() && !transport_.insecure_plaintext) {
    return FailedPreconditionError(fmt::format(
        "no server key for the coordinator at {}: set server_key in the client config (~/.anneal/config; anneal up "
        "writes it), ANNEAL_SERVER_KEY or --server-key to the coordinator's public key (it prints it at start and "
        "keeps it in <state dir>/curve.pub); --insecure-plaintext only for a coordinator run without CurveZMQ",
        address_));
  }
  auto socket = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  socket->set(zmq::sockopt::linger, 0);
  socket->set(zmq::sockopt::sndtimeo, static_cast<int>(timeout_.count()));
  socket->set(zmq::sockopt::reconnect_ivl, 100);
  socket->set(zmq::sockopt::maxmsgsize, transport_.max_reply_bytes);
  if (!transport_.insecure_plaintext) {
    RETURN_IF_ERROR(protocol::ConfigureCurveClient(*socket, transport_.server_key)
                        .WithContext(fmt::format("server key from {}", transport_.server_key_from)));
  }
  const std::string monitor_endpoint =
      fmt::format("inproc://anneal-cli-monitor-{}-{}", fmt::ptr(this), ++socket_generation_);
  monitor_.reset();
  if (zmq_socket_monitor(socket->handle(), monitor_endpoint.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
    monitor_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(monitor_endpoint);
  }
  try {
    socket->connect(address_);
  } catch (const zmq::error_t& e) {
    return InvalidArgumentError(fmt::format("invalid coordinator address '{}': {}", address_, e.what()));
  }
  socket_ = std::move(socket);
  return Status::Ok();
}

std::string CoordinatorClient::NoReplyReason(std::chrono::milliseconds waited, size_t request_bytes) {
  bool connected = false, handshake_ok = false, handshake_failed = false;
  while (monitor_) {
    zmq::message_t event, address;
    if (!monitor_->recv(event, zmq::recv_flags::dontwait)) break;
    if (event.more()) (void)monitor_->recv(address, zmq::recv_flags::dontwait);
    if (event.size() < 2) continue;
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof(id));
    connected = connected || id == ZMQ_EVENT_CONNECTED;
    handshake_ok = handshake_ok || id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    handshake_failed =
        handshake_failed || (id & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));
  }
  const double seconds = std::chrono::duration<double>(waited).count();
  if (handshake_failed && !handshake_ok) {
    if (transport_.insecure_plaintext) {
      return fmt::format(
          "the coordinator at {} refused the plaintext handshake (no reply within {:g} s): it requires CurveZMQ; "
          "drop --insecure-plaintext and set its server key (server_key in ~/.anneal/config, ANNEAL_SERVER_KEY or "
          "--server-key)",
          address_, seconds);
    }
    return fmt::format(
        "the coordinator at {} closed the connection during the CurveZMQ handshake (no reply within {:g} s): the "
        "server key (from {}) is probably wrong (the coordinator's key is in its <state dir>/curve.pub), or the "
        "coordinator runs with --insecure-plaintext",
        address_, seconds, transport_.server_key_from.empty() ? "the caller" : transport_.server_key_from);
  }
  if (handshake_ok && request_bytes > (16u << 20)) {
    return fmt::format(
        "coordinator at {} gave no reply within {:g} s to a request of {} bytes: a coordinator closes the "
        "connection of a frame above its max_message_bytes (16 MiB by default)",
        address_, seconds, request_bytes);
  }
  std::string text = fmt::format("coordinator not reachable at {}: no reply within {:g} s; is it running? (anneal up)",
                                 address_, seconds);
  if (!transport_.insecure_plaintext && !handshake_ok) {
    text += fmt::format("; if it is, the server key (from {}) may be wrong",
                        transport_.server_key_from.empty() ? "the caller" : transport_.server_key_from);
  }
  return text;
}

StatusOr<pb::ClientReply> CoordinatorClient::Call(pb::ClientRequest request, std::chrono::milliseconds extra_wait) {
  RETURN_IF_ERROR(Connect());
  const uint64_t id = next_request_id_++;
  request.set_token(token_);
  request.set_request_id(id);
  const auto wait = timeout_ + extra_wait;
  const size_t request_bytes = request.ByteSizeLong();
  auto unreachable = [&] {
    const std::string reason = NoReplyReason(wait, request_bytes);
    // Drop the socket: a reply that arrives later must not be read as the answer to the next request.
    monitor_.reset();
    socket_.reset();
    return UnavailableError(reason);
  };

  if (Status sent = protocol::Send(*socket_, protocol::MessageKind::kClientRequest, request); !sent.ok()) {
    return unreachable();
  }
  const auto deadline = Clock::now() + wait;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    socket_->set(zmq::sockopt::rcvtimeo, static_cast<int>(left.count()));
    auto frames = protocol::Receive(*socket_, /*routed=*/false);
    if (!frames.ok()) {
      if (frames.status().code() == StatusCode::kDeadlineExceeded) break;
      return frames.status();
    }
    pb::ClientReply reply;
    if (Status parsed = protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply); !parsed.ok()) {
      return parsed.WithContext(fmt::format("bad reply from {}", address_));
    }
    if (reply.request_id() != id) continue;  // a late reply to an earlier request
    if (reply.has_error() && reply.error().code() != pb::OK) return protocol::FromProto(reply.error());
    // The reply's body has the same field number as the request's (submit = 10 in both, ...).
    // Identity mutations (bodies 30-49) share one reply body, IdentityDone.
    const int asked = static_cast<int>(request.body_case());
    const bool shared_done = reply.has_identity_done() && asked >= 30 && asked < 50;
    // Schedule requests (bodies 67-74) but the list answer with the schedule itself, ScheduleReply (67).
    const bool shared_schedule = reply.has_schedule() && asked >= 67 && asked <= 74;
    if (static_cast<int>(reply.body_case()) != asked && !shared_done && !shared_schedule) {
      return InternalError(fmt::format("coordinator at {} answered request {} with reply body {} (expected {})",
                                       address_, id, static_cast<int>(reply.body_case()),
                                       static_cast<int>(request.body_case())));
    }
    return reply;
  }
  return unreachable();
}

}  // namespace anneal::cli
