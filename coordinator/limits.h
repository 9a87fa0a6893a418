// Limits: the sizes and counts the coordinator accepts from one peer, so no client or agent can make it store
// a huge value or hold unbounded state. Each is a named setting (coordinator/config.h) with a default; a request
// over a limit is refused with RESOURCE_EXHAUSTED (a count) or INVALID_ARGUMENT (a size), the message naming the
// field, its size and the limit, and the coordinator goes on serving.
//
//   max_spec_bytes            SubmitJob's spec_yaml, and its overrides together           (1 MiB)
//   max_name_bytes            every name and id a request carries: job name (the request's or the spec's
//                             scheduling.name), job ids, node ids, label keys and values    (256 bytes)
//                             model registry: team, model name, job id; a promote/archive reason may
//                             be 4 x max_name_bytes
//   max_watchers_per_peer     WatchJob long polls one connection may have waiting           (16)
//   max_watchers_total        ... all connections together                                 (4096)
//   max_log_fetches_per_peer  GetLogs waiting for an agent, per connection                 (8)
// The frame size itself (ZMQ_MAXMSGSIZE, max_message_bytes) is enforced by ZeroMQ in coordinator/server.cc: an
// oversized frame closes that peer's connection before it is buffered.
//
// Thread-safety: pure functions of their arguments.
//
// Example:
//   if (Status st = CheckClientRequestLimits(request, limits); !st.ok()) ReplyError(peer, id, st);
#pragma once

#include <cstddef>
#include <string_view>

#include "common/status.h"
#include "protocol/anneal.pb.h"

namespace anneal::coordinator {

struct Limits {
  size_t max_spec_bytes = 1 << 20;
  size_t max_name_bytes = 256;
  size_t max_watchers_per_peer = 16;
  size_t max_watchers_total = 4096;
  size_t max_log_fetches_per_peer = 8;
};

// A name or id (`field`, e.g. "submit.name") of at most max_name_bytes; INVALID_ARGUMENT naming it otherwise.
Status CheckNameLength(std::string_view field, std::string_view value, const Limits& limits);
// The sizes of one client request: spec and overrides, names and ids of every body.
Status CheckClientRequestLimits(const pb::ClientRequest& request, const Limits& limits);
// The names of an agent's RegisterRequest / Heartbeat (node id, hostname, address, labels).
Status CheckAgentMessageLimits(const pb::AgentToCoordinator& message, const Limits& limits);

}  // namespace anneal::coordinator
