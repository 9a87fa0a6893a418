// AuditLog: every mutating client request (who, team, what, target, result, time), kept in the state store.
//
// A record is written into the same WriteBatch as the change it describes, so it is durable exactly when the
// change is (group commit); a refused request is recorded too (result = the error code, message = its text).
// Records are numbered by a persisted counter and keyed big-endian, so a scan reads them in order. The log keeps
// the newest `max_records`: each append past that deletes the oldest record.
//
// Contract:
//   Recover   loads the counter and the oldest kept seq. Call once, before anything else.
//   Append    numbers and puts a record into the batch (time from the clock).
//   Read      newest records before `before_seq` (0: from the newest), at most `limit`, filtered by user and
//             team when those are non-empty; returned oldest first.
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch, the store and the clock.
//
// Example:
//   audit.Append({.user = who.user, .team = "nlp", .operation = "cancel", .target = job_id}, status);
//   ASSIGN_OR_RETURN(auto records, audit.Read(0, 50, "", "nlp"));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/clock.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

struct AuditEntry {
  std::string user{};  // "" for an unauthenticated request
  std::string team{};
  std::string operation{};  // "submit", "cancel", "drain", "token.create", ...
  std::string target{};
  std::string message{};  // what was done (the error text replaces it on failure)
};

class AuditLog {
 public:
  AuditLog(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock, uint64_t max_records);

  Status Recover();
  void Append(const AuditEntry& entry, const Status& result);
  StatusOr<std::vector<pb::AuditRecord>> Read(uint64_t before_seq, uint32_t limit, const std::string& user,
                                              const std::string& team) const;
  uint64_t next_seq() const { return next_seq_; }

 private:
  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  const Clock* clock_;
  uint64_t max_records_;
  uint64_t next_seq_ = 1;
  uint64_t first_seq_ = 1;  // the oldest record still kept
};

}  // namespace anneal::coordinator
