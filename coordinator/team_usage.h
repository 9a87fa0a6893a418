// TeamUsage: each team's fair-share usage (decayed slot-seconds, coordinator/usage.h), kept in memory by the
// coordinator's loop and written to the usage table (key: team name, value: TeamUsageRecord).
//
// Contract per method:
//   Recover   loads every stored row; a row that does not parse is DATA_LOSS naming the key (the coordinator
//             refuses to start rather than reset a team's standing silently).
//   Accrue    decays every team's usage to `now_ms` and adds the slots each team held since the last Accrue
//             (the caller passes what was held over that interval: the holdings change only between calls).
//             A clock that steps back is treated as no time passing.
//   Persist   writes the rows changed since the last Persist into the borrowed batch, at most once per
//             `persist_interval_ms` unless `force`; a crash loses at most that much accrual, never a team.
//   Forget    drops a deleted team's row.
//   Of        the team's usage as of the last Accrue (0 for a team never seen).
//
// Thread-safety: none; the coordinator's loop owns it.
// Ownership: borrows the batch and the store; both must outlive it.
//
// Example:
//   TeamUsage usage(&batch, store, half_life_ms);
//   RETURN_IF_ERROR(usage.Recover(now));
//   usage.Accrue(SlotsHeldByTeam(), now);
//   usage.Persist(now, 60000);
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "common/status.h"
#include "protocol/anneal.pb.h"
#include "storage/state_store.h"

namespace anneal::coordinator {

class TeamUsage {
 public:
  TeamUsage(storage::WriteBatch* batch, const storage::StateStore* store, int64_t half_life_ms);

  Status Recover(int64_t now_ms);
  void Accrue(const std::map<std::string, uint32_t>& slots_held, int64_t now_ms);
  void Persist(int64_t now_ms, int64_t persist_interval_ms, bool force = false);
  void Forget(const std::string& team);
  double Of(const std::string& team) const;
  const std::map<std::string, pb::TeamUsageRecord>& all() const { return usage_; }

 private:
  storage::WriteBatch* batch_;
  const storage::StateStore* store_;
  int64_t half_life_ms_;
  int64_t last_accrue_ms_ = 0;
  int64_t last_persist_ms_ = 0;
  std::map<std::string, pb::TeamUsageRecord> usage_;
  std::set<std::string> dirty_;
};

}  // namespace anneal::coordinator
