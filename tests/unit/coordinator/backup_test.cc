// Backups (coordinator/backup.h, StateStore::Checkpoint): real RocksDB stores in temp directories, the real
// AF_UNIX admin socket. The process-level tests (a backup under load restoring to a serving coordinator, other
// users refused) are tests/integration/deploy/backup_test.py.
#include "coordinator/backup.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "storage/state_store.h"

namespace anneal::coordinator {
namespace {
namespace fs = std::filesystem;
using storage::StateStore;
using storage::Table;

// The key of batch n in the usage table (snprintf: GCC 12 warns falsely on "n" + std::to_string(n)).
std::string BatchKey(uint64_t n) {
  char key[32];
  std::snprintf(key, sizeof(key), "n%020llu", static_cast<unsigned long long>(n));
  return key;
}

// Short paths: the admin socket's path must fit sun_path (107 bytes).
class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path("/tmp") / ("anb-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()));
    fs::create_directories(root_);
    state_ = (root_ / "state").string();
    Open();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(root_);
  }
  void Open() {
    auto store = StateStore::Open(state_, {.create_if_missing = true, .sync_writes = false});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void Put(uint64_t n) {
    storage::WriteBatch batch;
    batch.PutU64(Table::kMeta, "counter", n);
    batch.PutU64(Table::kUsage, BatchKey(n), n);
    ASSERT_TRUE(store_->Commit(batch).ok());
  }
  static uint64_t Counter(const std::string& dir) {
    auto store = StateStore::Open(dir, {.create_if_missing = false});
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return 0;
    auto value = (*store)->GetU64(Table::kMeta, "counter");
    return value.ok() && *value ? **value : 0;
  }
  std::string Path(const std::string& name) const { return (root_ / name).string(); }

  fs::path root_;
  std::string state_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(BackupTest, CheckpointHoldsWhatWasCommittedAndOpensAsAStateDirectory) {
  for (uint64_t n = 1; n <= 50; ++n) Put(n);
  auto sequence = store_->Checkpoint(Path("cp"));
  ASSERT_TRUE(sequence.ok()) << sequence.status().ToString();
  EXPECT_GT(*sequence, 0u);
  Put(51);  // after the checkpoint: not in it
  EXPECT_EQ(Counter(Path("cp")), 50u);
}

TEST_F(BackupTest, CheckpointIntoAnExistingPathIsRefusedNamingIt) {
  fs::create_directories(Path("there"));
  auto sequence = store_->Checkpoint(Path("there"));
  ASSERT_EQ(sequence.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(sequence.status().message().find(Path("there")), std::string::npos);
}

TEST_F(BackupTest, CheckpointWhileAnotherThreadCommitsIsAConsistentPrefix) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> committed{0};
  std::thread writer([&] {
    for (uint64_t n = 1; !stop; ++n) {
      storage::WriteBatch batch;
      batch.PutU64(Table::kMeta, "counter", n);
      batch.PutU64(Table::kUsage, BatchKey(n), n);
      if (!store_->Commit(batch).ok()) return;
      committed = n;
    }
  });
  while (committed < 100) std::this_thread::yield();
  const uint64_t before = committed;
  auto sequence = store_->Checkpoint(Path("cp"));
  stop = true;
  writer.join();
  ASSERT_TRUE(sequence.ok()) << sequence.status().ToString();
  // The counter and the per-batch keys agree: every batch is in it whole, in order, none half.
  auto copy = StateStore::Open(Path("cp"), {.create_if_missing = false});
  ASSERT_TRUE(copy.ok());
  auto counter = (*copy)->GetU64(Table::kMeta, "counter");
  ASSERT_TRUE(counter.ok() && *counter);
  EXPECT_GE(**counter, before);
  uint64_t keys = 0;
  ASSERT_TRUE((*copy)->Scan(Table::kUsage, "n", [&](std::string_view, std::string_view) { return ++keys, true; }).ok());
  EXPECT_EQ(keys, **counter);
}

TEST_F(BackupTest, WriteBackupCopiesTheKeysWithTheirModesAndAManifest) {
  Put(7);
  std::ofstream(state_ + "/curve.key") << "secret-key\n";
  std::ofstream(state_ + "/curve.pub") << "public-key\n";
  ASSERT_TRUE(WriteBackup(*store_, state_, Path("b")).ok());
  struct stat st {};
  ASSERT_EQ(stat(Path("b/curve.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(Path("b/curve.pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  std::ifstream manifest(Path("b/BACKUP"));
  std::string first;
  std::getline(manifest, first);
  EXPECT_EQ(first, "anneal coordinator backup");
  EXPECT_EQ(Counter(Path("b")), 7u);
}

TEST_F(BackupTest, WriteBackupIntoAnEmptyDirectoryReplacesIt) {
  Put(3);
  fs::create_directories(Path("empty"));
  ASSERT_TRUE(WriteBackup(*store_, state_, Path("empty")).ok());
  EXPECT_EQ(Counter(Path("empty")), 3u);
}

TEST_F(BackupTest, WriteBackupRefusesBadTargetsAndLeavesNoPartialCopy) {
  fs::create_directories(Path("full"));
  std::ofstream(Path("full/x")) << "x";
  auto full = WriteBackup(*store_, state_, Path("full"));
  EXPECT_EQ(full.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(full.status().message().find("not an empty directory"), std::string::npos);
  auto relative = WriteBackup(*store_, state_, "relative/dir");
  EXPECT_EQ(relative.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(relative.status().message().find("not an absolute path"), std::string::npos);
  auto orphan = WriteBackup(*store_, state_, Path("no/such/dir"));
  EXPECT_EQ(orphan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(orphan.status().message().find("does not exist"), std::string::npos);
  for (const auto& entry : fs::directory_iterator(root_)) {
    EXPECT_EQ(entry.path().filename().string().find(".partial-"), std::string::npos) << entry.path();
  }
}

TEST_F(BackupTest, RunningServerTakesTheBackupAndStopRemovesItsSocket) {
  Put(11);
  BackupServer server(store_.get(), state_);
  ASSERT_TRUE(server.Start().ok());
  struct stat st {};
  ASSERT_EQ(stat(server.socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto result = TakeBackup(state_, Path("online"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(result->online);
  // A refused request is answered, and the server goes on serving.
  auto refused = RequestBackup(state_, Path("online"), 5000);
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("already exists"), std::string::npos);
  EXPECT_TRUE(TakeBackup(state_, Path("online2")).ok());
  server.Stop();
  EXPECT_FALSE(fs::exists(server.socket_path()));
  EXPECT_EQ(Counter(Path("online")), 11u);
}

TEST_F(BackupTest, LockedStoreWithoutAServerIsRefusedAsUnavailable) {
  auto result = TakeBackup(state_, Path("b"));  // store_ holds the lock; nobody serves admin.sock
  ASSERT_EQ(result.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(result.status().message().find("does not answer"), std::string::npos);
}

TEST_F(BackupTest, StoppedCoordinatorIsBackedUpOffline) {
  Put(5);
  store_.reset();  // releases the lock, as a stopped coordinator
  auto result = TakeBackup(state_, Path("offline"));
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_FALSE(result->online);
  EXPECT_EQ(Counter(Path("offline")), 5u);
}

TEST_F(BackupTest, MissingStateDirectoryIsNotFound) {
  auto result = TakeBackup(Path("nowhere"), Path("b"));
  ASSERT_EQ(result.status().code(), StatusCode::kNotFound);
  EXPECT_NE(result.status().message().find(Path("nowhere")), std::string::npos);
}

TEST_F(BackupTest, StartRefusesSomethingElseAtTheSocketPath) {
  std::ofstream(state_ + "/admin.sock") << "not a socket";
  BackupServer server(store_.get(), state_);
  auto st = server.Start();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("not a socket"), std::string::npos);
  EXPECT_TRUE(fs::is_regular_file(state_ + "/admin.sock"));  // not deleted
}

}  // namespace
}  // namespace anneal::coordinator
