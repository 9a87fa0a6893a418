// Fuzz target: the coordinator's HTTP request handling (coordinator/http.cc, coordinator/http_router.h). Input:
// raw bytes as a client sends them. They go through Beast's request parser with the server's limits (16 KiB of
// header, 16 KiB of body), and a parsed request through RouteHttpRequest with a token-checking authenticator.
// Invariants: no crash or hang; every answer has a status the server sends; only the right bearer token (or
// /metrics when public) gets a 200; a 200 body is one of the snapshot's bodies.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <string>

#include "bench/fuzz/fuzz_support.h"
#include "coordinator/http_router.h"

using anneal::fuzz::FuzzCheck;
namespace http = boost::beast::http;

namespace {

constexpr std::string_view kToken = "ant_0123456789ab_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

anneal::coordinator::HttpResponse Route(const http::request<http::string_body>& request, bool public_metrics) {
  anneal::coordinator::HttpSnapshot snapshot;
  snapshot.metrics = "anneal_queue_length 0\n";
  snapshot.jobs = "{\"jobs\":[]}";
  snapshot.nodes = "{\"nodes\":[]}";
  anneal::coordinator::HttpRouteOptions options;
  options.public_metrics = public_metrics;
  options.authenticate = [](std::string_view token) {
    return token == kToken ? anneal::Status::Ok() : anneal::UnauthenticatedError("unknown token");
  };
  auto response =
      anneal::coordinator::RouteHttpRequest({std::string(request.method_string()), std::string(request.target()),
                                             std::string(request[http::field::authorization])},
                                            snapshot, options);
  const int s = response.status;
  FuzzCheck(s == 200 || s == 401 || s == 403 || s == 404 || s == 405, "the router answers a known status");
  if (s == 200) {
    FuzzCheck(!response.body.empty(), "a 200 carries a body");
    const bool authorized = request[http::field::authorization] == "Bearer " + std::string(kToken);
    const bool public_route = public_metrics && request.target().starts_with("/metrics");
    FuzzCheck(authorized || public_route, "only the right token, or public /metrics, gets a 200");
  }
  return response;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool public_metrics = (data[0] & 1) != 0;
  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(16 * 1024);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t offset = 1;
  // Fed in the pieces a socket may deliver, until the parser is done or wants more than there is.
  while (offset < size && !parser.is_done()) {
    const size_t used = parser.put(boost::asio::buffer(data + offset, size - offset), ec);
    if (ec == http::error::need_more) break;
    if (ec) return 0;  // a malformed or oversized request: the server answers 400/413/431 and closes
    if (used == 0) break;
    offset += used;
  }
  if (parser.is_header_done()) Route(parser.get(), public_metrics);
  return 0;
}
