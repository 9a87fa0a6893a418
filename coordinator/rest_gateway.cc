#include "coordinator/rest_gateway.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "protocol/curve.h"
#include "protocol/framing.h"

namespace anneal::coordinator {

using SteadyClock = std::chrono::steady_clock;

struct RestGateway::Impl {
  struct Queued {
    pb::ClientRequest request;
    std::chrono::milliseconds extra_wait;
    Done done;
  };
  struct Pending {
    std::string token;
    SteadyClock::time_point deadline;
    Done done;
  };
  struct Dealer {
    std::unique_ptr<zmq::socket_t> socket;
    SteadyClock::time_point last_used;
    size_t in_flight = 0;
  };

  RestGatewayOptions options;
  int wake_fd = -1;
  std::atomic<bool> stop{false};
  std::atomic<bool> running{false};
  std::thread thread;
  std::mutex mu;
  std::vector<Queued> queue;  // under mu
  std::atomic<size_t> socket_count{0};
  // Gateway thread only:
  zmq::context_t context{1};
  std::map<std::string, Dealer> dealers;  // token -> its DEALER
  std::map<uint64_t, Pending> pending;    // request_id -> waiting caller
  uint64_t next_request_id = 1;

  void Wake() {
    const uint64_t one = 1;
    if (::write(wake_fd, &one, sizeof(one)) < 0) spdlog::debug("REST gateway wake-up write failed");
  }

  // zmq::poll, false when a signal interrupted it (EINTR: the process's shutdown handlers may run on this
  // thread; cppzmq throws for it, which would end the process instead of its orderly stop).
  static bool Poll(zmq::pollitem_t* items, size_t count, int64_t timeout_ms) {
    try {
      zmq::poll(items, count, std::chrono::milliseconds(timeout_ms));
      return true;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return false;
      throw;
    }
  }

  void Run() {
    while (!stop.load()) {
      std::vector<zmq::pollitem_t> items;
      std::vector<std::string> tokens;
      items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
      for (auto& [token, dealer] : dealers) {
        items.push_back({dealer.socket->handle(), 0, ZMQ_POLLIN, 0});
        tokens.push_back(token);
      }
      if (!Poll(items.data(), items.size(), NextTimeoutMs())) continue;  // a signal: look at `stop` again
      if (items[0].revents & ZMQ_POLLIN) {
        uint64_t count = 0;
        if (::read(wake_fd, &count, sizeof(count)) < 0) spdlog::debug("REST gateway wake-up read failed");
      }
      for (size_t i = 1; i < items.size(); ++i) {
        if (items[i].revents & ZMQ_POLLIN) ReceiveAll(tokens[i - 1]);
      }
      SendQueued();
      ExpireDeadlines();
    }
    for (auto& [id, waiting] : pending) waiting.done(UnavailableError("the coordinator's REST gateway stopped"));
    pending.clear();
    std::vector<Queued> left;
    {
      std::lock_guard<std::mutex> lock(mu);
      left.swap(queue);
    }
    for (auto& q : left) q.done(UnavailableError("the coordinator's REST gateway stopped"));
    dealers.clear();
  }

  long NextTimeoutMs() const {
    auto wait = std::chrono::milliseconds(1000);
    const auto now = SteadyClock::now();
    for (const auto& [id, waiting] : pending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(waiting.deadline - now);
      wait = std::max(std::chrono::milliseconds(1), std::min(wait, left));
    }
    return static_cast<long>(wait.count());
  }

  void SendQueued() {
    std::vector<Queued> work;
    {
      std::lock_guard<std::mutex> lock(mu);
      work.swap(queue);
    }
    for (auto& q : work) {
      auto dealer = DealerFor(q.request.token());
      if (!dealer.ok()) {
        q.done(dealer.status());
        continue;
      }
      const uint64_t id = next_request_id++;
      q.request.set_request_id(id);
      if (Status st = protocol::Send(*(*dealer)->socket, protocol::MessageKind::kClientRequest, q.request); !st.ok()) {
        q.done(UnavailableError("the REST gateway could not send to the coordinator: " + st.message()));
        continue;
      }
      ++(*dealer)->in_flight;
      pending[id] = {q.request.token(), SteadyClock::now() + options.timeout + q.extra_wait, std::move(q.done)};
    }
  }

  // The token's DEALER, made (and connected) when it has none; the least recently used idle one is closed
  // first when max_sockets are open.
  StatusOr<Dealer*> DealerFor(const std::string& token) {
    auto it = dealers.find(token);
    if (it == dealers.end()) {
      if (dealers.size() >= options.max_sockets) EvictIdle();
      auto socket = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
      socket->set(zmq::sockopt::linger, 0);
      if (!options.server_public_key.empty()) {
        RETURN_IF_ERROR(protocol::ConfigureCurveClient(*socket, options.server_public_key));
      }
      try {
        socket->connect(options.endpoint);
      } catch (const zmq::error_t& e) {
        return UnavailableError(fmt::format("the REST gateway cannot connect to {}: {}", options.endpoint, e.what()));
      }
      it = dealers.emplace(token, Dealer{std::move(socket), {}, 0}).first;
      socket_count.store(dealers.size());
    }
    it->second.last_used = SteadyClock::now();
    return &it->second;
  }

  void EvictIdle() {
    auto victim = dealers.end();
    for (auto it = dealers.begin(); it != dealers.end(); ++it) {
      if (it->second.in_flight == 0 && (victim == dealers.end() || it->second.last_used < victim->second.last_used))
        victim = it;
    }
    if (victim != dealers.end()) dealers.erase(victim);
    socket_count.store(dealers.size());
  }

  void ReceiveAll(const std::string& token) {
    auto it = dealers.find(token);
    if (it == dealers.end()) return;
    zmq::socket_t& socket = *it->second.socket;
    while (true) {
      zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
      if (!Poll(&item, 1, 0) || !(item.revents & ZMQ_POLLIN)) return;
      auto frames = protocol::Receive(socket, /*routed=*/false);
      if (!frames.ok()) return;
      pb::ClientReply reply;
      if (!protocol::Parse(*frames, protocol::MessageKind::kClientReply, &reply).ok()) continue;
      auto waiting = pending.find(reply.request_id());
      if (waiting == pending.end()) continue;  // late: its caller was already answered 504
      Done done = std::move(waiting->second.done);
      pending.erase(waiting);
      --it->second.in_flight;
      done(std::move(reply));
    }
  }

  void ExpireDeadlines() {
    const auto now = SteadyClock::now();
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->second.deadline > now) {
        ++it;
        continue;
      }
      Done done = std::move(it->second.done);
      if (auto dealer = dealers.find(it->second.token); dealer != dealers.end()) --dealer->second.in_flight;
      it = pending.erase(it);
      done(DeadlineExceededError(fmt::format("the coordinator did not answer within {} ms", options.timeout.count())));
    }
  }
};

RestGateway::RestGateway() : impl_(std::make_unique<Impl>()) {}
RestGateway::~RestGateway() {
  Stop();
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
}

Status RestGateway::Start(RestGatewayOptions options) {
  if (options.endpoint.empty()) return InvalidArgumentError("the REST gateway needs the coordinator's endpoint");
  impl_->options = std::move(options);
  impl_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->wake_fd < 0) return InternalError("the REST gateway cannot make an eventfd");
  impl_->running.store(true);
  impl_->thread = std::thread([this] { impl_->Run(); });
  return Status::Ok();
}

void RestGateway::Stop() {
  if (!impl_->thread.joinable()) return;
  impl_->stop.store(true);
  impl_->Wake();
  impl_->thread.join();
}

void RestGateway::Call(pb::ClientRequest request, std::chrono::milliseconds extra_wait, Done done) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->running.load() && !impl_->stop.load()) {
      impl_->queue.push_back({std::move(request), extra_wait, std::move(done)});
      done = nullptr;
    }
  }
  if (done) {
    done(UnavailableError("the coordinator's REST gateway is not running"));
    return;
  }
  impl_->Wake();
}

size_t RestGateway::open_sockets() const {
  return impl_->socket_count.load();
}

}  // namespace anneal::coordinator
