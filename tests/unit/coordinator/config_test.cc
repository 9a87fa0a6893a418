// The YAML config file: known keys, unknown keys named with their line, validation.
#include "coordinator/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

namespace anneal::coordinator {
namespace {

// The files WriteTemp made, removed when the test program exits (also after a failed assertion).
struct TempFiles {
  std::vector<std::filesystem::path> paths;
  ~TempFiles() {
    std::error_code ignored;
    for (const auto& path : paths) std::filesystem::remove(path, ignored);
  }
};

std::string WriteTemp(const std::string& text) {
  static int n = 0;
  static TempFiles written;
  auto path = std::filesystem::temp_directory_path() /
              ("anneal-coord-config-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".yaml");
  std::ofstream(path) << text;
  written.paths.push_back(path);
  return path.string();
}

TEST(CoordinatorConfig, FileSetsTheKeysItNames) {
  const std::string path = WriteTemp(
      "bind: tcp://0.0.0.0:9000\nheartbeat_timeout_ms: 3000\nbootstrap_admin_config: /root/.anneal/config\n"
      "audit_max_records: 42\n");
  CoordinatorConfig c;
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  EXPECT_EQ(c.bind, "tcp://0.0.0.0:9000");
  EXPECT_EQ(c.heartbeat_timeout_ms, 3000);
  EXPECT_EQ(c.bootstrap_admin_config, "/root/.anneal/config");
  EXPECT_EQ(c.audit_max_records, 42u);
  EXPECT_EQ(c.heartbeat_interval_ms, 2000);  // default kept
  std::filesystem::remove(path);
}

TEST(CoordinatorConfig, TheRemovedSharedTokenIsRefusedNamingWhatReplacedIt) {
  const std::string path = WriteTemp("token: s3cret\n");
  CoordinatorConfig c;
  Status st = LoadConfigFile(path, &c);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(":1: key 'token': the shared admin token was replaced by users and API tokens"),
            std::string::npos)
      << st.message();
  std::filesystem::remove(path);
}

TEST(CoordinatorConfig, UnknownKeyIsNamedWithItsLine) {
  const std::string path = WriteTemp("bind: tcp://0.0.0.0:9000\nheartbeat_timout_ms: 3000\n");
  CoordinatorConfig c;
  Status st = LoadConfigFile(path, &c);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(":2: key 'heartbeat_timout_ms'"), std::string::npos) << st.message();
  std::filesystem::remove(path);
}

TEST(CoordinatorConfig, WrongTypeAndBadTimeoutsAreErrors) {
  const std::string path = WriteTemp("heartbeat_timeout_ms: soon\n");
  CoordinatorConfig c;
  EXPECT_EQ(LoadConfigFile(path, &c).code(), StatusCode::kInvalidArgument);
  std::filesystem::remove(path);
  c.heartbeat_interval_ms = 5000;
  c.heartbeat_timeout_ms = 4000;
  EXPECT_EQ(ValidateConfig(c).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadConfigFile("/nonexistent/anneal.yaml", &c).code(), StatusCode::kNotFound);
}

TEST(CoordinatorConfig, TransportAndLimitKeysHaveDefaultsAndAreRead) {
  CoordinatorConfig defaults;
  EXPECT_FALSE(defaults.insecure_plaintext);
  EXPECT_EQ(defaults.max_message_bytes, 16 << 20);
  EXPECT_EQ(defaults.max_spec_bytes, 1 << 20);
  EXPECT_EQ(defaults.max_name_bytes, 256);
  EXPECT_FALSE(defaults.http_public_metrics);
  EXPECT_TRUE(ValidateConfig(defaults).ok());
  const std::string path = WriteTemp(
      "insecure_plaintext: true\nmax_message_bytes: 4194304\nmax_spec_bytes: 65536\nmax_name_bytes: 64\n"
      "max_watchers_per_peer: 3\nmax_watchers_total: 30\nmax_log_fetches_per_peer: 2\nhttp_public_metrics: true\n"
      "http_max_connections: 5\nhttp_max_request_bytes: 2048\nhttp_max_streams: 2\nhttp_max_streams_per_token: 2\n"
      "reconnect_grace_ms: 0\n");
  CoordinatorConfig c;
  ASSERT_TRUE(LoadConfigFile(path, &c).ok());
  EXPECT_TRUE(c.insecure_plaintext);
  EXPECT_EQ(c.max_message_bytes, 4194304);
  EXPECT_EQ(c.max_spec_bytes, 65536);
  EXPECT_EQ(c.max_name_bytes, 64);
  EXPECT_EQ(c.max_watchers_per_peer, 3);
  EXPECT_EQ(c.max_watchers_total, 30);
  EXPECT_EQ(c.max_log_fetches_per_peer, 2);
  EXPECT_TRUE(c.http_public_metrics);
  EXPECT_EQ(c.http_max_connections, 5);
  EXPECT_EQ(c.http_max_request_bytes, 2048);
  EXPECT_EQ(c.http_max_streams, 2);
  EXPECT_EQ(c.reconnect_grace_ms, 0);
  EXPECT_TRUE(ValidateConfig(c).ok());
  std::filesystem::remove(path);
}

TEST(CoordinatorConfig, LimitsMustBePositiveAndTheSpecMustFitInAFrame) {
  CoordinatorConfig c;
  c.max_watchers_per_peer = 0;
  Status zero = ValidateConfig(c);
  EXPECT_EQ(zero.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(zero.message().find("max_watchers_per_peer must be positive"), std::string::npos) << zero.message();
  c = CoordinatorConfig{};
  c.max_spec_bytes = c.max_message_bytes;
  Status big = ValidateConfig(c);
  EXPECT_NE(big.message().find("max_spec_bytes"), std::string::npos) << big.message();
  c = CoordinatorConfig{};
  c.http_max_streams = c.http_max_connections;
  Status streams = ValidateConfig(c);
  EXPECT_NE(streams.message().find("http_max_streams (64) must be below http_max_connections (64)"), std::string::npos)
      << streams.message();
  c = CoordinatorConfig{};
  c.http_max_submit_bytes = c.max_message_bytes;
  EXPECT_NE(ValidateConfig(c).message().find("http_max_submit_bytes"), std::string::npos);
  c = CoordinatorConfig{};
  c.reconnect_grace_ms = -1;
  EXPECT_NE(ValidateConfig(c).message().find("reconnect_grace_ms"), std::string::npos);
  const std::string path = WriteTemp("http_public_metrics: maybe\n");
  Status type = LoadConfigFile(path, &c);
  EXPECT_NE(type.message().find("expected true or false"), std::string::npos) << type.message();
  std::filesystem::remove(path);
}

}  // namespace
TEST(CoordinatorConfig, ArtifactKeysAreReadAndBounded) {
  CoordinatorConfig c;
  EXPECT_TRUE(c.shared_filesystem);
  EXPECT_EQ(c.checkpoint_replicas, 1);
  ASSERT_TRUE(LoadConfigFile(WriteTemp("shared_filesystem: false\nartifact_source: store-1\ncheckpoint_replicas: 2\n"
                                       "transfer_ticket_ttl_ms: 600000\n"),
                             &c)
                  .ok());
  EXPECT_FALSE(c.shared_filesystem);
  EXPECT_EQ(c.artifact_source, "store-1");
  EXPECT_EQ(c.checkpoint_replicas, 2);
  EXPECT_EQ(c.transfer_ticket_ttl_ms, 600000);
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.checkpoint_replicas = 9;
  EXPECT_NE(ValidateConfig(c).message().find("checkpoint_replicas"), std::string::npos);
  c.checkpoint_replicas = 1;
  c.transfer_ticket_ttl_ms = 1000;
  EXPECT_NE(ValidateConfig(c).message().find("transfer_ticket_ttl_ms"), std::string::npos);
}

}  // namespace anneal::coordinator
