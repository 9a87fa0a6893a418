#include "cli/client.h"

#include <random>

#include <fmt/format.h>

#include "protocol/framing.h"

namespace anneal::cli {

using Clock = std::chrono::steady_clock;

CoordinatorClient::CoordinatorClient(std::string address, std::string token, std::chrono::milliseconds timeout)
    : address_(std::move(address)), token_(std::move(token)), timeout_(timeout), context_(1) {
  // Request ids start at a random point so a reply meant for an earlier CLI process is never mistaken for ours.
  next_request_id_ = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
}

Status CoordinatorClient::Connect() {
  if (socket_) return Status::Ok();
  if (address_.rfind("tcp://", 0) != 0 && address_.rfind("ipc://", 0) != 0) {
    return InvalidArgumentError(
        fmt::format("invalid coordinator address '{}': expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:7070)", address_));
  }
  auto socket = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  socket->set(zmq::sockopt::linger, 0);
  socket->set(zmq::sockopt::sndtimeo, static_cast<int>(timeout_.count()));
  socket->set(zmq::sockopt::reconnect_ivl, 100);
  try {
    socket->connect(address_);
  } catch (const zmq::error_t& e) {
    return InvalidArgumentError(fmt::format("invalid coordinator address '{}': {}", address_, e.what()));
  }
  socket_ = std::move(socket);
  return Status::Ok();
}

StatusOr<pb::ClientReply> CoordinatorClient::Call(pb::ClientRequest request, std::chrono::milliseconds extra_wait) {
  RETURN_IF_ERROR(Connect());
  const uint64_t id = next_request_id_++;
  request.set_token(token_);
  request.set_request_id(id);
  const auto wait = timeout_ + extra_wait;
  const std::string unreachable = fmt::format(
      "coordinator not reachable at {}: no reply within {:g} s; is it running? (anneal up)", address_,
      std::chrono::duration<double>(wait).count());

  if (Status sent = protocol::Send(*socket_, protocol::MessageKind::kClientRequest, request); !sent.ok()) {
    return UnavailableError(unreachable);
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
    if (static_cast<int>(reply.body_case()) != static_cast<int>(request.body_case())) {
      return InternalError(fmt::format("coordinator at {} answered request {} with reply body {} (expected {})",
                                       address_, id, static_cast<int>(reply.body_case()),
                                       static_cast<int>(request.body_case())));
    }
    return reply;
  }
  // Drop the socket: a reply that arrives later must not be read as the answer to the next request.
  socket_.reset();
  return UnavailableError(unreachable);
}

}  // namespace anneal::cli
