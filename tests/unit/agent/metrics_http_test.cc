// The agent's metrics endpoint over a real loopback socket (agent/http.h, agent/metrics_service.h): every
// request needs the bearer token; each refusal says what was refused and why, and the endpoint still serves.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "agent/config.h"
#include "agent/http.h"
#include "agent/metrics_service.h"
#include "common/fsutil.h"

namespace anneal::agent {
namespace {

constexpr char kToken[] = "metrics-token-0123456789abcdef";

int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string Exchange(uint16_t port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, n);
  close(fd);
  return response;
}

std::string Get(uint16_t port, const std::string& path, const std::string& authorization,
                const std::string& method = "GET") {
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n";
  if (!authorization.empty()) request += "Authorization: " + authorization + "\r\n";
  return Exchange(port, request + "\r\n");
}

class AgentMetricsEndpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("anneal-agent-metrics-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
    config_.work_dir = dir_.string();
    config_.metrics_bind = "127.0.0.1:0";
    config_.metrics_token_file = (dir_ / "token").string();
    ASSERT_TRUE(WriteFileAtomic(config_.metrics_token_file, std::string(kToken) + "\n", 0600).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<AgentMetricsService> StartService() {
    auto service = AgentMetricsService::Start(config_, "libnvidia-ml-not-here.so.1");
    EXPECT_TRUE(service.ok()) << service.status().ToString();
    return service.ok() ? std::move(*service) : nullptr;
  }
  void ExpectServes(uint16_t port) {
    const std::string ok = Get(port, "/metrics", std::string("Bearer ") + kToken);
    EXPECT_NE(ok.find("200 OK"), std::string::npos) << ok;
    EXPECT_NE(ok.find("anneal_agent_nvml_available 0"), std::string::npos) << ok;
  }

  std::filesystem::path dir_;
  AgentConfig config_;
};

TEST_F(AgentMetricsEndpoint, ServesTheMetricsWithTheTokenAndRecordsItsAddress) {
  auto service = StartService();
  ASSERT_TRUE(service);
  pb::TaskStatus task;
  task.set_job_id("job-7");
  task.set_attempt(1);
  task.add_pids(getpid());
  service->Publish({task}, 0);
  pb::AgentToCoordinator report;
  auto* batch = report.mutable_metric_batch();
  batch->set_job_id("job-7");
  batch->set_attempt(1);
  auto* point = batch->add_points();
  point->set_step(3);
  (*point->mutable_values())["loss"] = 1.25;
  service->ObserveReport(report, 0);
  const std::string ok = Get(service->port(), "/metrics?x=1", std::string("Bearer ") + kToken);
  EXPECT_NE(ok.find("200 OK"), std::string::npos) << ok;
  EXPECT_NE(ok.find("text/plain; version=0.0.4"), std::string::npos) << ok;
  EXPECT_NE(ok.find("anneal_job_loss{job_id=\"job-7\"} 1.25"), std::string::npos) << ok;
  EXPECT_NE(ok.find("anneal_task_ranks{job_id=\"job-7\",attempt=\"1\"} 1"), std::string::npos) << ok;
  EXPECT_EQ(ok.find("anneal_gpu_"), std::string::npos) << "no NVML: no GPU series\n" << ok;
  auto address = ReadFile(config_.work_dir + "/metrics-address");
  ASSERT_TRUE(address.ok());
  EXPECT_EQ(*address, "127.0.0.1:" + std::to_string(service->port()) + "\n");
}

TEST_F(AgentMetricsEndpoint, ARequestWithoutTheRightBearerTokenIsRefusedAndTheEndpointStillServes) {
  auto service = StartService();
  ASSERT_TRUE(service);
  const uint16_t port = service->port();
  const std::string none = Get(port, "/metrics", "");
  EXPECT_NE(none.find("401 Unauthorized"), std::string::npos) << none;
  EXPECT_NE(none.find("no Authorization header"), std::string::npos) << none;
  EXPECT_NE(none.find("WWW-Authenticate: Bearer"), std::string::npos) << none;
  EXPECT_EQ(none.find("anneal_"), std::string::npos) << "nothing leaks without a token";
  ExpectServes(port);
  const std::string wrong = Get(port, "/metrics", "Bearer metrics-token-0123456789abcdeX");
  EXPECT_NE(wrong.find("401"), std::string::npos) << wrong;
  EXPECT_NE(wrong.find("wrong bearer token"), std::string::npos) << wrong;
  ExpectServes(port);
  const std::string basic = Get(port, "/metrics", std::string("Basic ") + kToken);
  EXPECT_NE(basic.find("401"), std::string::npos) << basic;
  EXPECT_NE(basic.find("not 'Bearer <token>'"), std::string::npos) << basic;
  const std::string unknown_path = Get(port, "/secret", "");
  EXPECT_NE(unknown_path.find("401"), std::string::npos) << "authentication comes before routing: " << unknown_path;
  ExpectServes(port);
}

TEST_F(AgentMetricsEndpoint, OtherPathsAndMethodsAreRefusedByName) {
  auto service = StartService();
  ASSERT_TRUE(service);
  const std::string auth = std::string("Bearer ") + kToken;
  const std::string post = Get(service->port(), "/metrics", auth, "POST");
  EXPECT_NE(post.find("405"), std::string::npos) << post;
  EXPECT_NE(post.find("only GET is served, not POST"), std::string::npos) << post;
  const std::string other = Get(service->port(), "/api/jobs", auth);
  EXPECT_NE(other.find("404"), std::string::npos) << other;
  EXPECT_NE(other.find("try /metrics"), std::string::npos) << other;
  ExpectServes(service->port());
}

TEST_F(AgentMetricsEndpoint, AnOversizedRequestIsRefusedWithTheLimit) {
  auto service = StartService();
  ASSERT_TRUE(service);
  std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + std::string(kToken) +
                        "\r\nX-Padding: " + std::string(10000, 'x') + "\r\n\r\n";
  const std::string big = Exchange(service->port(), request);
  EXPECT_NE(big.find("431"), std::string::npos) << big.substr(0, 300);
  EXPECT_NE(big.find("larger than 8192 bytes"), std::string::npos) << big.substr(0, 300);
  ExpectServes(service->port());
}

TEST(AgentHttpServer, ConnectionsPastTheLimitAre503AndTheServerRecovers) {
  AgentHttpServer server;
  AgentHttpOptions options;
  options.token = kToken;
  options.render = [] { return std::string("anneal_up 1\n"); };
  options.max_connections = 2;
  ASSERT_TRUE(server.Start("127.0.0.1:0", options).ok());
  const int a = Connect(server.port());
  const int b = Connect(server.port());
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  usleep(100000);  // both accepted and counted before the third arrives
  const std::string busy = Get(server.port(), "/metrics", std::string("Bearer ") + kToken);
  EXPECT_NE(busy.find("503"), std::string::npos) << busy;
  EXPECT_NE(busy.find("too many metrics HTTP connections (limit 2)"), std::string::npos) << busy;
  close(a);
  close(b);
  std::string ok;
  for (int i = 0; i < 50 && ok.find("200 OK") == std::string::npos; ++i) {
    usleep(20000);
    ok = Get(server.port(), "/metrics", std::string("Bearer ") + kToken);
  }
  EXPECT_NE(ok.find("anneal_up 1"), std::string::npos) << ok;
}

TEST_F(AgentMetricsEndpoint, StartRefusesAMissingOrWeakTokenAndABadAddress) {
  config_.metrics_token_file = "";
  auto no_file = AgentMetricsService::Start(config_, "none.so");
  ASSERT_FALSE(no_file.ok());
  EXPECT_NE(no_file.status().message().find("metrics_token_file is not"), std::string::npos)
      << no_file.status().ToString();
  config_.metrics_token_file = (dir_ / "missing").string();
  auto missing = AgentMetricsService::Start(config_, "none.so");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find((dir_ / "missing").string()), std::string::npos);
  config_.metrics_token_file = (dir_ / "short").string();
  ASSERT_TRUE(WriteFileAtomic(config_.metrics_token_file, "short\n", 0600).ok());
  auto weak = AgentMetricsService::Start(config_, "none.so");
  ASSERT_FALSE(weak.ok());
  EXPECT_NE(weak.status().message().find("at least 16 characters"), std::string::npos) << weak.status().ToString();
  config_.metrics_token_file = (dir_ / "token").string();
  config_.metrics_bind = "no-port-here";
  auto bad = AgentMetricsService::Start(config_, "none.so");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("metrics_bind"), std::string::npos) << bad.status().ToString();
}

TEST(AgentConfigMetrics, TheKeysComeFromFlagsAndTheFile) {
  const char* argv[] = {"anneal-agent",   "--insecure-plaintext", "--metrics-bind",
                        "127.0.0.1:9401", "--metrics-token-file", "/etc/anneal/metrics-token"};
  auto parsed = ParseAgentFlags(6, argv);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->config.metrics_bind, "127.0.0.1:9401");
  EXPECT_EQ(parsed->config.metrics_token_file, "/etc/anneal/metrics-token");
  const auto file = std::filesystem::temp_directory_path() / ("anneal-agent-cfg-" + std::to_string(getpid()) + ".yaml");
  std::ofstream(file) << "metrics_bind: \"0.0.0.0:0\"\nmetrics_token_file: /t\n";
  AgentConfig config;
  ASSERT_TRUE(ApplyConfigFile(file.string(), {}, &config).ok());
  std::filesystem::remove(file);
  EXPECT_EQ(config.metrics_bind, "0.0.0.0:0");
  EXPECT_EQ(config.metrics_token_file, "/t");
  EXPECT_TRUE(AgentConfig{}.metrics_bind.empty()) << "off by default";
}

}  // namespace
}  // namespace anneal::agent
