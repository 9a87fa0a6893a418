// The agent's channel security against a real CurveZMQ ROUTER: a wrong server key is logged as a failed
// handshake (never a hang or a crash, never a registration), a missing or malformed key stops the agent at
// start with an error naming where it came from, and a plaintext agent gets nowhere with a Curve coordinator.
#include <gtest/gtest.h>

#include "agent_harness.h"

namespace anneal::agent::testing {
namespace {

bool WaitForLog(AgentProcess& agent, const std::string& needle, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (agent.Log().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(AgentTransport, WrongServerKeyIsLoggedAsAFailedHandshakeAndNeverRegisters) {
  TempDir dir;
  ScriptedCoordinator coordinator;
  const auto wrong = *protocol::GenerateCurveKeyPair();
  AgentProcess agent(dir.path + "/work", coordinator.endpoint(), {"--server-key", wrong.public_key});
  EXPECT_TRUE(WaitForLog(agent, "the CurveZMQ handshake failed", 10000)) << agent.Log();
  EXPECT_NE(agent.Log().find(wrong.public_key), std::string::npos) << agent.Log();
  coordinator.Pump(500);
  EXPECT_TRUE(coordinator.registrations.empty());
  int code = 0;
  EXPECT_FALSE(agent.Exited(&code)) << "the agent keeps retrying; exit " << code;
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

TEST(AgentTransport, PlaintextAgentIsRefusedByACurveCoordinator) {
  TempDir dir;
  ScriptedCoordinator coordinator;
  AgentProcess agent(dir.path + "/work", coordinator.endpoint(), {"--insecure-plaintext"});
  EXPECT_TRUE(WaitForLog(agent, "the plaintext handshake failed", 10000)) << agent.Log();
  coordinator.Pump(300);
  EXPECT_TRUE(coordinator.registrations.empty());
  EXPECT_EQ(agent.Terminate(), 0) << agent.Log();
}

TEST(AgentTransport, AMissingOrMalformedKeyStopsTheAgentAtStartNamingIt) {
  TempDir dir;
  ScriptedCoordinator coordinator;
  AgentProcess missing(dir.path + "/w1", coordinator.endpoint(), {"--server-key-file", dir.path + "/nope.pub"});
  EXPECT_EQ(missing.Wait(5000), 2);
  EXPECT_NE(missing.Log().find(dir.path + "/nope.pub"), std::string::npos) << missing.Log();

  std::ofstream(dir.path + "/bad.pub") << "not-a-key\n";
  AgentProcess bad(dir.path + "/w2", coordinator.endpoint(), {"--server-key-file", dir.path + "/bad.pub"});
  EXPECT_EQ(bad.Wait(5000), 2);
  EXPECT_NE(bad.Log().find("40 Z85 characters"), std::string::npos) << bad.Log();

  // Neither a key nor --insecure-plaintext: refused, saying how to give one.
  AgentProcess none(dir.path + "/w3", coordinator.endpoint(), {"--server-key", ""});
  EXPECT_EQ(none.Wait(5000), 2);
  EXPECT_NE(none.Log().find("no coordinator server key"), std::string::npos) << none.Log();
}

TEST(AgentTransport, TheRightKeyFromAFileRegisters) {
  TempDir dir;
  ScriptedCoordinator coordinator;
  std::ofstream(dir.path + "/coordinator.pub") << TestServerKeys().public_key << "\n";
  AgentProcess agent(dir.path + "/work", coordinator.endpoint(), {"--server-key-file", dir.path + "/coordinator.pub"});
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (coordinator.registrations.empty() && Clock::now() < deadline) coordinator.Pump(100);
  ASSERT_FALSE(coordinator.registrations.empty()) << agent.Log();
  EXPECT_EQ(coordinator.registrations.front().node_id(), "node-a");
}

}  // namespace
}  // namespace anneal::agent::testing
