// The HTTP endpoint: Prometheus text and JSON bodies from the coordinator's view, served over a real socket.
#include "coordinator/http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

// A raw request: `head` is sent after the request line (headers), then an empty line.
std::string HttpSend(uint16_t port, const std::string& request_text) {
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
  (void)!write(fd, request_text.data(), request_text.size());
  std::string response;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, n);
  close(fd);
  return response;
}

std::string HttpGet(uint16_t port, const std::string& path, const std::string& token = "tok") {
  std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n";
  if (!token.empty()) request += "Authorization: Bearer " + token + "\r\n";
  return HttpSend(port, request + "\r\n");
}

// Accepts exactly `token` (the coordinator's own authenticator reads API tokens from its store: identity_test).
HttpAuthenticator TokenIs(std::string token) {
  return [token = std::move(token)](std::string_view bearer) -> Status {
    return bearer == token ? Status::Ok() : UnauthenticatedError("the token is not valid for this coordinator");
  };
}

HttpServerOptions WithToken() {
  HttpServerOptions options;
  options.authenticate = TokenIs("tok");
  return options;
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
  ASSERT_TRUE(server.Start("127.0.0.1:0", WithToken()).ok());
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

TEST(HttpRouter, EveryRouteNeedsABearerTokenUnlessMetricsArePublic) {
  HttpSnapshot snapshot{"m 1\n", "{\"jobs\":[1]}", "{\"nodes\":[]}"};
  HttpRouteOptions options{false, TokenIs("s3cret")};
  for (const std::string target : {"/metrics", "/api/jobs", "/api/nodes", "/nope"}) {
    HttpResponse none = RouteHttpRequest({"GET", target, ""}, snapshot, options);
    EXPECT_EQ(none.status, 401) << target;
    EXPECT_NE(none.body.find("no Authorization header"), std::string::npos) << none.body;
    ASSERT_FALSE(none.headers.empty());
    EXPECT_EQ(none.headers[0].first, "WWW-Authenticate");
    EXPECT_EQ(RouteHttpRequest({"GET", target, "Basic czNjcmV0"}, snapshot, options).status, 401);
    HttpResponse wrong = RouteHttpRequest({"GET", target, "Bearer s3cre"}, snapshot, options);
    EXPECT_EQ(wrong.status, 401);
    EXPECT_NE(wrong.body.find("not valid"), std::string::npos) << wrong.body;
  }
  HttpResponse jobs = RouteHttpRequest({"GET", "/api/jobs?pretty=1", "Bearer s3cret"}, snapshot, options);
  EXPECT_EQ(jobs.status, 200);
  EXPECT_EQ(jobs.body, snapshot.jobs);
  EXPECT_EQ(jobs.content_type, "application/json");
  EXPECT_EQ(RouteHttpRequest({"POST", "/api/jobs", "Bearer s3cret"}, snapshot, options).status, 405);
  EXPECT_EQ(RouteHttpRequest({"GET", "/nope", "Bearer s3cret"}, snapshot, options).status, 404);
  options.public_metrics = true;
  EXPECT_EQ(RouteHttpRequest({"GET", "/metrics", ""}, snapshot, options).body, snapshot.metrics);
  EXPECT_EQ(RouteHttpRequest({"GET", "/api/nodes", ""}, snapshot, options).status, 401);
}

TEST(Http, OversizedRequestsAndTooManyConnectionsAreRefusedAndServingGoesOn) {
  HttpServerOptions options = WithToken();
  options.max_request_bytes = 1024;
  options.max_connections = 2;
  HttpServer server;
  ASSERT_TRUE(server.Start("127.0.0.1:0", std::move(options)).ok());
  const std::string huge_header = "GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4096, 'a') + "\r\n\r\n";
  const std::string refused = HttpSend(server.port(), huge_header);
  EXPECT_NE(refused.find("431"), std::string::npos) << refused;
  EXPECT_NE(refused.find("http_max_request_bytes"), std::string::npos) << refused;
  // Two silent connections fill the cap: a third is answered 503.
  std::vector<int> silent;
  for (int i = 0; i < 2; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server.port());
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    silent.push_back(fd);
  }
  usleep(200000);
  const std::string busy = HttpGet(server.port(), "/api/jobs");
  EXPECT_NE(busy.find("503"), std::string::npos) << busy;
  EXPECT_NE(busy.find("http_max_connections"), std::string::npos) << busy;
  for (int fd : silent) close(fd);
  usleep(200000);
  EXPECT_NE(HttpGet(server.port(), "/api/jobs").find("200 OK"), std::string::npos);
  EXPECT_EQ(server.accept_errors(), 0u);
}

TEST(Http, BadBindIsAnError) {
  HttpServer server;
  EXPECT_EQ(server.Start("no-port").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::coordinator
