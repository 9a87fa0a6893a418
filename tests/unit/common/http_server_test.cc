// The daemons' one HTTP server (common/http_server.h): answers given later from another thread, streams, the
// per-request body limit, and a stream that notices its client left. The limits shared with the daemons (431,
// 503, timeouts) are tested through them (tests/unit/agent/metrics_http_test.cc, coordinator/http_test.cc).
#include "common/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace anneal {
namespace {

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `request` and reads until the server closes.
std::string Exchange(uint16_t port, const std::string& request) {
  int fd = Connect(port);
  if (fd < 0) return "connect failed";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) < 0) return "send failed";
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return text;
}

HttpServerOptions WithHandler(HttpHandler handler) {
  HttpServerOptions options;
  options.handler = std::move(handler);
  return options;
}

std::string Post(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST(HttpServer, AnAnswerGivenLaterFromAnotherThreadReachesTheClient) {
  HttpServer server;
  std::vector<std::thread> workers;
  ASSERT_TRUE(server
                  .Start("127.0.0.1:0", WithHandler([&](std::shared_ptr<HttpExchange> x) {
                           workers.emplace_back([x] {
                             std::this_thread::sleep_for(std::chrono::milliseconds(100));
                             x->Respond({.status = 201,
                                         .content_type = "application/json",
                                         .body = "{\"got\":\"" + x->request().body + "\"}",
                                         .headers = {}});
                           });
                         }))
                  .ok());
  const std::string reply = Exchange(server.port(), Post("/x?y=1", "hello"));
  EXPECT_NE(reply.find("HTTP/1.1 201"), std::string::npos) << reply;
  EXPECT_NE(reply.find("{\"got\":\"hello\"}"), std::string::npos) << reply;
  server.Stop();
  for (auto& w : workers) w.join();
}

TEST(HttpServer, AStreamDeliversEveryPieceInOrderAndEndsWhenClosed) {
  HttpServer server;
  ASSERT_TRUE(server
                  .Start("127.0.0.1:0", WithHandler([](std::shared_ptr<HttpExchange> x) {
                           x->BeginStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}});
                           for (int i = 0; i < 3; ++i) x->Write("data: " + std::to_string(i) + "\n\n");
                           x->Close();
                           x->Write("data: after close\n\n");
                         }))
                  .ok());
  const std::string reply = Exchange(server.port(), "GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(reply.find("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"), std::string::npos) << reply;
  EXPECT_NE(reply.find("Cache-Control: no-cache"), std::string::npos) << reply;
  EXPECT_NE(reply.find("data: 0\n\ndata: 1\n\ndata: 2\n\n"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("after close"), std::string::npos) << reply;
}

TEST(HttpServer, TheBodyLimitIsPerRequestAndTheServerServesAfterA413) {
  HttpServer server;
  HttpServerOptions options;
  options.max_request_bytes = 1024;
  options.body_limit = [](const HttpRequest& head) -> size_t { return head.target == "/big" ? 100000 : 1024; };
  options.size_hint = " (the_setting)";
  options.handler = [](std::shared_ptr<HttpExchange> x) {
    x->Respond({.status = 200, .body = std::to_string(x->request().body.size()), .headers = {}});
  };
  ASSERT_TRUE(server.Start("127.0.0.1:0", std::move(options)).ok());
  const std::string big(50000, 'x');
  const std::string refused = Exchange(server.port(), Post("/small", big));
  EXPECT_NE(refused.find("413"), std::string::npos) << refused.substr(0, 200);
  EXPECT_NE(refused.find("larger than 1024 bytes (the_setting)"), std::string::npos) << refused.substr(0, 300);
  const std::string accepted = Exchange(server.port(), Post("/big", big));
  EXPECT_NE(accepted.find("200 OK"), std::string::npos) << accepted.substr(0, 200);
  EXPECT_NE(accepted.find("\r\n\r\n50000"), std::string::npos) << accepted.substr(0, 300);
}

TEST(HttpServer, AStreamWhoseClientLeftReportsClosed) {
  HttpServer server;
  std::shared_ptr<HttpExchange> kept;
  std::atomic<bool> ready{false};
  ASSERT_TRUE(server
                  .Start("127.0.0.1:0", WithHandler([&](std::shared_ptr<HttpExchange> x) {
                           x->BeginStream(200, "text/event-stream", {});
                           kept = x;
                           ready = true;
                         }))
                  .ok());
  int fd = Connect(server.port());
  ASSERT_GE(fd, 0);
  const std::string get = "GET /s HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_GT(::send(fd, get.data(), get.size(), MSG_NOSIGNAL), 0);
  for (int i = 0; i < 200 && !ready; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(ready);
  EXPECT_FALSE(kept->closed());
  ::close(fd);
  // Writes to a closed peer fail within a few attempts (the first may still be buffered by the kernel).
  for (int i = 0; i < 200 && !kept->closed(); ++i) {
    kept->Write(std::string(4096, ':') + "\n\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(kept->closed());
  server.Stop();
  kept.reset();
}

TEST(HttpServer, StartRefusesAMissingHandlerAndAMalformedAddress) {
  HttpServer server;
  EXPECT_EQ(server.Start("127.0.0.1:0", {}).code(), StatusCode::kInvalidArgument);
  HttpServer other;
  Status bad = other.Start("no-port", WithHandler([](std::shared_ptr<HttpExchange>) {}), "--http-bind");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--http-bind"), std::string::npos) << bad.message();
}

}  // namespace
}  // namespace anneal
