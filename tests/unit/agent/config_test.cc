// anneal-agent flags and YAML config file.
#include "agent/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "agent/inventory.h"
#include "protocol/curve.h"

namespace anneal::agent {
namespace {

StatusOr<ParsedFlags> Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "/opt/anneal/bin/anneal-agent");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return ParseAgentFlags(static_cast<int>(argv.size()), argv.data());
}

std::string WriteYaml(const std::string& text) {
  char tmpl[] = "/tmp/anneal-agent-cfg-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  ::close(fd);
  std::ofstream(tmpl) << text;
  return tmpl;
}

const std::string kKey = protocol::GenerateCurveKeyPair()->public_key;

TEST(AgentConfig, FlagsAreParsed) {
  auto p = Parse({"--coordinator",
                  "tcp://10.0.0.1:7070",
                  "--node",
                  "n1",
                  "--work-dir",
                  "/tmp/w",
                  "--slots",
                  "3",
                  "--label",
                  "rack=r1",
                  "--label",
                  "gpu=none",
                  "--address",
                  "10.0.0.5",
                  "--trainer",
                  "/bin/true",
                  "--heartbeat-ms",
                  "500",
                  "--keep-tasks-on-exit",
                  "--rendezvous-ports",
                  "30000-30010",
                  "--server-key",
                  kKey});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  const AgentConfig& c = p->config;
  EXPECT_EQ(c.coordinator, "tcp://10.0.0.1:7070");
  EXPECT_EQ(c.node, "n1");
  EXPECT_EQ(c.work_dir, "/tmp/w");
  EXPECT_EQ(c.slots, 3u);
  EXPECT_EQ(c.labels.at("rack"), "r1");
  EXPECT_EQ(c.labels.at("gpu"), "none");
  EXPECT_EQ(c.address, "10.0.0.5");
  EXPECT_EQ(c.trainer, "/bin/true");
  EXPECT_EQ(c.heartbeat_ms, 500u);
  EXPECT_TRUE(c.keep_tasks_on_exit);
  EXPECT_EQ(c.rendezvous_port_begin, 30000u);
  EXPECT_EQ(c.rendezvous_port_end, 30010u);
  EXPECT_EQ(c.server_key, kKey);
  EXPECT_FALSE(c.insecure_plaintext);
}

TEST(AgentConfig, DefaultTrainerSitsNextToTheAgentBinary) {
  auto p = Parse({"--insecure-plaintext"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(std::filesystem::path(p->config.trainer).filename(), "anneal-train");
  EXPECT_FALSE(p->config.node.empty());
  EXPECT_EQ(p->config.heartbeat_ms, 2000u);
}

TEST(AgentConfig, FileFillsWhatFlagsDoNotSay) {
  const std::string path = WriteYaml(
      "coordinator: tcp://c:1\nnode: from-file\nslots: 8\nlabels: {zone: a}\nheartbeat-ms: 900\n"
      "rendezvous_ports: 40000-40100\nserver_key: \"" +
      kKey + "\"\n");
  auto p = Parse({"--config", path, "--node", "from-flag", "--label", "rack=r2"});
  std::filesystem::remove(path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->config.coordinator, "tcp://c:1");
  EXPECT_EQ(p->config.node, "from-flag");
  EXPECT_EQ(p->config.slots, 8u);
  EXPECT_EQ(p->config.heartbeat_ms, 900u);
  EXPECT_EQ(p->config.labels.at("zone"), "a");
  EXPECT_EQ(p->config.labels.at("rack"), "r2");
  EXPECT_EQ(p->config.rendezvous_port_begin, 40000u);
}

TEST(AgentConfig, TheOutputLockWaitComesFromAFlagOrTheFile) {
  auto defaults = Parse({"--insecure-plaintext"});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->config.output_lock_wait_ms, 15u * 60 * 1000);
  auto flag = Parse({"--insecure-plaintext", "--output-lock-wait-ms", "0"});
  ASSERT_TRUE(flag.ok()) << flag.status().ToString();
  EXPECT_EQ(flag->config.output_lock_wait_ms, 0u);
  const std::string path = WriteYaml("output-lock-wait-ms: 30000\ninsecure_plaintext: true\n");
  auto file = Parse({"--config", path});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->config.output_lock_wait_ms, 30000u);
  std::ofstream(path) << "output_lock_wait_ms: soon\n";
  auto bad = Parse({"--config", path});
  std::filesystem::remove(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("output_lock_wait_ms"), std::string::npos) << bad.status().message();
  auto bad_flag = Parse({"--insecure-plaintext", "--output-lock-wait-ms", "-5"});
  ASSERT_FALSE(bad_flag.ok());
  EXPECT_NE(bad_flag.status().message().find("--output-lock-wait-ms"), std::string::npos)
      << bad_flag.status().message();
}

TEST(AgentConfig, TheTransferTimeoutComesFromAFlagOrTheFileAndIsBounded) {
  auto defaults = Parse({"--insecure-plaintext"});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->config.transfer_timeout_ms, 30000);
  auto flag = Parse({"--insecure-plaintext", "--transfer-timeout-ms", "2000"});
  ASSERT_TRUE(flag.ok()) << flag.status().ToString();
  EXPECT_EQ(flag->config.transfer_timeout_ms, 2000);
  const std::string path = WriteYaml("transfer_timeout_ms: 5000\ninsecure_plaintext: true\n");
  auto file = Parse({"--config", path});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->config.transfer_timeout_ms, 5000);
  std::ofstream(path) << "transfer_timeout_ms: 10\ninsecure_plaintext: true\n";
  auto too_short = Parse({"--config", path});
  std::filesystem::remove(path);
  ASSERT_FALSE(too_short.ok());
  EXPECT_NE(too_short.status().message().find("transfer_timeout_ms"), std::string::npos)
      << too_short.status().message();
  auto bad_flag = Parse({"--insecure-plaintext", "--transfer-timeout-ms", "0"});
  ASSERT_FALSE(bad_flag.ok());
  EXPECT_NE(bad_flag.status().message().find("--transfer-timeout-ms"), std::string::npos)
      << bad_flag.status().message();
}

TEST(AgentConfig, ErrorsNameTheFlagOrKey) {
  auto bad_flag = Parse({"--slots", "many"});
  ASSERT_FALSE(bad_flag.ok());
  EXPECT_NE(bad_flag.status().message().find("--slots"), std::string::npos) << bad_flag.status().message();
  auto bad_label = Parse({"--label", "novalue"});
  ASSERT_FALSE(bad_label.ok());
  EXPECT_NE(bad_label.status().message().find("novalue"), std::string::npos);
  const std::string path = WriteYaml("slots: [1, 2]\n");
  auto bad_type = Parse({"--config", path});
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.status().message().find("key 'slots'"), std::string::npos) << bad_type.status().message();
  std::ofstream(path) << "colour: blue\n";
  auto unknown = Parse({"--config", path});
  std::filesystem::remove(path);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown setting"), std::string::npos);
  auto missing = Parse({"--config", "/nonexistent/agent.yaml"});
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  auto ports = Parse({"--rendezvous-ports", "9-3"});
  EXPECT_FALSE(ports.ok());
}

TEST(AgentConfig, TheServerKeyComesFromAFlagOrAFileAndIsRequiredWithoutPlaintext) {
  auto none = Parse({});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no coordinator server key"), std::string::npos) << none.status().message();
  const std::string key_file = WriteYaml(kKey + "\n");
  auto from_file = Parse({"--server-key-file", key_file});
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  EXPECT_EQ(from_file->config.server_key, kKey);
  std::ofstream(key_file, std::ios::trunc) << "short\n";
  auto bad_file = Parse({"--server-key-file", key_file});
  ASSERT_FALSE(bad_file.ok());
  EXPECT_NE(bad_file.status().message().find(key_file), std::string::npos) << bad_file.status().message();
  std::filesystem::remove(key_file);
  auto bad_flag = Parse({"--server-key", "nope"});
  ASSERT_FALSE(bad_flag.ok());
  EXPECT_NE(bad_flag.status().message().find("--server-key"), std::string::npos) << bad_flag.status().message();
  const std::string yaml = WriteYaml("insecure_plaintext: true\nmax_message_bytes: 1048576\nspool_max_bytes: 4096\n");
  auto limits = Parse({"--config", yaml});
  std::filesystem::remove(yaml);
  ASSERT_TRUE(limits.ok()) << limits.status().ToString();
  EXPECT_TRUE(limits->config.insecure_plaintext);
  EXPECT_EQ(limits->config.max_message_bytes, 1048576);
  EXPECT_EQ(limits->config.spool_max_bytes, 4096u);
  EXPECT_EQ(AgentConfig{}.spool_max_bytes, 256ull << 20);
}

TEST(AgentConfig, HelpAndVersionExitEarly) {
  auto help = Parse({"--help"});
  ASSERT_TRUE(help.ok());
  EXPECT_TRUE(help->exit_now);
  EXPECT_NE(help->output.find("--keep-tasks-on-exit"), std::string::npos);
  auto version = Parse({"--version"});
  ASSERT_TRUE(version.ok());
  EXPECT_NE(version->output.find("anneal-agent "), std::string::npos);
}

TEST(AgentConfig, RunAsAndTheRankEnvironmentAllowList) {
  const std::string file = WriteYaml(
      "run_as: {default: nobody, teams: {nlp: \"2001:2001\"}}\nrank_env_allow: [HF_HUB_OFFLINE, \"WANDB_*\"]\n");
  ::setenv("ANNEAL_RANK_ENV_ALLOW", "FAKE_*,EXTRA", 1);
  auto p = Parse({"--insecure-plaintext", "--config", file});
  ::unsetenv("ANNEAL_RANK_ENV_ALLOW");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->config.run_as.default_user, "nobody");
  EXPECT_EQ(p->config.run_as.teams.at("nlp"), "2001:2001");
  EXPECT_EQ(p->config.rank_env_allow, (std::vector<std::string>{"HF_HUB_OFFLINE", "WANDB_*", "FAKE_*", "EXTRA"}));
  auto flag = Parse({"--insecure-plaintext", "--config", file, "--run-as", "2002:2002"});
  ASSERT_TRUE(flag.ok());
  EXPECT_EQ(flag->config.run_as.default_user, "2002:2002");
  EXPECT_EQ(flag->config.run_as.teams.at("nlp"), "2001:2001");  // the flag sets the default only
  const std::string bad = WriteYaml("run_as: {defualt: nobody}\n");
  auto refused = Parse({"--insecure-plaintext", "--config", bad});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("key 'run_as'.defualt: unknown key"), std::string::npos)
      << refused.status().message();
  std::filesystem::remove(file);
  std::filesystem::remove(bad);
}

TEST(Inventory, NoNvmlMeansNoGpusAndDeclaredSlots) {
  Nvml nvml("libnvidia-ml-does-not-exist.so.1");
  EXPECT_FALSE(nvml.available());
  EXPECT_FALSE(nvml.unavailable_reason().empty());
  EXPECT_TRUE(nvml.Query().empty());
  AgentConfig c;
  c.slots = 6;
  c.address = "10.1.1.1";
  c.labels["k"] = "v";
  c.work_dir = "/w";
  const pb::NodeInventory inv = BuildInventory(c, nvml);
  EXPECT_EQ(inv.gpus_size(), 0);
  EXPECT_EQ(inv.slots(), 6u);
  EXPECT_EQ(inv.address(), "10.1.1.1");
  EXPECT_EQ(inv.labels().at("k"), "v");
  EXPECT_EQ(inv.work_dir(), "/w");
  EXPECT_GT(inv.cpu_count(), 0u);
  EXPECT_GT(inv.memory_total_bytes(), 0u);
  EXPECT_EQ(inv.rendezvous_port_begin(), 29500u);
}

TEST(AgentConfig, JoinTokenFileComesFromTheFlagOrTheFileNeverTheSecretItself) {
  auto flag = Parse({"--insecure-plaintext", "--join-token-file", "/etc/anneal/join-token"});
  ASSERT_TRUE(flag.ok()) << flag.status().ToString();
  EXPECT_EQ(flag->config.join_token_file, "/etc/anneal/join-token");
  const std::string yaml = WriteYaml("join_token_file: /srv/token\n");
  auto file = Parse({"--insecure-plaintext", "--config", yaml});
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(file->config.join_token_file, "/srv/token");
  std::filesystem::remove(yaml);
  EXPECT_FALSE(Parse({"--insecure-plaintext", "--join-token", "anj_x"}).ok())
      << "there is no flag that takes the token itself";
}

}  // namespace
}  // namespace anneal::agent
