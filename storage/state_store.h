// StateStore: the coordinator's durable state, typed tables over RocksDB column families.
//
// Tables (column families, docs/coordinator.md "Storage"): jobs (job id -> pb::JobRecord), events ((job, seq) ->
// pb::JobEvent), metrics ((job, step) -> pb::MetricPoint), checkpoints ((job, step) -> pb::CheckpointRecord),
// nodes (node id -> pb::NodeRecord), meta (name -> raw bytes: schema version, counters, indexes).
// Composite keys come from storage/keys.h (big-endian numbers, so scans return them in numeric order).
//
// Durability: every change goes through a WriteBatch committed with sync=true (one fsync'd WAL write): a
// state transition and its event are one batch, so a crash leaves either both or neither.
// Schema: the meta key "schema_version" holds kSchemaVersion (4 bytes big-endian). A fresh directory is stamped;
// a directory of another version is refused with FAILED_PRECONDITION naming both versions.
// Open errors are named: locked by another process (UNAVAILABLE), corrupt (DATA_LOSS), no permission
// (PERMISSION_DENIED), each with the directory.
//
// Thread-safety: RocksDB is thread-safe, but the coordinator uses a store from its single event loop only.
// Ownership: the StateStore owns the DB handle; Open returns it in a unique_ptr; closing releases the lock.
//
// Example:
//   ASSIGN_OR_RETURN(auto store, anneal::storage::StateStore::Open("/var/lib/anneal"));
//   anneal::storage::WriteBatch batch;
//   batch.Put(Table::kJobs, job.job_id(), job);
//   batch.Put(Table::kEvents, JobStepKey(job.job_id(), event.seq()), event);
//   RETURN_IF_ERROR(store->Commit(batch));
//   pb::JobRecord back;
//   RETURN_IF_ERROR(store->Get(Table::kJobs, job.job_id(), &back));
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace google::protobuf {
class Message;
}
namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace anneal::storage {

inline constexpr uint32_t kSchemaVersion = 1;

// Append new tables at the end only (the enum value indexes the column-family handles).
enum class Table {
  kJobs,
  kEvents,
  kMetrics,
  kCheckpoints,
  kNodes,
  kMeta,
  kUsers,
  kTeams,
  kTokens,
  kAudit,
  kUsage,
  kPipelines,  // pipeline runs (coordinator/pipelines.h)
  kSchedules,  // schedules and their fire bookkeeping (coordinator/schedules.h)
  kModels,     // the model registry: models and versions (coordinator/model_registry.h)
};
inline constexpr int kTableCount = 14;
std::string_view TableName(Table table);  // the column family name: "jobs", "events", ...

// A set of puts and deletes applied atomically by StateStore::Commit.
class WriteBatch {
 public:
  WriteBatch();
  ~WriteBatch();
  WriteBatch(WriteBatch&&) noexcept;
  WriteBatch& operator=(WriteBatch&&) noexcept;

  void Put(Table table, std::string_view key, const google::protobuf::Message& value);
  void PutRaw(Table table, std::string_view key, std::string_view value);
  void PutU64(Table table, std::string_view key, uint64_t value);  // big-endian
  void Delete(Table table, std::string_view key);

  size_t count() const { return ops_.size(); }
  bool empty() const { return ops_.empty(); }
  void Clear() { ops_.clear(); }

 private:
  friend class StateStore;
  struct Op {
    Table table;
    std::string key;
    std::optional<std::string> value;  // nullopt: delete
  };
  std::vector<Op> ops_;
};

struct OpenOptions {
  bool create_if_missing = true;
  bool sync_writes = true;  // false only for benchmarks that measure the fsync cost
};

class StateStore {
 public:
  static StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir, OpenOptions options = {});
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::string& dir() const { return dir_; }

  // Applies the batch atomically (sync=true unless OpenOptions said otherwise).
  Status Commit(const WriteBatch& batch);

  // NOT_FOUND when absent; DATA_LOSS when the stored bytes do not parse.
  Status Get(Table table, std::string_view key, google::protobuf::Message* out) const;
  StatusOr<std::optional<std::string>> GetRaw(Table table, std::string_view key) const;
  StatusOr<std::optional<uint64_t>> GetU64(Table table, std::string_view key) const;

  // Visits keys that start with `prefix`, in key order, from `start` (>= prefix; empty: from the prefix).
  // The visitor returns false to stop. Errors: the iterator's status, naming the table.
  using Visitor = std::function<bool(std::string_view key, std::string_view value)>;
  Status Scan(Table table, std::string_view prefix, const Visitor& visit, std::string_view start = {}) const;
  // Visits keys that start with `prefix` from the last one backwards (newest first for numbered keys).
  Status ScanReverse(Table table, std::string_view prefix, const Visitor& visit) const;
  // The last key with `prefix` (nullopt when none).
  StatusOr<std::optional<std::string>> LastKeyWithPrefix(Table table, std::string_view prefix) const;

  // Writes a consistent point-in-time copy of every table to `out_dir` (rocksdb::Checkpoint: hard links on the
  // same filesystem, copies elsewhere): it holds every batch committed before the call and none half.
  // `out_dir` must not exist (ALREADY_EXISTS naming it); its parent must. Unlike the other methods this one may
  // run on any thread while the owner commits (coordinator/backup.h takes backups of a serving coordinator).
  // Returns the sequence number the copy reflects. Opening `out_dir` as a state directory gives that state.
  StatusOr<uint64_t> Checkpoint(const std::string& out_dir) const;

  // Typed scan: parses each value into T (DATA_LOSS naming the key on a bad value).
  template <typename T>
  Status ScanRecords(Table table, std::string_view prefix, const std::function<bool(const T&)>& visit,
                     std::string_view start = {}) const {
    Status parse_error;
    RETURN_IF_ERROR(Scan(
        table, prefix,
        [&](std::string_view key, std::string_view value) {
          T record;
          if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
            parse_error = CorruptValue(table, key);
            return false;
          }
          return visit(record);
        },
        start));
    return parse_error;
  }
  template <typename T>
  Status ScanRecordsReverse(Table table, std::string_view prefix, const std::function<bool(const T&)>& visit) const {
    Status parse_error;
    RETURN_IF_ERROR(ScanReverse(table, prefix, [&](std::string_view key, std::string_view value) {
      T record;
      if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        parse_error = CorruptValue(table, key);
        return false;
      }
      return visit(record);
    }));
    return parse_error;
  }

 private:
  StateStore() = default;
  Status CheckSchema();
  static Status CorruptValue(Table table, std::string_view key);
  rocksdb::ColumnFamilyHandle* Handle(Table table) const;

  std::string dir_;
  bool sync_writes_ = true;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // index = Table
};

}  // namespace anneal::storage
