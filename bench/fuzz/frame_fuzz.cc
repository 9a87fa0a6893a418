// Fuzz target: frame decoding (protocol/framing.h). Input: u8 header length (mod 16), that many header bytes,
// u8 extra-parts count, then the body. DecodeHeader + Parse against every message kind; a header that decodes
// must re-encode to the same bytes, and a parsed Error must convert to a Status without crashing.
#include <cstdint>
#include <string>

#include "bench/fuzz/fuzz_support.h"
#include "protocol/anneal.pb.h"
#include "protocol/framing.h"

using anneal::fuzz::FuzzCheck;
using anneal::protocol::MessageKind;

namespace {

template <typename Message>
void ParseAs(const anneal::protocol::Frames& frames, MessageKind kind) {
  Message message;
  const anneal::Status st = anneal::protocol::Parse(frames, kind, &message);
  if (!st.ok()) {
    FuzzCheck(!st.message().empty(), "a refused frame has an error message");
    return;
  }
  FuzzCheck(frames.extra_parts == 0, "a frame with extra parts was accepted");
  (void)message.SerializeAsString();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  anneal::fuzz::Reader in(data, size);
  anneal::protocol::Frames frames;
  frames.header = std::string(in.Bytes(in.U8() % 16));
  frames.extra_parts = in.U8() % 3;
  frames.part_count = 2 + frames.extra_parts;
  frames.body = std::string(in.Rest());

  auto header = anneal::protocol::DecodeHeader(frames.header);
  if (header.ok()) {
    FuzzCheck(anneal::protocol::EncodeHeader(header->kind, header->version) == frames.header,
              "a decoded header re-encodes to the same bytes");
    (void)anneal::protocol::MessageKindName(header->kind);
  }
  ParseAs<anneal::pb::AgentToCoordinator>(frames, MessageKind::kAgentToCoordinator);
  ParseAs<anneal::pb::CoordinatorToAgent>(frames, MessageKind::kCoordinatorToAgent);
  ParseAs<anneal::pb::ClientRequest>(frames, MessageKind::kClientRequest);
  ParseAs<anneal::pb::ClientReply>(frames, MessageKind::kClientReply);

  anneal::pb::Error error;
  if (error.ParseFromString(frames.body)) {
    const anneal::Status st = anneal::protocol::FromProto(error);
    (void)st.ToString();
    anneal::pb::Error back;
    anneal::protocol::ToProto(st, &back);
  }
  return 0;
}
