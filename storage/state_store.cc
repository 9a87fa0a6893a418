#include "storage/state_store.h"

#include <fmt/format.h>
#include <google/protobuf/message.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>
#include <unistd.h>

#include <filesystem>

#include "storage/keys.h"

namespace anneal::storage {
namespace {

constexpr std::string_view kTableNames[kTableCount] = {"jobs",  "events",    "metrics",   "checkpoints", "nodes",
                                                       "meta",  "users",     "teams",     "tokens",      "audit",
                                                       "usage", "pipelines", "schedules", "models"};
constexpr std::string_view kSchemaKey = "schema_version";

// Names the cause of a failed open: another process holds the lock, the files are corrupt, or the directory
// is not ours to write.
Status OpenError(const std::string& dir, const rocksdb::Status& s) {
  const std::string text = s.ToString();
  if (s.IsIOError() &&
      (text.find("lock") != std::string::npos || text.find("Resource temporarily") != std::string::npos)) {
    return UnavailableError(
        fmt::format("state directory {} is locked by another process (is another anneal-coordinator running with this "
                    "--state-dir?): {}",
                    dir, text));
  }
  if (text.find("Permission denied") != std::string::npos) {
    return PermissionDeniedError(fmt::format("state directory {}: no permission: {}", dir, text));
  }
  if (s.IsCorruption()) {
    return DataLossError(fmt::format(
        "state directory {} is corrupt ({}); restore it from a backup or move it aside to start empty", dir, text));
  }
  return InternalError(fmt::format("cannot open state directory {}: {}", dir, text));
}

}  // namespace

std::string_view TableName(Table table) {
  return kTableNames[static_cast<int>(table)];
}

// ---- WriteBatch ---------------------------------------------------------------------------------------------

WriteBatch::WriteBatch() = default;
WriteBatch::~WriteBatch() = default;
WriteBatch::WriteBatch(WriteBatch&&) noexcept = default;
WriteBatch& WriteBatch::operator=(WriteBatch&&) noexcept = default;

void WriteBatch::Put(Table table, std::string_view key, const google::protobuf::Message& value) {
  ops_.push_back({table, std::string(key), value.SerializeAsString()});
}
void WriteBatch::PutRaw(Table table, std::string_view key, std::string_view value) {
  ops_.push_back({table, std::string(key), std::string(value)});
}
void WriteBatch::PutU64(Table table, std::string_view key, uint64_t value) {
  std::string bytes;
  AppendBigEndian64(&bytes, value);
  ops_.push_back({table, std::string(key), std::move(bytes)});
}
void WriteBatch::Delete(Table table, std::string_view key) {
  ops_.push_back({table, std::string(key), std::nullopt});
}

// ---- StateStore ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& dir, OpenOptions options) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(dir, ec);
  if (existed && !std::filesystem::is_directory(dir, ec)) {
    return InvalidArgumentError(fmt::format("state directory {} exists and is not a directory", dir));
  }
  if (!existed) {
    if (!options.create_if_missing) return NotFoundError(fmt::format("state directory {} does not exist", dir));
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      if (ec == std::errc::permission_denied) {
        return PermissionDeniedError(fmt::format("cannot create state directory {}: {}", dir, ec.message()));
      }
      return InternalError(fmt::format("cannot create state directory {}: {}", dir, ec.message()));
    }
  } else if (access(dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return PermissionDeniedError(
        fmt::format("state directory {}: no permission to read and write it (check its owner and mode)", dir));
  }

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 5;
  // Bounds the write-ahead log replayed at startup (after kill -9): past this size, the column families holding
  // the oldest log are flushed, so recovery replays tens of MB at most, whatever the history.
  db_options.max_total_wal_size = 32ull << 20;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  rocksdb::ColumnFamilyOptions family_options;
  family_options.write_buffer_size = 16ull << 20;
  for (std::string_view name : kTableNames) families.emplace_back(std::string(name), family_options);
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &handles, &raw);
  if (!s.ok()) return OpenError(dir, s);

  std::unique_ptr<StateStore> store(new StateStore());
  store->dir_ = dir;
  store->sync_writes_ = options.sync_writes;
  store->db_.reset(raw);
  // handles[0] is the default family (unused); keep it to destroy it on close.
  store->handles_ = std::move(handles);
  RETURN_IF_ERROR(store->CheckSchema());
  return store;
}

StateStore::~StateStore() {
  if (!db_) return;
  // A clean close flushes the memtables, so the next start replays no log.
  rocksdb::FlushOptions flush;
  db_->Flush(flush, std::vector<rocksdb::ColumnFamilyHandle*>(handles_.begin() + 1, handles_.end()))
      .PermitUncheckedError();
  for (auto* handle : handles_) db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  db_->Close().PermitUncheckedError();
}

rocksdb::ColumnFamilyHandle* StateStore::Handle(Table table) const {
  return handles_[static_cast<size_t>(table) + 1];
}

Status StateStore::CheckSchema() {
  ASSIGN_OR_RETURN(auto stored, GetU64(Table::kMeta, kSchemaKey));
  if (!stored) {
    std::string bytes;
    AppendBigEndian64(&bytes, kSchemaVersion);
    WriteBatch stamp;
    stamp.PutRaw(Table::kMeta, kSchemaKey, bytes);
    return Commit(stamp);
  }
  if (*stored != kSchemaVersion) {
    return FailedPreconditionError(fmt::format(
        "state directory {} has schema version {}, this build of anneal-coordinator reads schema version {}; "
        "run the matching version (no automatic migration exists)",
        dir_, *stored, kSchemaVersion));
  }
  return Status::Ok();
}

Status StateStore::Commit(const WriteBatch& batch) {
  if (batch.empty()) return Status::Ok();
  rocksdb::WriteBatch rb;
  for (const auto& op : batch.ops_) {
    rocksdb::Status s = op.value ? rb.Put(Handle(op.table), op.key, *op.value) : rb.Delete(Handle(op.table), op.key);
    if (!s.ok())
      return InternalError(fmt::format("building a write batch for table {}: {}", TableName(op.table), s.ToString()));
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync_writes_;
  rocksdb::Status s = db_->Write(wo, &rb);
  if (!s.ok()) {
    return InternalError(fmt::format("writing {} changes to {}: {}", batch.count(), dir_, s.ToString()));
  }
  return Status::Ok();
}

StatusOr<std::optional<std::string>> StateStore::GetRaw(Table table, std::string_view key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), Handle(table), rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return InternalError(fmt::format("reading table {} of {}: {}", TableName(table), dir_, s.ToString()));
  return std::optional<std::string>(std::move(value));
}

StatusOr<std::optional<uint64_t>> StateStore::GetU64(Table table, std::string_view key) const {
  ASSIGN_OR_RETURN(auto raw, GetRaw(table, key));
  if (!raw) return std::optional<uint64_t>();
  auto value = ReadBigEndian64(*raw);
  if (!value) return CorruptValue(table, key);
  return std::optional<uint64_t>(*value);
}

Status StateStore::Get(Table table, std::string_view key, google::protobuf::Message* out) const {
  ASSIGN_OR_RETURN(auto raw, GetRaw(table, key));
  if (!raw) return NotFoundError(fmt::format("no record '{}' in table {}", key, TableName(table)));
  if (!out->ParseFromString(*raw)) return CorruptValue(table, key);
  return Status::Ok();
}

Status StateStore::Scan(Table table, std::string_view prefix, const Visitor& visit, std::string_view start) const {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, Handle(table)));
  std::string_view from = start.empty() ? prefix : start;
  for (it->Seek(rocksdb::Slice(from.data(), from.size())); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!visit(key, std::string_view(it->value().data(), it->value().size()))) break;
  }
  if (!it->status().ok()) {
    return InternalError(fmt::format("scanning table {} of {}: {}", TableName(table), dir_, it->status().ToString()));
  }
  return Status::Ok();
}

Status StateStore::ScanReverse(Table table, std::string_view prefix, const Visitor& visit) const {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, Handle(table)));
  if (prefix.empty()) {
    it->SeekToLast();
  } else {
    std::string upper(prefix);
    upper.append(16, '\xff');  // past every key with the prefix (ids and 8-byte numbers)
    it->SeekForPrev(upper);
  }
  for (; it->Valid(); it->Prev()) {
    std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    if (!visit(key, std::string_view(it->value().data(), it->value().size()))) break;
  }
  if (!it->status().ok()) {
    return InternalError(fmt::format("scanning table {} of {}: {}", TableName(table), dir_, it->status().ToString()));
  }
  return Status::Ok();
}

StatusOr<std::optional<std::string>> StateStore::LastKeyWithPrefix(Table table, std::string_view prefix) const {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, Handle(table)));
  // The smallest key greater than every key with the prefix: the prefix followed by 0xff bytes is enough here
  // because our composite keys end in 8 number bytes.
  std::string upper(prefix);
  upper.append(16, '\xff');
  it->SeekForPrev(upper);
  if (!it->status().ok()) {
    return InternalError(fmt::format("scanning table {} of {}: {}", TableName(table), dir_, it->status().ToString()));
  }
  if (!it->Valid()) return std::optional<std::string>();
  std::string key = it->key().ToString();
  if (key.compare(0, prefix.size(), prefix) != 0) return std::optional<std::string>();
  return std::optional<std::string>(std::move(key));
}

Status StateStore::CorruptValue(Table table, std::string_view key) {
  return DataLossError(
      fmt::format("table {}: the value of key '{}' is not a valid record (corrupt state?)", TableName(table), key));
}

// ---- Checkpoint (backups) -------------------------------------------------------------------------------------

StatusOr<uint64_t> StateStore::Checkpoint(const std::string& out_dir) const {
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(out_dir, ec))) {
    return AlreadyExistsError(fmt::format("checkpoint of {}: {} already exists", dir_, out_dir));
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return InternalError(fmt::format("checkpoint of {}: {}", dir_, s.ToString()));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  uint64_t sequence = 0;
  // log_size_for_flush 0: the memtables are flushed first, so the copy needs no write-ahead log replay.
  s = checkpoint->CreateCheckpoint(out_dir, /*log_size_for_flush=*/0, &sequence);
  if (!s.ok()) return InternalError(fmt::format("checkpoint of {} into {}: {}", dir_, out_dir, s.ToString()));
  return sequence;
}

}  // namespace anneal::storage
