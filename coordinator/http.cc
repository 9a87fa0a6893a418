#include "coordinator/http.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <nlohmann/json.hpp>

#include "coordinator/coordinator.h"
#include "coordinator/job_state_machine.h"

namespace anneal::coordinator {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct HttpServer::Impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::mutex mu;
  std::string metrics = "# no snapshot yet\n";
  std::string jobs = "{\"jobs\":[]}";
  std::string nodes = "{\"nodes\":[]}";

  void Accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec) return;  // acceptor closed
      std::make_shared<Session>(std::move(socket), this)->Start();
      Accept();
    });
  }

  // Fills the response for a request from the current snapshot.
  void Answer(const http::request<http::string_body>& request, http::response<http::string_body>* response) {
    response->version(request.version());
    response->keep_alive(false);
    std::string target(request.target());
    std::lock_guard<std::mutex> lock(mu);
    if (request.method() != http::verb::get) {
      response->result(http::status::method_not_allowed);
      response->body() = "only GET is served\n";
    } else if (target == "/metrics") {
      response->set(http::field::content_type, "text/plain; version=0.0.4");
      response->body() = metrics;
    } else if (target == "/api/jobs") {
      response->set(http::field::content_type, "application/json");
      response->body() = jobs;
    } else if (target == "/api/nodes") {
      response->set(http::field::content_type, "application/json");
      response->body() = nodes;
    } else {
      response->result(http::status::not_found);
      response->body() = "not found: try /metrics, /api/jobs or /api/nodes\n";
    }
    response->prepare_payload();
  }

  // One request per connection, asynchronous with a deadline, so a silent client never holds the thread.
  struct Session : std::enable_shared_from_this<Session> {
    Session(tcp::socket socket, Impl* owner) : stream(std::move(socket)), impl(owner) {}
    void Start() {
      stream.expires_after(std::chrono::seconds(5));
      http::async_read(stream, buffer, request, [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec) return;
        self->impl->Answer(self->request, &self->response);
        http::async_write(self->stream, self->response, [self](beast::error_code, size_t) {
          beast::error_code ignored;
          self->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        });
      });
    }
    beast::tcp_stream stream;
    Impl* impl;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    http::response<http::string_body> response;
  };
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() {
  Stop();
}

Status HttpServer::Start(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError(fmt::format("--http-bind '{}': expected HOST:PORT", host_port));
  }
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
  spdlog::info("HTTP on port {} (/metrics, /api/jobs, /api/nodes)", port_);
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
  });
  impl_->io.stop();
  impl_->thread.join();
}

void HttpServer::Publish(const Coordinator& core) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
  if (now - last_publish_ms_ < 1000) return;
  last_publish_ms_ = now;
  std::string metrics = RenderMetrics(core), jobs = RenderJobs(core), nodes = RenderNodes(core);
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->metrics = std::move(metrics);
  impl_->jobs = std::move(jobs);
  impl_->nodes = std::move(nodes);
}

std::string HttpServer::RenderMetrics(const Coordinator& core) {
  std::string out;
  out += "# HELP anneal_jobs Active (non-terminal) jobs by state.\n# TYPE anneal_jobs gauge\n";
  auto by_state = core.ActiveJobsByState();
  for (auto state : {pb::JOB_PENDING, pb::JOB_STARTING, pb::JOB_RUNNING, pb::JOB_RESTARTING, pb::JOB_CANCELLING}) {
    out += fmt::format("anneal_jobs{{state=\"{}\"}} {}\n", protocol::StateName(state), by_state[state]);
  }
  out += fmt::format(
      "# HELP anneal_queue_length Jobs waiting for a placement.\n# TYPE anneal_queue_length gauge\n"
      "anneal_queue_length {}\n",
      core.PendingJobCount());
  std::map<pb::NodeState, size_t> nodes;
  uint64_t slots = 0;
  for (const auto& node : core.Nodes()) {
    ++nodes[node.state()];
    if (node.state() == pb::NODE_UP) slots += node.inventory().slots();
  }
  out += "# HELP anneal_nodes Registered nodes by state.\n# TYPE anneal_nodes gauge\n";
  for (auto state : {pb::NODE_UP, pb::NODE_DRAINING, pb::NODE_DOWN}) {
    out += fmt::format("anneal_nodes{{state=\"{}\"}} {}\n", protocol::StateName(state), nodes[state]);
  }
  out += fmt::format(
      "# HELP anneal_slots_up Rank slots on nodes that are up.\n# TYPE anneal_slots_up gauge\n"
      "anneal_slots_up {}\n",
      slots);
  return out;
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

}  // namespace anneal::coordinator
