// anneal-agent's node identity: it joins with its join token and the credential it made and stored (0600)
// before registering, and registers with that credential from then on; it exits with a clear error without any
// credential, or when refused.
#include <sys/stat.h>

#include "agent_harness.h"

namespace anneal::agent::testing {
namespace {

TEST(AgentIdentity, JoinsWithTheTokenThenRegistersWithTheStoredCredential) {
  TempDir tmp;
  const std::string work = tmp.path + "/work";
  ScriptedCoordinator coord;
  std::string credential;
  {
    AgentProcess first(work, coord.endpoint());
    auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
    ASSERT_TRUE(reg.has_value()) << first.Log();
    EXPECT_EQ(reg->register_().join_token(), AgentProcess::kJoinToken);
    credential = reg->register_().node_credential();
    EXPECT_EQ(credential.rfind("anc_", 0), 0u) << credential;
    EXPECT_EQ(credential.size(), 4u + 64u);
    coord.Pump(500);
    EXPECT_EQ(first.Terminate(), 0) << first.Log();
  }
  const std::string credential_file = work + "/node-credential";
  EXPECT_EQ(ReadText(credential_file), credential + "\n");
  struct stat st {};
  ASSERT_EQ(::stat(credential_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The next start needs no join token: the credential proves the node.
  AgentProcess second(work, coord.endpoint(), {"--no-join-token"});
  auto reg = coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); });
  ASSERT_TRUE(reg.has_value()) << second.Log();
  EXPECT_EQ(reg->register_().node_credential(), credential);
  EXPECT_TRUE(reg->register_().join_token().empty());
}

TEST(AgentIdentity, WithoutCredentialOrJoinTokenItExitsNamingWhatIsMissing) {
  TempDir tmp;
  ScriptedCoordinator coord;
  AgentProcess agent(tmp.path + "/work", coord.endpoint(), {"--no-join-token"});
  EXPECT_EQ(agent.Wait(10000), 1);
  EXPECT_NE(agent.Log().find("no node credential"), std::string::npos) << agent.Log();
  EXPECT_NE(agent.Log().find("--join-token-file"), std::string::npos) << agent.Log();
  EXPECT_TRUE(coord.registrations.empty());
}

TEST(AgentIdentity, ARefusedRegistrationStopsTheAgentWithTheCoordinatorsReason) {
  TempDir tmp;
  ScriptedCoordinator coord;
  coord.refuse_registrations = true;
  AgentProcess agent(tmp.path + "/work", coord.endpoint());
  ASSERT_TRUE(coord.WaitFor([](const pb::AgentToCoordinator& m) { return m.has_register_(); }).has_value());
  coord.Pump(200);
  EXPECT_EQ(agent.Wait(10000), 1) << agent.Log();
  EXPECT_NE(agent.Log().find("refused node node-a"), std::string::npos) << agent.Log();
  EXPECT_NE(agent.Log().find(coord.refusal), std::string::npos) << agent.Log();
}

}  // namespace
}  // namespace anneal::agent::testing
