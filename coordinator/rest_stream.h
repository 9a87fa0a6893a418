// RestStreams: GET /api/v1/jobs/{id}/stream, a job's live updates as server-sent events, built on WatchJob long
// polls through the RestGateway (so a stream reads exactly what the token may read).
//
// The stream (Content-Type: text/event-stream):
//   retry: 2000                                   (reconnect delay for EventSource)
//   event: job      id: <E>:<M>   data: <JobRecord JSON>     when the job record changed (first: always)
//   event: event    id: <E>:<M>   data: <JobEvent JSON>      each new event (E = its seq)
//   event: metric   id: <E>:<M>   data: <MetricPoint JSON>   each new metric point (M = its step)
//   : heartbeat                                   (an SSE comment) when a long poll ended with nothing new
//   event: end      data: {"state": "JOB_SUCCEEDED"}  the job is terminal (after its last events); then closed
//   event: error    data: {"error": {code, message}}   a later poll failed; then closed
// A client resumes with Last-Event-ID: <E>:<M> (EventSource sends the last id it saw): only events with a larger
// seq and metrics with a larger step follow. The first poll is answered before the stream starts, so an unknown
// job, a bad token or a job the token may not read is a plain JSON error (404/401/403), not a stream.
// Limits: max_streams open streams in all and max_streams_per_token per bearer token; one more is answered 429
// RESOURCE_EXHAUSTED naming the limit (http_max_streams / http_max_streams_per_token). A client that went away is
// noticed at the next write (at most one heartbeat later) and its stream ends.
//
// Thread-safety: Open() from the HTTP thread; the streams then run on the gateway's thread. open() from any.
// Ownership: borrows the gateway, which must outlive the streams' polls (stop the gateway first: it answers
// the polls in flight, which ends their streams).
//
// Example:
//   RestStreams streams(&gateway, {.max_streams = 64, .max_streams_per_token = 4});
//   streams.Open(exchange, token, "j-12");
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/http_server.h"
#include "coordinator/rest_gateway.h"

namespace anneal::coordinator {

struct RestStreamOptions {
  size_t max_streams = 64;
  size_t max_streams_per_token = 4;
  std::chrono::milliseconds heartbeat{15000};  // each long poll's wait: a heartbeat at least this often
};

class RestStreams {
 public:
  RestStreams(RestGateway* gateway, RestStreamOptions options);
  ~RestStreams();
  void Open(std::shared_ptr<HttpExchange> exchange, const std::string& token, const std::string& job_id);
  size_t open() const;

  struct Counts;

 private:
  RestGateway* gateway_;
  RestStreamOptions options_;
  std::shared_ptr<Counts> counts_;
};

}  // namespace anneal::coordinator
