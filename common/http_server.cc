#include "common/http_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <limits>
#include <thread>

namespace anneal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string_view HttpPath(std::string_view target) {
  return target.substr(0, target.find('?'));
}

struct HttpServer::Impl {
  // Declared before `io`: sessions destroyed with io's pending handlers still count themselves out.
  HttpServerOptions options;
  std::atomic<size_t> open_sessions{0};
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer retry{io};
  std::thread thread;
  std::atomic<uint64_t> accept_errors{0};
  std::chrono::steady_clock::time_point last_warning{};
  // Two descriptors held in reserve and let go while the accept error is logged: with the fd table full, the
  // logger (and a sanitizer's checks, which open a pipe) would have none.
  std::array<int, 2> spare_fds{OpenSpare(), OpenSpare()};

  ~Impl() {
    for (int fd : spare_fds) {
      if (fd >= 0) ::close(fd);
    }
  }
  static int OpenSpare() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

  void Accept();
  void OnAcceptError(const beast::error_code& ec);
  void RefuseBusy(tcp::socket socket);
};

namespace {

// One connection: reads one request within the limits, hands it to the handler, writes what the handler
// answers (whole, or a stream of pieces), then closes.
class Session : public HttpExchange, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpServerOptions* options, std::atomic<size_t>* open_sessions)
      : stream_(std::move(socket)), options_(options), open_sessions_(open_sessions) {
    ++*open_sessions_;
    parser_.header_limit(static_cast<uint32_t>(options_->max_request_bytes));
    // The body limit depends on the request (OnHeader checks Content-Length against it): the largest while the
    // header is read, since Beast checks Content-Length then (not boost::none: Beast 1.74 compares an empty limit
    // as smaller than any length).
    parser_.body_limit(std::numeric_limits<std::uint64_t>::max());
  }
  ~Session() override { --*open_sessions_; }

  void Start() {
    stream_.expires_after(options_->request_timeout);
    http::async_read_header(stream_, buffer_, parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  const HttpRequest& request() const override { return request_; }
  bool closed() const override { return closed_.load(); }

  void Respond(HttpResponse response) override {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), r = std::move(response)]() mutable { self->DoRespond(std::move(r)); });
  }
  void BeginStream(int status, std::string content_type,
                   std::vector<std::pair<std::string, std::string>> headers) override {
    std::string head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nConnection: close\r\n", status,
                                   std::string(http::obsolete_reason(static_cast<http::status>(status))), content_type);
    for (const auto& [name, value] : headers) head += name + ": " + value + "\r\n";
    head += "\r\n";
    asio::post(stream_.get_executor(), [self = shared_from_this(), head = std::move(head)]() mutable {
      if (self->answered_) return;
      self->answered_ = true;
      self->streaming_ = true;
      self->Enqueue(std::move(head));
    });
  }
  void Write(std::string chunk) override {
    asio::post(stream_.get_executor(), [self = shared_from_this(), chunk = std::move(chunk)]() mutable {
      if (self->streaming_ && !self->closing_ && !self->closed_) self->Enqueue(std::move(chunk));
    });
  }
  void Close() override {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      self->closing_ = true;
      if (!self->writing_) self->Shutdown();
    });
  }

 private:
  bool TooLarge(const beast::error_code& ec) const {
    return ec == http::error::header_limit || ec == http::error::body_limit || ec == http::error::buffer_overflow;
  }

  void RefuseTooLarge(const beast::error_code& ec) {
    HttpResponse r;
    r.status = ec == http::error::body_limit ? 413 : 431;
    const size_t limit = ec == http::error::body_limit ? body_limit_ : options_->max_request_bytes;
    r.body = fmt::format("{}: the request is larger than {} bytes{}\n", r.status, limit, options_->size_hint);
    DoRespond(std::move(r));
  }

  void OnHeader(beast::error_code ec) {
    if (TooLarge(ec)) return RefuseTooLarge(ec);
    if (ec) return;  // timeout, reset, garbage: close
    FillHead();
    body_limit_ = options_->body_limit ? options_->body_limit(request_) : options_->max_request_bytes;
    const auto declared = parser_.content_length();
    if (declared && *declared > body_limit_) return RefuseTooLarge(http::error::body_limit);
    parser_.body_limit(body_limit_);  // a chunked body is checked as it comes
    http::async_read(stream_, buffer_, parser_,
                     [self = shared_from_this()](beast::error_code read_ec, size_t) { self->OnRead(read_ec); });
  }

  void OnRead(beast::error_code ec) {
    if (TooLarge(ec)) return RefuseTooLarge(ec);
    if (ec) return;
    request_.body = std::move(parser_.get().body());
    stream_.expires_never();  // the handler may answer later; writes set their own deadline
    options_->handler(shared_from_this());
  }

  void FillHead() {
    const auto& head = parser_.get();
    request_.method = std::string(head.method_string());
    request_.target = std::string(head.target());
    request_.authorization = std::string(head[http::field::authorization]);
    request_.content_type = std::string(head[http::field::content_type]);
    request_.last_event_id = std::string(head["Last-Event-ID"]);
  }

  void DoRespond(HttpResponse answer) {
    if (answered_) return;
    answered_ = true;
    response_.version(11);
    response_.keep_alive(false);
    response_.result(static_cast<http::status>(answer.status));
    response_.set(http::field::content_type, answer.content_type);
    for (const auto& [name, value] : answer.headers) response_.set(name, value);
    response_.body() = std::move(answer.body);
    response_.prepare_payload();
    stream_.expires_after(options_->request_timeout);
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, size_t) { self->Shutdown(); });
  }

  // A reader slower than the stream's writer is cut off past kMaxQueuedBytes, so a stream's backlog (and the
  // coordinator's memory) stays bounded; closed() then tells the writer to stop.
  void Enqueue(std::string piece) {
    if (closed_) return;
    queued_bytes_ += piece.size();
    if (queued_bytes_ > kMaxQueuedBytes) return Shutdown();
    queue_.push_back(std::move(piece));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    writing_ = true;
    stream_.expires_after(options_->request_timeout);
    asio::async_write(stream_, asio::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->queued_bytes_ -= self->queue_.front().size();
      self->queue_.pop_front();
      self->writing_ = false;
      if (ec || self->closed_) return self->Shutdown();  // the client went away, or was cut off
      if (!self->queue_.empty()) return self->WriteNext();
      if (self->closing_) return self->Shutdown();
      self->stream_.expires_never();
    });
  }

  void Shutdown() {
    closed_ = true;
    if (!writing_) {  // a write in flight still owns queue_.front()
      queue_.clear();
      queued_bytes_ = 0;
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  beast::tcp_stream stream_;
  const HttpServerOptions* options_;
  std::atomic<size_t>* open_sessions_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  http::response<http::string_body> response_;
  HttpRequest request_;
  size_t body_limit_ = 0;
  // On the server's thread only:
  bool answered_ = false;
  bool streaming_ = false;
  bool writing_ = false;
  bool closing_ = false;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;                            // of queue_
  static constexpr size_t kMaxQueuedBytes = 1u << 20;  // per connection
  std::atomic<bool> closed_{false};
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (!acceptor.is_open() || ec == asio::error::operation_aborted) return;  // Stop()
    if (ec) return OnAcceptError(ec);
    if (open_sessions.load() >= options.max_connections) {
      RefuseBusy(std::move(socket));
    } else {
      std::make_shared<Session>(std::move(socket), &options, &open_sessions)->Start();
    }
    Accept();
  });
}

// EMFILE and friends: the pending connection stays queued; wait a little (so a full fd table is not a busy loop)
// and accept again.
void HttpServer::Impl::OnAcceptError(const beast::error_code& ec) {
  accept_errors.fetch_add(1);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_warning > std::chrono::seconds(10)) {
    for (int& fd : spare_fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
    spdlog::warn("{} accept failed: {} ({} so far); retrying in 100 ms", options.name, ec.message(),
                 accept_errors.load());
    for (int& fd : spare_fds) fd = OpenSpare();  // -1 while the table is still full: tried again next time
    last_warning = now;
  }
  retry.expires_after(std::chrono::milliseconds(100));
  retry.async_wait([this](beast::error_code wait_ec) {
    if (!wait_ec && acceptor.is_open()) Accept();
  });
}

// Over max_connections: a short 503 and close, without reading the request.
void HttpServer::Impl::RefuseBusy(tcp::socket socket) {
  const std::string body = fmt::format("503: too many {} connections (limit {}{})\n", options.name,
                                       options.max_connections, options.busy_hint);
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

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}
HttpServer::~HttpServer() {
  Stop();
}

Status HttpServer::Start(const std::string& host_port, HttpServerOptions options, const std::string& what) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return InvalidArgumentError(fmt::format("{} '{}': expected HOST:PORT", what, host_port));
  }
  if (!options.handler) return InvalidArgumentError(fmt::format("{}: the HTTP server has no handler", what));
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
    return UnavailableError(fmt::format("cannot serve {} on {}: {}", impl_->options.name, host_port, e.what()));
  }
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Status::Ok();
}

void HttpServer::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->io.stop();
  impl_->thread.join();
  // After the thread: the listening socket closes now, so no connection waits in its backlog unanswered.
  beast::error_code ec;
  impl_->acceptor.close(ec);
  impl_->retry.cancel();
}

uint64_t HttpServer::accept_errors() const {
  return impl_->accept_errors.load();
}

size_t HttpServer::open_connections() const {
  return impl_->open_sessions.load();
}

}  // namespace anneal
