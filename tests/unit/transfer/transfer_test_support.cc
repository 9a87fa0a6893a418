#include "tests/unit/transfer/transfer_test_support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <zmq_addon.hpp>

#include "protocol/curve.h"

namespace anneal::transfer::testing {
namespace fs = std::filesystem;

TempDir::TempDir(const std::string& base) {
  std::string templ = base + "/anneal-transfer-XXXXXX";
  char* made = ::mkdtemp(templ.data());
  if (made == nullptr) std::abort();
  path = made;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Blobs are read-only files, but their directories are writable, so remove_all works.
  fs::remove_all(path, ec);
}

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ServerFixture::ServerFixture() {
  auto keys = protocol::GenerateCurveKeyPair();
  if (!keys.ok()) std::abort();
  options.bind_endpoint = "tcp://127.0.0.1:0";
  options.node_id = "node-a";
  options.signer_public_key = signer.public_key();
  options.server_keys = *keys;
  options.now_ms = [clock = now] { return clock->load(); };
  auto started = TransferServer::Start(options);
  if (!started.ok()) {
    ADD_FAILURE() << started.status().ToString();
    std::abort();
  }
  server = std::move(started).value();
  options.bind_endpoint = server->endpoint();
}

void ServerFixture::Restart() {
  server.reset();
  auto started = TransferServer::Start(options);
  if (!started.ok()) {
    ADD_FAILURE() << started.status().ToString();
    return;
  }
  server = std::move(started).value();
}

std::string ServerFixture::Ticket(const std::string& root, int64_t ttl_ms, const std::string& node) const {
  return signer.Sign({node, root, now->load() + ttl_ms, "stage", "job-1", ""});
}

Source ServerFixture::SourceFor(const std::string& root) const {
  return Source{server->endpoint(), server->public_key(), Ticket(root)};
}

std::vector<std::string> RawRequest(const TransferServer& server, const std::vector<std::string>& frames,
                                    int timeout_ms) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  if (!protocol::ConfigureCurveClient(socket, server.public_key()).ok()) std::abort();
  socket.connect(server.endpoint());
  for (size_t i = 0; i < frames.size(); ++i) {
    socket.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  std::vector<std::string> reply;
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return reply;
  std::vector<zmq::message_t> parts;
  (void)zmq::recv_multipart(socket, std::back_inserter(parts));
  for (auto& p : parts) reply.push_back(p.to_string());
  return reply;
}

transferpb::TransferReply RawCall(const TransferServer& server, const transferpb::TransferRequest& request) {
  const auto frames = RawRequest(server, {request.SerializeAsString()});
  transferpb::TransferReply reply;
  if (frames.empty() || !reply.ParseFromString(frames[0])) ADD_FAILURE() << "no reply from the server";
  return reply;
}

}  // namespace anneal::transfer::testing
