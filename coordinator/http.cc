#include "coordinator/http.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "coordinator/authz.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"
#include "coordinator/metrics.h"
#include "coordinator/model_registry_json.h"
#include "coordinator/schedule_http.h"

namespace anneal::coordinator {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpServer::Impl {
  // Declared before `io`: the sessions destroyed with io's pending handlers still count themselves out.
  HttpServerOptions options;
  size_t open_sessions = 0;  // on the HTTP thread only
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer retry{io};
  std::thread thread;
  mutable std::mutex mu;
  HttpSnapshot snapshot;  // under mu
  std::atomic<uint64_t> accept_errors{0};
  std::chrono::steady_clock::time_point last_warning{};

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;  // Stop()
      if (ec) {
        OnAcceptError(ec);
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

  // EMFILE and friends: the pending connection stays queued; wait a little (so a full fd table is not a busy
  // loop) and accept again.
  void OnAcceptError(const beast::error_code& ec) {
    accept_errors.fetch_add(1);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_warning > std::chrono::seconds(10)) {
      spdlog::warn("HTTP accept failed: {} ({} so far); retrying in 100 ms", ec.message(), accept_errors.load());
      last_warning = now;
    }
    retry.expires_after(std::chrono::milliseconds(100));
    retry.async_wait([this](beast::error_code wait_ec) {
      if (!wait_ec && acceptor.is_open()) Accept();
    });
  }

  // Over max_connections: a short 503 and close, without reading the request.
  void RefuseBusy(tcp::socket socket) {
    auto text = std::make_shared<std::string>();
    const std::string body =
        fmt::format("503: too many HTTP connections (limit {}, http_max_connections)\n", options.max_connections);
    *text = fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}"
        "\r\n\r\n{}",
        body.size(), body);
    auto shared = std::make_shared<tcp::socket>(std::move(socket));
    asio::async_write(*shared, asio::buffer(*text), [shared, text](beast::error_code, size_t) {
      beast::error_code ignored;
      shared->shutdown(tcp::socket::shutdown_both, ignored);
    });
  }

  // One request per connection, asynchronous with a deadline, so a silent client never holds the thread.
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
      HttpResponse answer;
      if (ec == http::error::header_limit || ec == http::error::body_limit || ec == http::error::buffer_overflow) {
        answer.status = ec == http::error::body_limit ? 413 : 431;
        answer.body = fmt::format("{}: the request is larger than {} bytes (http_max_request_bytes)\n", answer.status,
                                  impl->options.max_request_bytes);
      } else if (ec) {
        return;  // timeout, reset, garbage: close
      } else {
        const auto& request = parser.get();
        answer = impl->Respond({std::string(request.method_string()), std::string(request.target()),
                                std::string(request[http::field::authorization])});
      }
      response.version(11);
      response.keep_alive(false);
      response.result(static_cast<http::status>(answer.status));
      response.set(http::field::content_type, answer.content_type);
      for (const auto& [name, value] : answer.headers) response.set(name, value);
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

  HttpResponse Respond(const HttpRequest& request) const {
    HttpRouteOptions route{options.public_metrics, options.authenticate};
    std::lock_guard<std::mutex> lock(mu);
    return RouteHttpRequest(request, snapshot, route);
  }
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() {
  Stop();
}

Status HttpServer::Start(const std::string& host_port, HttpServerOptions options) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError(fmt::format("--http-bind '{}': expected HOST:PORT", host_port));
  }
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
    return UnavailableError(fmt::format("cannot serve HTTP on {}: {}", host_port, e.what()));
  }
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  spdlog::info(
      "HTTP on port {} (/metrics{}, /api/jobs, /api/nodes, /api/queue; bearer token required; up to {} connections)",
      port_, impl_->options.public_metrics ? " public" : "", impl_->options.max_connections);
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
  });
  impl_->io.stop();
  impl_->thread.join();
}

HttpResponse HttpServer::Respond(const HttpRequest& request) const {
  return impl_->Respond(request);
}

uint64_t HttpServer::accept_errors() const {
  return impl_->accept_errors.load();
}

void HttpServer::Publish(const Coordinator& core) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (now - last_publish_ms_ < 1000) return;
  last_publish_ms_ = now;
  HttpSnapshot fresh;  // (assigned member by member: aggregate init would leave the later maps unnamed)
  fresh.metrics = RenderMetrics(core);
  fresh.jobs = RenderJobs(core);
  fresh.nodes = RenderNodes(core);
  fresh.queue = RenderQueue(core);
  fresh.models = RenderModelsJson(core);
  fresh.model_details = RenderModelDetailsJson(core);
  RenderPipelines(core, &fresh);
  fresh.schedules = RenderSchedules(core, &fresh.schedule_details);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->snapshot = std::move(fresh);
}
std::string HttpServer::RenderMetrics(const Coordinator& core) {
  return RenderCoordinatorMetrics(core);  // coordinator/metrics.h
}

std::string HttpServer::RenderJobs(const Coordinator& core) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& r : core.ActiveJobs()) {
    nlohmann::json placed = nlohmann::json::array();
    for (const auto& n : r.placement().nodes()) placed.push_back(n.node_id());
    jobs.push_back({{"job_id", r.job_id()},
                    {"name", r.name()},
                    {"state", protocol::StateName(r.state())},
                    {"attempt", r.attempt()},
                    {"epoch", r.epoch()},
                    {"priority", r.priority()},
                    {"world_size", r.resources().world_size()},
                    {"nodes", placed},
                    {"submitted_at_ms", r.submitted_at_ms()}});
  }
  return nlohmann::json{{"jobs", jobs}}.dump();
}

std::string HttpServer::RenderNodes(const Coordinator& core) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : core.Nodes()) {
    nodes.push_back({{"node_id", n.node_id()},
                     {"state", protocol::StateName(n.state())},
                     {"slots", n.inventory().slots()},
                     {"address", n.inventory().address()},
                     {"last_heartbeat_ms", n.last_heartbeat_ms()}});
  }
  return nlohmann::json{{"nodes", nodes}}.dump();
}

std::string HttpServer::RenderQueue(const Coordinator& core) {
  Principal everyone;  // the endpoint is a cluster admin's (ClusterAdminTokenAuthenticator)
  everyone.cluster_admin = true;
  auto queue = core.Queue(everyone, "");
  if (!queue.ok()) return nlohmann::json{{"error", queue.status().message()}}.dump();
  std::map<std::string, double> usage;
  for (const auto& u : queue->usage()) usage[u.team()] = u.decayed_slot_seconds();
  nlohmann::json teams = nlohmann::json::array();
  for (const auto& t : queue->teams()) {
    nlohmann::json quotas = nlohmann::json::array();
    for (const auto& q : t.quotas()) {
      quotas.push_back({{"label", q.label()}, {"guaranteed", q.guaranteed()}, {"max", q.max()}});
    }
    auto held = queue->slots_held().find(t.name());
    teams.push_back({{"name", t.name()},
                     {"weight", t.weight() == 0 ? 1.0 : t.weight()},
                     {"quotas", quotas},
                     {"usage_slot_seconds", usage[t.name()]},
                     {"slots_held", held == queue->slots_held().end() ? 0u : held->second}});
  }
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& r : queue->jobs()) {
    jobs.push_back({{"job_id", r.job_id()},
                    {"name", r.name()},
                    {"team", JobTeam(r)},
                    {"state", protocol::StateName(r.state())},
                    {"priority", r.priority()},
                    {"queue_position", r.queue_position()},
                    {"wait_reason", r.wait_reason()},
                    {"estimated_start_ms", r.estimated_start_ms()},
                    {"nodes", r.resources().nodes()},
                    {"gpus_per_node", r.resources().gpus_per_node()},
                    {"submit_seq", r.submit_seq()},
                    {"submitted_at_ms", r.submitted_at_ms()},
                    {"preemptions", r.preemptions()},
                    {"preempt_reason", r.preempt_reason()}});
  }
  return nlohmann::json{{"teams", teams}, {"jobs", jobs}}.dump();
}

}  // namespace anneal::coordinator
