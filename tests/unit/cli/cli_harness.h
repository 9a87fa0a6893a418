// Test harness for the anneal binary: run it as a real process (with a private HOME and a deadline), and a
// scripted coordinator (a ZeroMQ ROUTER on loopback) that records requests and returns canned replies.
//
// Thread-safety: FakeCoordinator serves on its own thread; requests() may be read from the test thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "protocol/anneal.pb.h"
#include "protocol/curve.h"

namespace anneal::cli::testing {

struct RunResult {
  int exit_code = -1;  // -1: killed at the deadline
  std::string out;
  std::string err;
  double seconds = 0;
};

// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content, bool executable = false) const;

 private:
  std::string path_;
};

// Runs `binary args...` with HOME=`home`, ANNEAL_* variables removed unless given in `env`.
RunResult RunProgram(const std::string& binary, const std::vector<std::string>& args, const std::string& home,
              const std::map<std::string, std::string>& env = {}, double timeout_s = 20);
// Runs the anneal binary of this build.
RunResult RunAnneal(const std::vector<std::string>& args, const std::string& home,
                    const std::map<std::string, std::string>& env = {}, double timeout_s = 20);

// Runs the anneal binary with stdout and stderr on a pseudo-terminal (as a person would); `out` gets both.
RunResult RunAnnealInTerminal(const std::vector<std::string>& args, const std::string& home, double timeout_s = 20);

// FakeCoordinator's CurveZMQ keypair (one per test process); RunProgram / RunAnneal export its public key as
// ANNEAL_SERVER_KEY unless `env` sets another (an empty value: no key).
const protocol::CurveKeyPair& FakeServerKeys();

// A loopback TCP address with nothing listening on it.
std::string DeadAddress();

class FakeCoordinator {
 public:
  using Handler = std::function<pb::ClientReply(const pb::ClientRequest&)>;
  explicit FakeCoordinator(Handler handler);
  ~FakeCoordinator();

  const std::string& address() const { return address_; }
  std::vector<pb::ClientRequest> requests() const;

 private:
  void Serve();

  Handler handler_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::string address_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<pb::ClientRequest> requests_;
  std::thread thread_;
};

// An error reply.
pb::ClientReply ErrorReply(pb::ErrorCode code, const std::string& message);
// A handler returning this sends nothing back: the request is lost, as with a coordinator that went away.
pb::ClientReply DropReply();

}  // namespace anneal::cli::testing
