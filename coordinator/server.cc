#include "coordinator/server.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/shutdown.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

using protocol::MessageKind;

Server::Server(ServerOptions options, Coordinator* core, Clock* clock)
    : options_(std::move(options)), core_(core), clock_(clock), context_(1), router_(context_, zmq::socket_type::router) {
  if (options_.spec_threads > 0) workers_ = std::make_unique<SpecWorkers>(options_.spec_threads, core_->path_policy());
}

Server::~Server() {
  if (workers_) workers_->Stop();
  if (monitor_) zmq_socket_monitor(router_.handle(), nullptr, 0);
}

Status Server::Bind() {
  try {
    router_.set(zmq::sockopt::linger, 0);
    router_.set(zmq::sockopt::rcvtimeo, 0);   // drained after poll: never blocks
    router_.set(zmq::sockopt::sndhwm, 100000);
    router_.set(zmq::sockopt::rcvhwm, 100000);
    router_.set(zmq::sockopt::maxmsgsize, options_.max_message_bytes);
    if (options_.curve) RETURN_IF_ERROR(protocol::ConfigureCurveServer(router_, *options_.curve));
    const std::string monitor_endpoint = fmt::format("inproc://anneal-coordinator-monitor-{}", fmt::ptr(this));
    if (zmq_socket_monitor(router_.handle(), monitor_endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
      monitor_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(monitor_endpoint);
    }
    router_.bind(options_.bind);
    endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return UnavailableError(fmt::format("cannot bind {}: {}", options_.bind, e.what()));
  }
  spdlog::info("serving agents and clients on {} ({}; frames up to {} bytes)", endpoint_,
               options_.curve ? "CurveZMQ" : "PLAINTEXT", options_.max_message_bytes);
  return Status::Ok();
}

Status Server::Run() {
  while (!stop_.load() && !ShutdownRequested()) {
    const int64_t wait = std::clamp<int64_t>(core_->NextWakeupMs() - clock_->NowMs(), 0, 200);
    zmq::pollitem_t items[3] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                {nullptr, workers_ ? workers_->fd() : -1, ZMQ_POLLIN, 0},
                                {nullptr, ShutdownFd(), ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, ShutdownFd() >= 0 ? 3 : 2, std::chrono::milliseconds(wait));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return UnavailableError(fmt::format("poll failed: {}", e.what()));
    }
    for (size_t n = 0; n < options_.max_batch; ++n) {
      auto frames = protocol::Receive(router_, /*routed=*/true);
      if (!frames.ok()) {
        if (frames.status().code() != StatusCode::kDeadlineExceeded) {
          spdlog::warn("receive failed: {}", frames.status().ToString());
        }
        break;
      }
      Dispatch(*frames);
    }
    if (workers_) {
      for (auto& prepared : workers_->TakeReady()) core_->OnPreparedSubmit(prepared);
    }
    DrainMonitor();
    core_->Tick();
    auto out = core_->Flush();
    if (!out.ok()) return out.status();
    SendAll(*out);
    if (round_hook_) round_hook_();
  }
  spdlog::info("event loop stopped{}", ShutdownSignal() ? fmt::format(" (signal {})", ShutdownSignal()) : "");
  return Status::Ok();
}

void Server::DrainMonitor() {
  while (monitor_) {
    zmq::message_t event, address;
    if (!monitor_->recv(event, zmq::recv_flags::dontwait)) break;
    if (event.more()) (void)monitor_->recv(address, zmq::recv_flags::dontwait);
    ++failed_handshakes_;
  }
  const int64_t now = clock_->NowMs();
  if (failed_handshakes_ == 0 || now - last_handshake_warning_ms_ < 10000) return;
  spdlog::warn("{} connection(s) failed the {} handshake: a client or agent with a wrong server key, or a peer "
               "using {}",
               failed_handshakes_, options_.curve ? "CurveZMQ" : "ZeroMQ",
               options_.curve ? "plaintext (--insecure-plaintext)" : "CurveZMQ against this plaintext coordinator");
  failed_handshakes_ = 0;
  last_handshake_warning_ms_ = now;
}

void Server::Dispatch(protocol::Frames& frames) {
  const std::string peer = frames.routing_id.value_or("");
  // REQ peers: routing id, empty delimiter, header, body.
  if (frames.part_count == 4 && frames.extra_parts == 0) req_peers_.insert(peer);
  auto header = protocol::DecodeHeader(frames.header);
  // The sender's kind, even from a peer of another version (bytes 10..11 after the magic), so the error reply
  // has the type it expects.
  MessageKind kind = MessageKind::kClientRequest;
  if (header.ok()) {
    kind = header->kind;
  } else if (frames.header.size() == protocol::kHeaderSize &&
             frames.header.compare(0, protocol::kMagic.size(), protocol::kMagic) == 0) {
    const uint16_t raw = (static_cast<uint8_t>(frames.header[10]) << 8) | static_cast<uint8_t>(frames.header[11]);
    if (raw == static_cast<uint16_t>(MessageKind::kAgentToCoordinator)) kind = MessageKind::kAgentToCoordinator;
  }
  if (kind == MessageKind::kAgentToCoordinator) {
    pb::AgentToCoordinator message;
    Status st = protocol::Parse(frames, MessageKind::kAgentToCoordinator, &message);
    if (st.ok()) core_->OnAgentMessage(peer, message);
    else core_->OnBadAgentMessage(peer, st);
    return;
  }
  pb::ClientRequest request;
  Status st = protocol::Parse(frames, MessageKind::kClientRequest, &request);
  if (!st.ok()) {
    core_->OnBadClientMessage(peer, request.request_id(), st);
  } else if (workers_ && request.has_submit()) {
    if (auto ticket = core_->AdmitSubmit(peer, request)) workers_->Enqueue(peer, std::move(request), std::move(*ticket));
  } else {
    core_->OnClientRequest(peer, request);
  }
}

void Server::SendAll(std::vector<Outgoing>& out) {
  for (auto& msg : out) {
    const bool is_agent = std::holds_alternative<pb::CoordinatorToAgent>(msg.message);
    const google::protobuf::Message& body =
        is_agent ? static_cast<const google::protobuf::Message&>(std::get<pb::CoordinatorToAgent>(msg.message))
                 : static_cast<const google::protobuf::Message&>(std::get<pb::ClientReply>(msg.message));
    const MessageKind kind = is_agent ? MessageKind::kCoordinatorToAgent : MessageKind::kClientReply;
    Status st;
    if (req_peers_.count(msg.routing_id)) {
      try {
        router_.send(zmq::buffer(msg.routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        router_.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        const std::string header = protocol::EncodeHeader(kind);
        router_.send(zmq::buffer(header), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
        router_.send(zmq::buffer(body.SerializeAsString()), zmq::send_flags::dontwait);
      } catch (const zmq::error_t& e) {
        st = UnavailableError(e.what());
      }
      req_peers_.erase(msg.routing_id);  // a REQ socket waits for exactly one reply
    } else {
      st = protocol::Send(router_, kind, body, &msg.routing_id);
    }
    if (!st.ok()) spdlog::debug("dropping a message to a departed peer: {}", st.ToString());
  }
}

}  // namespace anneal::coordinator
