// The HTTP endpoint: Prometheus text and JSON bodies from the coordinator's view, served over a real socket.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "coordinator/http.h"
#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

std::string HttpGet(uint16_t port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, n);
  close(fd);
  return response;
}

TEST(Http, MetricsAndJobsReflectTheCoordinator) {
  Harness h;
  h.Register("n1", 4);
  const std::string running = h.Submit(BaseSpec("gpus_per_node: 4\n"));
  h.Submit(BaseSpec("gpus_per_node: 4\n"));  // waits
  const std::string metrics = HttpServer::RenderMetrics(h.core());
  EXPECT_NE(metrics.find("anneal_jobs{state=\"STARTING\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("anneal_queue_length 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("anneal_nodes{state=\"UP\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("anneal_slots_up 4"), std::string::npos) << metrics;
  auto jobs = nlohmann::json::parse(HttpServer::RenderJobs(h.core()));
  ASSERT_EQ(jobs["jobs"].size(), 2u);
  auto nodes = nlohmann::json::parse(HttpServer::RenderNodes(h.core()));
  EXPECT_EQ(nodes["nodes"][0]["node_id"], "n1");

  HttpServer server;
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  server.Publish(h.core());
  // A client that connects and says nothing holds no one up, and does not keep Stop() from returning.
  int silent = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server.port());
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string response = HttpGet(server.port(), "/api/jobs");
  EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
  EXPECT_NE(response.find(running), std::string::npos) << response;
  EXPECT_NE(HttpGet(server.port(), "/metrics").find("anneal_queue_length 1"), std::string::npos);
  EXPECT_NE(HttpGet(server.port(), "/nope").find("404"), std::string::npos);
  server.Stop();
  close(silent);
}

TEST(Http, BadBindIsAnError) {
  HttpServer server;
  EXPECT_EQ(server.Start("no-port").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::coordinator
