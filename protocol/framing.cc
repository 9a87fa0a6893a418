#include "protocol/framing.h"

#include <google/protobuf/message.h>

#include "protocol/anneal.pb.h"

namespace anneal::protocol {
namespace {

void PutU32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}
void PutU16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>((v >> 8) & 0xff));
  s.push_back(static_cast<char>(v & 0xff));
}
uint32_t GetU32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}
uint16_t GetU16(std::string_view s, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(s[at]) << 8) | static_cast<uint8_t>(s[at + 1]));
}

}  // namespace

std::string_view MessageKindName(MessageKind kind) {
  switch (kind) {
    case MessageKind::kAgentToCoordinator: return "AgentToCoordinator";
    case MessageKind::kCoordinatorToAgent: return "CoordinatorToAgent";
    case MessageKind::kClientRequest: return "ClientRequest";
    case MessageKind::kClientReply: return "ClientReply";
  }
  return "unknown";
}

std::string EncodeHeader(MessageKind kind, uint32_t version) {
  std::string h(kMagic);
  PutU32(h, version);
  PutU16(h, static_cast<uint16_t>(kind));
  return h;
}

StatusOr<DecodedHeader> DecodeHeader(std::string_view header) {
  if (header.size() != kHeaderSize || header.substr(0, kMagic.size()) != kMagic) {
    return InvalidArgumentError("not an Anneal message: the header frame has " + std::to_string(header.size()) +
                                " bytes without the ANNEAL magic (expected " + std::to_string(kHeaderSize) +
                                " bytes)");
  }
  DecodedHeader d;
  d.version = GetU32(header, kMagic.size());
  if (d.version != kProtocolVersion) {
    return VersionMismatchError("protocol version mismatch: peer speaks version " + std::to_string(d.version) +
                                ", this build speaks version " + std::to_string(kProtocolVersion) +
                                "; upgrade the older side");
  }
  const uint16_t kind = GetU16(header, kMagic.size() + 4);
  if (kind < 1 || kind > 4) {
    return InvalidArgumentError("unknown message kind " + std::to_string(kind) + " in header");
  }
  d.kind = static_cast<MessageKind>(kind);
  return d;
}

Status Send(zmq::socket_t& socket, MessageKind kind, const google::protobuf::Message& message,
            const std::string* routing_id) {
  std::string body;
  if (!message.SerializeToString(&body)) return InternalError("cannot serialize " + message.GetTypeName());
  try {
    if (routing_id != nullptr) {
      if (!socket.send(zmq::buffer(*routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        return UnavailableError("send would block (peer queue full)");
      }
    }
    const std::string header = EncodeHeader(kind);
    if (!socket.send(zmq::buffer(header), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return UnavailableError("send would block (peer queue full)");
    }
    if (!socket.send(zmq::buffer(body), zmq::send_flags::dontwait)) {
      return UnavailableError("send would block (peer queue full)");
    }
  } catch (const zmq::error_t& e) {
    return UnavailableError(std::string("zmq send failed: ") + e.what());
  }
  return Status::Ok();
}

StatusOr<Frames> Receive(zmq::socket_t& socket, bool routed) {
  Frames f;
  std::vector<std::string> parts;
  try {
    while (true) {
      zmq::message_t part;
      auto got = socket.recv(part, zmq::recv_flags::none);
      if (!got) {
        if (parts.empty()) return DeadlineExceededError("no message before the receive timeout");
        continue;  // the rest of a multipart message is always delivered atomically; retry
      }
      parts.emplace_back(part.to_string());
      if (!part.more()) break;
    }
  } catch (const zmq::error_t& e) {
    return UnavailableError(std::string("zmq receive failed: ") + e.what());
  }
  f.part_count = parts.size();
  size_t i = 0;
  if (routed) {
    f.routing_id = parts[i++];
    // A REQ peer puts an empty delimiter frame after the routing id; accept both REQ and DEALER peers.
    if (i < parts.size() && parts[i].empty() && parts.size() - i == 3) ++i;
  }
  if (i < parts.size()) f.header = parts[i++];
  if (i < parts.size()) f.body = parts[i++];
  f.extra_parts = parts.size() - i;
  return f;
}

Status Parse(const Frames& frames, MessageKind expected, google::protobuf::Message* out) {
  ASSIGN_OR_RETURN(DecodedHeader h, DecodeHeader(frames.header));
  if (frames.extra_parts != 0) {
    return InvalidArgumentError("malformed message: " + std::to_string(frames.part_count) +
                                " frames, expected header and body");
  }
  if (h.kind != expected) {
    return InvalidArgumentError("unexpected message kind " + std::string(MessageKindName(h.kind)) +
                                " (expected " + std::string(MessageKindName(expected)) + ")");
  }
  if (!out->ParseFromString(frames.body)) {
    return InvalidArgumentError("malformed " + std::string(MessageKindName(expected)) + " body (" +
                                std::to_string(frames.body.size()) + " bytes do not parse as " +
                                out->GetTypeName() + ")");
  }
  return Status::Ok();
}

void ToProto(const Status& status, pb::Error* out) {
  out->set_code(static_cast<pb::ErrorCode>(static_cast<int>(status.code())));
  out->set_message(status.message());
}

Status FromProto(const pb::Error& error) {
  if (error.code() == pb::OK) return Status::Ok();
  return Status(static_cast<StatusCode>(static_cast<int>(error.code())), error.message());
}

}  // namespace anneal::protocol
