// The anneal binary against a real anneal-coordinator with CurveZMQ: the pinned key from the environment or the
// client config works; a wrong key, a plaintext client and a missing key each fail within the deadline with an
// error saying what is wrong, and the coordinator goes on serving.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "cli_harness.h"
#include "common/client_config.h"
#include "protocol/curve.h"

namespace anneal::cli::testing {
namespace {

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// anneal-coordinator on a free port, bootstrapping its cluster admin; reads its "server-key" and "listening"
// lines and the admin's API token from the client config it wrote.
class Coordinator {
 public:
  explicit Coordinator(const std::string& state_dir, bool plaintext = false) {
    int out[2];
    EXPECT_EQ(::pipe(out), 0);
    std::vector<std::string> args = {ANNEAL_COORDINATOR_BIN,
                                     "--bind",
                                     "tcp://127.0.0.1:*",
                                     "--state-dir",
                                     state_dir,
                                     "--log-level",
                                     "error",
                                     "--bootstrap-admin-config",
                                     state_dir + "-client.yaml",
                                     "--config",
                                     state_dir + ".yaml"};
    std::ofstream(state_dir + ".yaml") << "path_policy: {default: {models: [/], datasets: [/], outputs: [/]}}\n";
    if (plaintext) args.push_back("--insecure-plaintext");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline && address_.empty()) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char c;
      if (::read(out[0], &c, 1) != 1) break;
      if (c != '\n') {
        line.push_back(c);
        continue;
      }
      if (line.rfind("server-key ", 0) == 0) key_ = line.substr(11);
      if (line.rfind("listening ", 0) == 0) address_ = line.substr(10);
      line.clear();
    }
    ::close(out[0]);
    EXPECT_FALSE(address_.empty()) << "anneal-coordinator did not start";
    auto config = ReadClientConfigFile(state_dir + "-client.yaml");
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    if (config.ok()) token_ = config->token;
  }
  ~Coordinator() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  const std::string& address() const { return address_; }
  const std::string& key() const { return key_; }
  const std::string& token() const { return token_; }

 private:
  pid_t pid_ = -1;
  std::string address_, key_, token_;
};

TEST(CliTransport, ThePinnedKeyFromTheEnvironmentOrTheConfigWorks) {
  TempDir home;
  Coordinator coordinator(home.path() + "/state");
  ASSERT_EQ(coordinator.key().size(), 40u);
  RunResult env = RunAnneal({"--coordinator", coordinator.address(), "--token", coordinator.token(), "nodes"},
                            home.path(), {{"ANNEAL_SERVER_KEY", coordinator.key()}});
  EXPECT_EQ(env.exit_code, 0) << env.err;

  std::filesystem::create_directories(home.path() + "/.anneal");
  std::ofstream(home.path() + "/.anneal/config")
      << "coordinator: " << coordinator.address() << "\ntoken: " << coordinator.token() << "\nserver_key: \""
      << coordinator.key() << "\"\n";
  RunResult file = RunAnneal({"nodes"}, home.path(), {{"ANNEAL_SERVER_KEY", ""}});
  EXPECT_EQ(file.exit_code, 0) << file.err;
  RunResult flag =
      RunAnneal({"--server-key", coordinator.key(), "nodes"}, home.path(), {{"ANNEAL_SERVER_KEY", "not-a-key"}});
  EXPECT_EQ(flag.exit_code, 0) << "the flag beats the environment: " << flag.err;
}

TEST(CliTransport, AWrongServerKeyFailsWithinTheDeadlineSayingTheKeyIsWrong) {
  TempDir home;
  Coordinator coordinator(home.path() + "/state");
  const auto other = *protocol::GenerateCurveKeyPair();
  RunResult r =
      RunAnneal({"--coordinator", coordinator.address(), "--token", coordinator.token(), "--timeout", "1", "nodes"},
                home.path(), {{"ANNEAL_SERVER_KEY", other.public_key}});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_LT(r.seconds, 5.0);
  EXPECT_TRUE(Contains(r.err, "closed the connection during the CurveZMQ handshake")) << r.err;
  EXPECT_TRUE(Contains(r.err, "the server key (from ANNEAL_SERVER_KEY) is probably wrong")) << r.err;
  // The coordinator still serves the right key.
  RunResult right = RunAnneal({"--coordinator", coordinator.address(), "--token", coordinator.token(), "nodes"},
                              home.path(), {{"ANNEAL_SERVER_KEY", coordinator.key()}});
  EXPECT_EQ(right.exit_code, 0) << right.err;
}

TEST(CliTransport, APlaintextClientIsToldTheCoordinatorRequiresCurve) {
  TempDir home;
  Coordinator coordinator(home.path() + "/state");
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "--token", coordinator.token(), "--timeout", "1",
                           "--insecure-plaintext", "nodes"},
                          home.path(), {{"ANNEAL_SERVER_KEY", ""}});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Contains(r.err, "refused the plaintext handshake")) << r.err;
  EXPECT_TRUE(Contains(r.err, "requires CurveZMQ")) << r.err;
}

TEST(CliTransport, NoKeyOrAMalformedKeyIsRefusedBeforeConnecting) {
  TempDir home;
  Coordinator coordinator(home.path() + "/state");
  RunResult none =
      RunAnneal({"--coordinator", coordinator.address(), "nodes"}, home.path(), {{"ANNEAL_SERVER_KEY", ""}});
  EXPECT_EQ(none.exit_code, 1) << none.err;
  EXPECT_TRUE(Contains(none.err, "no server key for the coordinator at " + coordinator.address())) << none.err;
  EXPECT_LT(none.seconds, 2.0);

  std::filesystem::create_directories(home.path() + "/.anneal");
  std::ofstream(home.path() + "/.anneal/config") << "server_key: short\n";
  RunResult bad =
      RunAnneal({"--coordinator", coordinator.address(), "nodes"}, home.path(), {{"ANNEAL_SERVER_KEY", ""}});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_TRUE(Contains(bad.err, home.path() + "/.anneal/config: server_key")) << bad.err;
}

TEST(CliTransport, APlaintextCoordinatorNeedsTheExplicitFlag) {
  TempDir home;
  Coordinator coordinator(home.path() + "/state", /*plaintext=*/true);
  RunResult ok = RunAnneal(
      {"--coordinator", coordinator.address(), "--token", coordinator.token(), "--insecure-plaintext", "nodes"},
      home.path(), {{"ANNEAL_SERVER_KEY", ""}});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace
}  // namespace anneal::cli::testing
