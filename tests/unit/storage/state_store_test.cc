// StateStore over real RocksDB in a temp dir: round trips, reopen, scans, schema mismatch, corruption, lock.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "protocol/anneal.pb.h"
#include "storage/keys.h"
#include "storage/state_store.h"

namespace anneal::storage {
namespace {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("anneal-store-test-" + std::to_string(getpid()) + "-" + std::to_string(rd()));
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

pb::JobRecord Job(const std::string& id, pb::JobState state) {
  pb::JobRecord job;
  job.set_job_id(id);
  job.set_state(state);
  job.set_spec_yaml("kind: train\n");
  return job;
}

TEST(StateStore, PutGetAndReopen) {
  TempDir dir;
  {
    auto store = StateStore::Open(dir.str());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    WriteBatch batch;
    batch.Put(Table::kJobs, "job-1", Job("job-1", pb::JOB_RUNNING));
    pb::JobEvent event;
    event.set_job_id("job-1");
    event.set_seq(1);
    event.set_to_state(pb::JOB_RUNNING);
    batch.Put(Table::kEvents, JobStepKey("job-1", 1), event);
    batch.PutU64(Table::kMeta, "next_job", 2);
    ASSERT_TRUE((*store)->Commit(batch).ok());
  }
  auto store = StateStore::Open(dir.str());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  pb::JobRecord job;
  ASSERT_TRUE((*store)->Get(Table::kJobs, "job-1", &job).ok());
  EXPECT_EQ(job.state(), pb::JOB_RUNNING);
  pb::JobEvent event;
  ASSERT_TRUE((*store)->Get(Table::kEvents, JobStepKey("job-1", 1), &event).ok());
  EXPECT_EQ(event.to_state(), pb::JOB_RUNNING);
  auto counter = (*store)->GetU64(Table::kMeta, "next_job");
  ASSERT_TRUE(counter.ok());
  EXPECT_EQ(counter->value_or(0), 2u);
  EXPECT_EQ((*store)->Get(Table::kJobs, "job-2", &job).code(), StatusCode::kNotFound);
}

TEST(StateStore, PrefixScanReturnsOneJobInNumericOrder) {
  TempDir dir;
  auto store = StateStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  WriteBatch batch;
  for (uint64_t step : {300u, 2u, 10u}) {
    pb::MetricPoint point;
    point.set_job_id("job-1");
    point.set_step(step);
    batch.Put(Table::kMetrics, JobStepKey("job-1", step), point);
  }
  pb::MetricPoint other;
  other.set_job_id("job-10");
  other.set_step(1);
  batch.Put(Table::kMetrics, JobStepKey("job-10", 1), other);
  ASSERT_TRUE((*store)->Commit(batch).ok());

  std::vector<uint64_t> steps;
  ASSERT_TRUE((*store)->ScanRecords<pb::MetricPoint>(Table::kMetrics, IdPrefix("job-1"), [&](const pb::MetricPoint& p) {
    steps.push_back(p.step());
    return true;
  }).ok());
  EXPECT_EQ(steps, (std::vector<uint64_t>{2, 10, 300}));

  steps.clear();
  ASSERT_TRUE((*store)->ScanRecords<pb::MetricPoint>(Table::kMetrics, IdPrefix("job-1"), [&](const pb::MetricPoint& p) {
    steps.push_back(p.step());
    return true;
  }, JobStepKey("job-1", 3)).ok());
  EXPECT_EQ(steps, (std::vector<uint64_t>{10, 300}));

  steps.clear();
  ASSERT_TRUE((*store)->ScanRecordsReverse<pb::MetricPoint>(Table::kMetrics, IdPrefix("job-1"),
                                                            [&](const pb::MetricPoint& p) {
                                                              steps.push_back(p.step());
                                                              return steps.size() < 2;
                                                            }).ok());
  EXPECT_EQ(steps, (std::vector<uint64_t>{300, 10}));

  auto last = (*store)->LastKeyWithPrefix(Table::kMetrics, IdPrefix("job-1"));
  ASSERT_TRUE(last.ok() && last->has_value());
  EXPECT_EQ(DecodeJobStepKey(**last)->second, 300u);
  auto none = (*store)->LastKeyWithPrefix(Table::kMetrics, IdPrefix("job-2"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(StateStore, DeleteRemovesTheRecord) {
  TempDir dir;
  auto store = StateStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  WriteBatch put;
  put.PutRaw(Table::kMeta, "active/job-1", "");
  ASSERT_TRUE((*store)->Commit(put).ok());
  WriteBatch del;
  del.Delete(Table::kMeta, "active/job-1");
  ASSERT_TRUE((*store)->Commit(del).ok());
  auto raw = (*store)->GetRaw(Table::kMeta, "active/job-1");
  ASSERT_TRUE(raw.ok());
  EXPECT_FALSE(raw->has_value());
}

TEST(StateStore, RefusesAnotherSchemaVersionNamingBoth) {
  TempDir dir;
  {
    auto store = StateStore::Open(dir.str());
    ASSERT_TRUE(store.ok());
    WriteBatch batch;
    batch.PutU64(Table::kMeta, "schema_version", kSchemaVersion + 6);
    ASSERT_TRUE((*store)->Commit(batch).ok());
  }
  auto store = StateStore::Open(dir.str());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("schema version " + std::to_string(kSchemaVersion + 6)), std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find("reads schema version " + std::to_string(kSchemaVersion)),
            std::string::npos) << store.status().message();
}

TEST(StateStore, CorruptDirectoryIsNamedAsCorrupt) {
  TempDir dir;
  { ASSERT_TRUE(StateStore::Open(dir.str()).ok()); }
  // CURRENT names the live manifest; garbage there is what a torn copy looks like.
  std::ofstream(dir.str() + "/CURRENT", std::ios::trunc) << "garbage-without-newline";
  auto store = StateStore::Open(dir.str());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
  EXPECT_NE(store.status().message().find("is corrupt"), std::string::npos) << store.status().message();
  EXPECT_NE(store.status().message().find(dir.str()), std::string::npos);
}

TEST(StateStore, CorruptValueIsDataLossNamingTheKey) {
  TempDir dir;
  auto store = StateStore::Open(dir.str());
  ASSERT_TRUE(store.ok());
  WriteBatch batch;
  batch.PutRaw(Table::kJobs, "job-bad", "\xff\xff\xff");
  ASSERT_TRUE((*store)->Commit(batch).ok());
  pb::JobRecord job;
  Status st = (*store)->Get(Table::kJobs, "job-bad", &job);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("job-bad"), std::string::npos) << st.message();
}

TEST(StateStore, LockedByAnotherProcessIsNamed) {
  TempDir dir;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = StateStore::Open(dir.str());
    char c = store.ok() ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    sleep(30);  // killed by the parent
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto store = StateStore::Open(dir.str());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(ready[0]);
  close(ready[1]);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status().ToString();
  EXPECT_NE(store.status().message().find("locked by another process"), std::string::npos)
      << store.status().message();
  // Once the holder is gone the directory opens again.
  EXPECT_TRUE(StateStore::Open(dir.str()).ok());
}

TEST(StateStore, PathThatIsAFileIsRefused) {
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  std::ofstream(dir.str() + "/file") << "x";
  auto store = StateStore::Open(dir.str() + "/file");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(store.status().message().find("not a directory"), std::string::npos);
}

TEST(StateStore, NoPermissionIsNamed) {
  if (geteuid() == 0) GTEST_SKIP() << "root bypasses file modes";
  TempDir dir;
  std::filesystem::create_directories(dir.str());
  std::filesystem::permissions(dir.str(), std::filesystem::perms::owner_read);
  auto store = StateStore::Open(dir.str());
  std::filesystem::permissions(dir.str(), std::filesystem::perms::owner_all);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace anneal::storage
