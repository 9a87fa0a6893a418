// Shared helpers of the transfer tests: temp dirs, files with known bytes, a running TransferServer with a
// ticket signer and an injectable clock, and a raw request sender (for requests the client never makes).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "transfer/client.h"
#include "transfer/server.h"
#include "transfer/ticket.h"
#include "transfer/transfer.pb.h"

namespace anneal::transfer::testing {

struct TempDir {
  explicit TempDir(const std::string& base = "/tmp");
  ~TempDir();
  std::string path;
};

// `size` deterministic pseudo-random bytes from `seed`.
std::string RandomBytes(size_t size, uint32_t seed);
void WriteBytes(const std::string& path, const std::string& bytes);  // creates parent directories
std::string ReadBytes(const std::string& path);

// A TransferServer for node "node-a" on loopback, with a signer whose key it pins.
struct ServerFixture {
  ServerFixture();
  std::string Ticket(const std::string& root, int64_t ttl_ms = 600000, const std::string& node = "node-a") const;
  Source SourceFor(const std::string& root) const;
  // Stops the server and starts it again on the same endpoint with the same keys (an agent restart).
  void Restart();

  TicketSigner signer = TicketSigner::Generate();
  std::shared_ptr<std::atomic<int64_t>> now = std::make_shared<std::atomic<int64_t>>(1'700'000'000'000);
  ServerOptions options;
  std::unique_ptr<TransferServer> server;
};

// Sends the frames on a fresh Curve DEALER and returns the reply's frames (empty after timeout_ms).
std::vector<std::string> RawRequest(const TransferServer& server, const std::vector<std::string>& frames,
                                    int timeout_ms = 5000);
// One TransferRequest, parsed reply.
transferpb::TransferReply RawCall(const TransferServer& server, const transferpb::TransferRequest& request);

}  // namespace anneal::transfer::testing
