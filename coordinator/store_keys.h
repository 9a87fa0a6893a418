// The coordinator's keys in the meta table (storage/state_store.h): counters and indexes.
//
//   counter/next_job      the next job number (job ids are "job-%06d")
//   counter/next_epoch    the next launch epoch (global, so strictly increasing per job too)
//   active/<job id>       present while the job is not terminal: startup loads only these
//   node_seq/<node id>    the node's last applied report seq (dedup of resent reports, durable)
//   join_token/<id>       a join token (pb::JoinTokenRecord; its secret only as a hash)
//
// Thread-safety: constants and pure functions.
// Example: batch.PutRaw(Table::kMeta, ActiveKey("job-000001"), "");
#pragma once

#include <string>
#include <string_view>

namespace anneal::coordinator {

inline constexpr std::string_view kNextJobKey = "counter/next_job";
inline constexpr std::string_view kNextEpochKey = "counter/next_epoch";
inline constexpr std::string_view kActivePrefix = "active/";
inline std::string ActiveKey(std::string_view job_id) { return std::string(kActivePrefix) + std::string(job_id); }
inline std::string NodeSeqKey(std::string_view node_id) { return "node_seq/" + std::string(node_id); }
inline constexpr std::string_view kJoinTokenPrefix = "join_token/";
inline std::string JoinTokenKey(std::string_view id) { return std::string(kJoinTokenPrefix) + std::string(id); }

}  // namespace anneal::coordinator
