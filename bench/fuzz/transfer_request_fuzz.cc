// Fuzz target: the transfer server's request handling (transfer/request_handler.h), which parses every frame a
// peer sends to an agent's TransferServer. Input: u8 mode, then
//   mode 0: the rest is one request frame, as sent
//   mode 1: u8 frame count (0..3), then the rest as the frame
//   mode 2: a well-formed request with a fuzzed body: u8 kind (manifest/read), u8 ticket (valid for the root,
//           valid for root/sub, another node, expired, garbage), Chunk path, u16 offset, u16 length
// Invariants: the reply is an error with a message or exactly the answer asked for; a successful read returns
// only bytes of the files inside the root (never the file outside it that a symlink points to), at most the
// length asked for; a manifest lists only checked relative paths.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "bench/fuzz/fuzz_support.h"
#include "transfer/manifest.h"
#include "transfer/request_handler.h"
#include "transfer/ticket.h"

using anneal::fuzz::FuzzCheck;
namespace tr = anneal::transfer;

namespace {

constexpr int64_t kNow = 1'000'000;
const std::string kSecret = "SECRET-OUTSIDE-THE-ROOT";

struct World {
  std::string root;
  std::string a = "hello transfer";
  std::string b;
  tr::TicketSigner signer = tr::TicketSigner::Generate();
  std::unique_ptr<tr::RequestHandler> handler;

  World() {
    namespace fs = std::filesystem;
    const std::string base = anneal::fuzz::ProcessTempDir();
    root = base + "/root";
    fs::create_directories(root + "/sub");
    for (int i = 0; i < 3000; ++i) b.push_back(static_cast<char>('a' + i % 26));
    Write(root + "/a.txt", a);
    Write(root + "/sub/b.bin", b);
    Write(base + "/outside.txt", kSecret);
    std::error_code ec;
    fs::create_symlink(base + "/outside.txt", root + "/sub/out", ec);
    fs::create_symlink("a.txt", root + "/in", ec);
    handler = std::make_unique<tr::RequestHandler>(
        "node-a", signer.public_key(), [] { return kNow; }, "");
  }
  static void Write(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
  }
  std::string Ticket(uint8_t which, std::string_view garbage) const {
    switch (which % 5) {
      case 0:
        return signer.Sign({"node-a", root, kNow + 1000, "stage", "j", ""});
      case 1:
        return signer.Sign({"node-a", root + "/sub", kNow + 1000, "stage", "j", ""});
      case 2:
        return signer.Sign({"node-b", root, kNow + 1000, "stage", "j", ""});
      case 3:
        return signer.Sign({"node-a", root, kNow - 1, "stage", "j", ""});
      default:
        return std::string(garbage);
    }
  }
};

World& TheWorld() {
  static World* world = new World();
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = TheWorld();
  anneal::fuzz::Reader in(data, size);
  const uint8_t mode = in.U8() % 3;
  std::string frame;
  size_t frames = 1;
  uint64_t asked_length = 0;
  if (mode == 0) {
    frame = std::string(in.Rest());
  } else if (mode == 1) {
    frames = in.U8() % 4;
    frame = std::string(in.Rest());
  } else {
    anneal::transferpb::TransferRequest request;
    const bool read = in.U8() % 2 == 1;
    const uint8_t ticket = in.U8();
    const std::string path(in.Chunk());
    request.set_ticket(w.Ticket(ticket, in.Chunk()));
    if (read) {
      request.mutable_read()->set_path(path);
      request.mutable_read()->set_offset(in.U16());
      asked_length = in.U16();
      request.mutable_read()->set_length(asked_length);
    } else {
      request.mutable_manifest()->set_subpath(path);
    }
    frame = request.SerializeAsString();
  }
  anneal::transferpb::TransferReply reply;
  zmq::message_t bytes;
  w.handler->Handle(frame, frames, &reply, &bytes);
  if (reply.has_error()) {
    FuzzCheck(!reply.error().message().empty(), "a refusal has a message");
    FuzzCheck(reply.error().code() >= 1 && reply.error().code() <= 13, "a refusal has a status code");
    FuzzCheck(!reply.has_read() && !reply.has_manifest(), "a refusal carries no answer");
    FuzzCheck(bytes.size() == 0, "a refusal carries no bytes");
    return 0;
  }
  if (reply.has_read()) {
    const std::string got = bytes.to_string();
    FuzzCheck(got.find("SECRET") == std::string::npos, "bytes from outside the root were served");
    const uint64_t offset = reply.read().offset();
    const bool from_a = offset <= w.a.size() && w.a.substr(offset, got.size()) == got;
    const bool from_b = offset <= w.b.size() && w.b.substr(offset, got.size()) == got;
    FuzzCheck(got.empty() || from_a || from_b, "a read returned bytes that are not a file's");
    FuzzCheck(mode != 2 || got.size() <= asked_length, "a read returned more than asked");
  } else {
    FuzzCheck(reply.has_manifest(), "an answer is a read or a manifest");
    for (const auto& f : reply.manifest().files()) {
      FuzzCheck(tr::CheckRelativePath(f.path()).ok(), "a manifest path is relative and clean");
      FuzzCheck(f.path().find("out") == std::string::npos, "a manifest lists only files inside the root");
    }
  }
  return 0;
}
