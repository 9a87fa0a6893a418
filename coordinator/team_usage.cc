#include "coordinator/team_usage.h"

#include "coordinator/usage.h"

namespace anneal::coordinator {

using storage::Table;

TeamUsage::TeamUsage(storage::WriteBatch* batch, const storage::StateStore* store, int64_t half_life_ms)
    : batch_(batch), store_(store), half_life_ms_(half_life_ms) {}

Status TeamUsage::Recover(int64_t now_ms) {
  usage_.clear();
  RETURN_IF_ERROR(store_->ScanRecords<pb::TeamUsageRecord>(Table::kUsage, "", [&](const pb::TeamUsageRecord& row) {
    usage_[row.team()] = row;
    return true;
  }));
  // Rows were written at different times: bring each to `now` (the time the coordinator was down decays too,
  // and nothing was held while it was down that it could account).
  for (auto& [team, row] : usage_) {
    row.set_decayed_slot_seconds(
        AccrueUsage(row.decayed_slot_seconds(), 0, now_ms - row.updated_at_ms(), half_life_ms_));
    row.set_updated_at_ms(now_ms);
  }
  last_accrue_ms_ = now_ms;
  last_persist_ms_ = now_ms;
  return Status::Ok();
}

void TeamUsage::Accrue(const std::map<std::string, uint32_t>& slots_held, int64_t now_ms) {
  const int64_t elapsed = last_accrue_ms_ == 0 ? 0 : now_ms - last_accrue_ms_;
  if (elapsed <= 0) {
    if (last_accrue_ms_ == 0) last_accrue_ms_ = now_ms;
    return;
  }
  for (const auto& [team, slots] : slots_held) {
    if (slots > 0 && !usage_.contains(team)) usage_[team].set_team(team);
  }
  for (auto& [team, row] : usage_) {
    auto held = slots_held.find(team);
    const double slots = held == slots_held.end() ? 0.0 : static_cast<double>(held->second);
    row.set_decayed_slot_seconds(AccrueUsage(row.decayed_slot_seconds(), slots, elapsed, half_life_ms_));
    row.set_updated_at_ms(now_ms);
    dirty_.insert(team);
  }
  last_accrue_ms_ = now_ms;
}

void TeamUsage::Persist(int64_t now_ms, int64_t persist_interval_ms, bool force) {
  if (dirty_.empty()) return;
  if (!force && now_ms - last_persist_ms_ < persist_interval_ms) return;
  for (const auto& team : dirty_) {
    if (auto it = usage_.find(team); it != usage_.end()) batch_->Put(Table::kUsage, team, it->second);
  }
  dirty_.clear();
  last_persist_ms_ = now_ms;
}

void TeamUsage::Forget(const std::string& team) {
  usage_.erase(team);
  dirty_.erase(team);
  batch_->Delete(Table::kUsage, team);
}

double TeamUsage::Of(const std::string& team) const {
  auto it = usage_.find(team);
  return it == usage_.end() ? 0.0 : it->second.decayed_slot_seconds();
}

}  // namespace anneal::coordinator
