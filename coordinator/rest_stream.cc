#include "coordinator/rest_stream.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "coordinator/rest_api.h"
#include "protocol/framing.h"
#include "protocol/json.h"
#include "protocol/states.h"

namespace anneal::coordinator {

struct RestStreams::Counts {
  std::mutex mu;
  size_t total = 0;
  std::map<std::string, size_t> per_token;
};

namespace {

std::string Json(const google::protobuf::Message& m) {
  return protocol::MessageToJson(m).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One open stream: a chain of WatchJob long polls, each answered on the gateway thread.
class Stream : public std::enable_shared_from_this<Stream> {
 public:
  Stream(RestGateway* gateway, std::shared_ptr<RestStreams::Counts> counts, std::shared_ptr<HttpExchange> exchange,
         std::string token, std::string job_id, std::chrono::milliseconds heartbeat)
      : gateway_(gateway),
        counts_(std::move(counts)),
        exchange_(std::move(exchange)),
        token_(std::move(token)),
        job_id_(std::move(job_id)),
        heartbeat_(heartbeat) {
    ParseLastEventId(exchange_->request().last_event_id);
  }
  // "<event seq>:<metric step>" as this stream writes ids; anything else (a sign, garbage) starts from the
  // beginning rather than wrapping to 2^64 - 1 and showing nothing.
  void ParseLastEventId(const std::string& id) {
    const auto colon = id.find(':');
    if (colon == std::string::npos) return;
    uint64_t e = 0, m = 0;
    const char* end = id.data() + id.size();
    auto first = std::from_chars(id.data(), id.data() + colon, e);
    auto second = std::from_chars(id.data() + colon + 1, end, m);
    if (first.ec != std::errc() || first.ptr != id.data() + colon || second.ec != std::errc() || second.ptr != end) {
      return;
    }
    after_event_ = e;
    after_metric_ = m;
  }

  ~Stream() {
    std::lock_guard<std::mutex> lock(counts_->mu);
    --counts_->total;
    if (--counts_->per_token[token_] == 0) counts_->per_token.erase(token_);
  }

  void Poll(std::chrono::milliseconds wait) {
    pb::ClientRequest request;
    request.set_token(token_);
    auto* watch = request.mutable_watch();
    watch->set_job_id(job_id_);
    watch->set_after_event_seq(after_event_);
    watch->set_after_metric_step(after_metric_);
    watch->set_timeout_ms(static_cast<uint32_t>(wait.count()));
    gateway_->Call(std::move(request), wait,
                   [self = shared_from_this()](StatusOr<pb::ClientReply> reply) { self->OnReply(reply); });
  }

 private:
  std::string Id() const { return fmt::format("{}:{}", after_event_, after_metric_); }

  void OnReply(const StatusOr<pb::ClientReply>& reply) {
    if (exchange_->closed()) return;  // the client went away: the stream ends here
    Status status = reply.ok() ? protocol::FromProto(reply->error()) : reply.status();
    if (!status.ok()) {
      if (!started_) return exchange_->Respond(RestErrorResponse(status));
      const HttpResponse error = RestErrorResponse(status);
      exchange_->Write("event: error\ndata: " + error.body + "\n\n");
      return exchange_->Close();
    }
    if (!started_) {
      started_ = true;
      exchange_->BeginStream(200, "text/event-stream", {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}});
      exchange_->Write("retry: 2000\n\n");
    }
    const pb::WatchJobReply& watch = reply->watch();
    const std::string before = Id();  // the job event leads the chunk: a client resuming from it misses nothing
    std::string text;
    for (const auto& event : watch.events()) {
      after_event_ = std::max<uint64_t>(after_event_, event.seq());
      text += fmt::format("event: event\nid: {}\ndata: {}\n\n", Id(), Json(event));
    }
    for (const auto& metric : watch.metrics()) {
      after_metric_ = std::max<uint64_t>(after_metric_, metric.step());
      text += fmt::format("event: metric\nid: {}\ndata: {}\n\n", Id(), Json(metric));
    }
    if (std::string job = Json(watch.job()); job != last_job_) {
      text = fmt::format("event: job\nid: {}\ndata: {}\n\n", before, job) + text;
      last_job_ = std::move(job);
    }
    if (text.empty()) text = ": heartbeat\n\n";
    exchange_->Write(std::move(text));
    if (protocol::IsTerminal(watch.job().state())) {  // it never moves again: nothing more will come
      exchange_->Write(
          fmt::format("event: end\ndata: {{\"state\":\"{}\"}}\n\n", pb::JobState_Name(watch.job().state())));
      return exchange_->Close();
    }
    Poll(heartbeat_);
  }

  RestGateway* gateway_;
  std::shared_ptr<RestStreams::Counts> counts_;
  std::shared_ptr<HttpExchange> exchange_;
  std::string token_;
  std::string job_id_;
  std::chrono::milliseconds heartbeat_;
  uint64_t after_event_ = 0;
  uint64_t after_metric_ = 0;
  bool started_ = false;
  std::string last_job_;
};

}  // namespace

RestStreams::RestStreams(RestGateway* gateway, RestStreamOptions options)
    : gateway_(gateway), options_(options), counts_(std::make_shared<Counts>()) {}
RestStreams::~RestStreams() = default;

void RestStreams::Open(std::shared_ptr<HttpExchange> exchange, const std::string& token, const std::string& job_id) {
  {
    std::lock_guard<std::mutex> lock(counts_->mu);
    if (counts_->total >= options_.max_streams) {
      return exchange->Respond(RestErrorResponse(ResourceExhaustedError(
          fmt::format("the coordinator already serves {} event streams, the limit (http_max_streams); retry later",
                      counts_->total))));
    }
    auto it = counts_->per_token.find(token);
    if (it != counts_->per_token.end() && it->second >= options_.max_streams_per_token) {
      return exchange->Respond(RestErrorResponse(ResourceExhaustedError(
          fmt::format("this token already has {} event streams open, the limit (http_max_streams_per_token); close one",
                      it->second))));
    }
    ++counts_->total;
    ++counts_->per_token[token];
  }
  auto stream = std::make_shared<Stream>(gateway_, counts_, std::move(exchange), token, job_id, options_.heartbeat);
  stream->Poll(std::chrono::milliseconds(0));
}

size_t RestStreams::open() const {
  std::lock_guard<std::mutex> lock(counts_->mu);
  return counts_->total;
}

}  // namespace anneal::coordinator
