// A real StateStore in a fresh temp directory with a FakeClock and one WriteBatch: what the coordinator's
// managers (JobTable, NodeRegistry, CheckpointRegistry) borrow, for their unit tests. Commit() plays Flush's
// commit; Reopen() simulates a restart (only what was committed survives).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "coordinator/clock.h"
#include "storage/state_store.h"

namespace anneal::coordinator::testing {

class TempStore {
 public:
  TempStore() {
    std::random_device rd;
    dir_ = std::filesystem::temp_directory_path() /
           ("anneal-coord-store-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
    Reopen();
  }
  ~TempStore() {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    batch_.Clear();
    auto store = storage::StateStore::Open(dir_.string(), {.create_if_missing = true, .sync_writes = false});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void Commit() {
    ASSERT_TRUE(store_->Commit(batch_).ok());
    batch_.Clear();
  }
  storage::StateStore* store() { return store_.get(); }
  storage::WriteBatch* batch() { return &batch_; }
  FakeClock* clock() { return &clock_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<storage::StateStore> store_;
  storage::WriteBatch batch_;
  FakeClock clock_;
};

}  // namespace anneal::coordinator::testing
