// The YAML config file: known keys, unknown keys named with their line, validation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "coordinator/config.h"

namespace anneal::coordinator {
namespace {

std::string WriteTemp(const std::string& text) {
  static int n = 0;
  auto path = std::filesystem::temp_directory_path() /
              ("anneal-coord-config-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".yaml");
  std::ofstream(path) << text;
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

}  // namespace
}  // namespace anneal::coordinator
