#include "agent/http.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <string_view>
#include <thread>

#include "common/secret.h"

namespace anneal::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct AgentHttpServer::Impl {
  AgentHttpOptions options;  // before `io`: sessions destroyed with io's handlers still count themselves out
  std::string token_hash;
  size_t open_sessions = 0;  // HTTP thread only
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer retry{io};
  std::thread thread;
  std::atomic<uint64_t> refused{0};

  struct Answer {
    unsigned status = 200;
    std::string content_type = "text/plain";
    std::string body;
  };

  // The bearer token check comes first: an unauthenticated request learns nothing, not even which paths exist.
  Answer Respond(std::string_view method, std::string_view target, std::string_view authorization) {
    constexpr std::string_view kScheme = "Bearer ";
    std::string why;
    if (authorization.empty()) {
      why = "no Authorization header; send 'Authorization: Bearer <token of the agent's metrics_token_file>'";
    } else if (authorization.size() <= kScheme.size() || authorization.substr(0, kScheme.size()) != kScheme) {
      why = "the Authorization header is not 'Bearer <token>'";
    } else if (!SecretEquals(SecretHash(authorization.substr(kScheme.size())), token_hash)) {
      why = "wrong bearer token (not the one in the agent's metrics_token_file)";
    }
    if (!why.empty()) {
      refused.fetch_add(1);
      return {401, "text/plain", "401 unauthorized: " + why + "\n"};
    }
    if (method != "GET") {
      return {405, "text/plain",
              fmt::format("405 method not allowed: only GET is served, not {}\n", method.substr(0, 16))};
    }
    if (target.substr(0, target.find('?')) != "/metrics") return {404, "text/plain", "404 not found: try /metrics\n"};
    return {200, "text/plain; version=0.0.4", options.render()};
  }

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;
      if (ec) {
        spdlog::warn("metrics HTTP accept failed: {}; retrying in 100 ms", ec.message());
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code wait_ec) {
          if (!wait_ec && acceptor.is_open()) Accept();
        });
        return;
      }
      if (open_sessions >= options.max_connections) {
        RefuseBusy(std::move(socket));
      } else {
        std::make_shared<Session>(std::move(socket), this)->Start();
      }
      Accept();
    });
  }

  void RefuseBusy(tcp::socket socket) {
    const std::string body =
        fmt::format("503: too many metrics HTTP connections (limit {})\n", options.max_connections);
    auto text = std::make_shared<std::string>(fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}"
        "\r\n\r\n{}",
        body.size(), body));
    auto shared = std::make_shared<tcp::socket>(std::move(socket));
    asio::async_write(*shared, asio::buffer(*text), [shared, text](beast::error_code, size_t) {
      beast::error_code ignored;
      shared->shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket socket, Impl* owner) : stream(std::move(socket)), impl(owner) {
      ++impl->open_sessions;
      parser.header_limit(static_cast<uint32_t>(impl->options.max_request_bytes));
      parser.body_limit(impl->options.max_request_bytes);
    }
    ~Session() { --impl->open_sessions; }
    void Start() {
      stream.expires_after(impl->options.request_timeout);
      http::async_read(stream, buffer, parser,
                       [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
    }
    void OnRead(beast::error_code ec) {
      Answer answer;
      if (ec == http::error::header_limit || ec == http::error::body_limit || ec == http::error::buffer_overflow) {
        answer.status = ec == http::error::body_limit ? 413 : 431;
        answer.body = fmt::format("{}: the request is larger than {} bytes (the agent's metrics request limit)\n",
                                  answer.status, impl->options.max_request_bytes);
      } else if (ec) {
        return;  // timeout, reset, garbage: close
      } else {
        const auto& request = parser.get();
        const auto method = request.method_string();
        const auto target = request.target();
        const auto authorization = request[http::field::authorization];
        answer = impl->Respond({method.data(), method.size()}, {target.data(), target.size()},
                               {authorization.data(), authorization.size()});
      }
      response.version(11);
      response.keep_alive(false);
      response.result(static_cast<http::status>(answer.status));
      response.set(http::field::content_type, answer.content_type);
      if (answer.status == 401) response.set(http::field::www_authenticate, "Bearer realm=\"anneal-agent\"");
      response.body() = std::move(answer.body);
      response.prepare_payload();
      http::async_write(stream, response, [self = shared_from_this()](beast::error_code, size_t) {
        beast::error_code ignored;
        self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      });
    }
    beast::tcp_stream stream;
    Impl* impl;
    beast::flat_buffer buffer;
    http::request_parser<http::string_body> parser;
    http::response<http::string_body> response;
  };
};

AgentHttpServer::AgentHttpServer() : impl_(std::make_unique<Impl>()) {}
AgentHttpServer::~AgentHttpServer() {
  Stop();
}

Status AgentHttpServer::Start(const std::string& host_port, AgentHttpOptions options) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError(fmt::format("metrics_bind '{}': expected HOST:PORT", host_port));
  }
  if (options.token.empty())
    return InvalidArgumentError("the metrics endpoint needs a bearer token (metrics_token_file)");
  if (!options.render) return InvalidArgumentError("the metrics endpoint has nothing to render");
  impl_->token_hash = SecretHash(options.token);
  impl_->options = std::move(options);
  try {
    tcp::resolver resolver(impl_->io);
    auto endpoints = resolver.resolve(host_port.substr(0, colon), host_port.substr(colon + 1));
    tcp::endpoint endpoint = *endpoints.begin();
    impl_->acceptor.open(endpoint.protocol());
    impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
    impl_->acceptor.bind(endpoint);
    impl_->acceptor.listen();
    port_ = impl_->acceptor.local_endpoint().port();
  } catch (const std::exception& e) {
    return UnavailableError(fmt::format("cannot serve metrics HTTP on {}: {}", host_port, e.what()));
  }
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Status::Ok();
}

void AgentHttpServer::Stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
  });
  impl_->io.stop();
  impl_->thread.join();
}

uint64_t AgentHttpServer::refused_requests() const {
  return impl_->refused.load();
}

}  // namespace anneal::agent
