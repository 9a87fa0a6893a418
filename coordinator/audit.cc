#include "coordinator/audit.h"

#include <deque>

#include "storage/keys.h"

namespace anneal::coordinator {

using storage::Table;

namespace {

constexpr std::string_view kNextAuditKey = "counter/next_audit";

std::string AuditKey(uint64_t seq) {
  std::string key;
  storage::AppendBigEndian64(&key, seq);
  return key;
}

// Keeps audit text bounded whatever a request carried (a job name, a spec error).
std::string Bounded(const std::string& text, size_t limit = 512) {
  return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

}  // namespace

AuditLog::AuditLog(storage::WriteBatch* batch, const storage::StateStore* store, const Clock* clock,
                   uint64_t max_records)
    : batch_(batch), store_(store), clock_(clock), max_records_(max_records == 0 ? 1 : max_records) {}

Status AuditLog::Recover() {
  ASSIGN_OR_RETURN(auto next, store_->GetU64(Table::kMeta, kNextAuditKey));
  next_seq_ = next.value_or(1);
  first_seq_ = next_seq_;
  RETURN_IF_ERROR(store_->Scan(Table::kAudit, "", [&](std::string_view key, std::string_view) {
    if (auto seq = storage::ReadBigEndian64(key)) first_seq_ = *seq;
    return false;  // the first key is the oldest
  }));
  return Status::Ok();
}

void AuditLog::Append(const AuditEntry& entry, const Status& result) {
  pb::AuditRecord record;
  record.set_seq(next_seq_);
  record.set_time_ms(clock_->NowMs());
  record.set_user(Bounded(entry.user, 128));
  record.set_team(Bounded(entry.team, 128));
  record.set_operation(entry.operation);
  record.set_target(Bounded(entry.target, 256));
  record.set_result(static_cast<pb::ErrorCode>(result.code()));
  record.set_message(Bounded(result.ok() ? entry.message : result.message()));
  batch_->Put(Table::kAudit, AuditKey(next_seq_), record);
  ++next_seq_;
  batch_->PutU64(Table::kMeta, kNextAuditKey, next_seq_);
  while (next_seq_ - first_seq_ > max_records_) batch_->Delete(Table::kAudit, AuditKey(first_seq_++));
}

StatusOr<std::vector<pb::AuditRecord>> AuditLog::Read(uint64_t before_seq, uint32_t limit, const std::string& user,
                                                      const std::string& team) const {
  std::deque<pb::AuditRecord> newest;
  const size_t wanted = limit == 0 ? 100 : limit;
  RETURN_IF_ERROR(store_->ScanRecordsReverse<pb::AuditRecord>(Table::kAudit, "", [&](const pb::AuditRecord& r) {
    if (before_seq != 0 && r.seq() >= before_seq) return true;
    if ((!user.empty() && r.user() != user) || (!team.empty() && r.team() != team)) return true;
    newest.push_front(r);
    return newest.size() < wanted;
  }));
  return std::vector<pb::AuditRecord>(newest.begin(), newest.end());
}

}  // namespace anneal::coordinator
