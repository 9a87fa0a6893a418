// Framing of Anneal messages on ZeroMQ multipart messages, with protocol-version checks.
//
// A message is [routing id]? + header frame + body frame. The header is 12 bytes:
//   "ANNEAL" (6 bytes magic) | protocol version (uint32, big-endian) | MessageKind (uint16, big-endian)
// The version and the kind are checked before the body is parsed, so a peer of another version gets a clear
// VERSION_MISMATCH error naming both versions, and garbage gets INVALID_ARGUMENT; neither crashes or desyncs
// the socket (Receive always drains every part of the multipart message).
//
// Thread-safety: stateless functions; a zmq socket must only be used by one thread at a time.
//
// Example (DEALER side):
//   anneal::pb::AgentToCoordinator msg; ...
//   RETURN_IF_ERROR(anneal::protocol::Send(sock, MessageKind::kAgentToCoordinator, msg));
//   ASSIGN_OR_RETURN(auto frames, anneal::protocol::Receive(sock, /*routed=*/false));
//   anneal::pb::CoordinatorToAgent reply;
//   RETURN_IF_ERROR(anneal::protocol::Parse(frames, MessageKind::kCoordinatorToAgent, &reply));
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "common/status.h"
#include "protocol/version.h"

namespace google::protobuf { class Message; }

namespace anneal::pb { class Error; }

namespace anneal::protocol {

enum class MessageKind : uint16_t {
  kAgentToCoordinator = 1,
  kCoordinatorToAgent = 2,
  kClientRequest = 3,
  kClientReply = 4,
};

std::string_view MessageKindName(MessageKind kind);

inline constexpr std::string_view kMagic = "ANNEAL";
inline constexpr size_t kHeaderSize = 12;

std::string EncodeHeader(MessageKind kind, uint32_t version = kProtocolVersion);

struct DecodedHeader {
  uint32_t version = 0;
  MessageKind kind = MessageKind::kAgentToCoordinator;
};
// Checks size and magic, then the version (VERSION_MISMATCH names both versions).
StatusOr<DecodedHeader> DecodeHeader(std::string_view header);

// One received multipart message.
struct Frames {
  std::optional<std::string> routing_id;  // set on ROUTER sockets
  std::string header;
  std::string body;
  size_t extra_parts = 0;                 // parts beyond the expected ones (a malformed message)
  size_t part_count = 0;
};

// Sends [routing_id]? header body. Returns UNAVAILABLE when the send would block or fails.
Status Send(zmq::socket_t& socket, MessageKind kind, const google::protobuf::Message& message,
            const std::string* routing_id = nullptr);

// Receives all parts of the next multipart message (blocking per the socket's ZMQ_RCVTIMEO; a timeout is
// DEADLINE_EXCEEDED). `routed` = the socket is a ROUTER, so the first part is the peer's routing id.
StatusOr<Frames> Receive(zmq::socket_t& socket, bool routed);

// Validates the frames (part count, header, version, kind) and parses the body into `out`.
Status Parse(const Frames& frames, MessageKind expected, google::protobuf::Message* out);

// Status <-> wire error.
void ToProto(const Status& status, pb::Error* out);
Status FromProto(const pb::Error& error);

}  // namespace anneal::protocol
