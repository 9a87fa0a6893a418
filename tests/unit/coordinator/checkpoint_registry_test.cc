// CheckpointRegistry (coordinator/checkpoint_registry.h) over a real store: idempotent commits, the resume
// point, retention, deletion confirmations, late reports, recovery.
#include "coordinator/checkpoint_registry.h"

#include <gtest/gtest.h>

#include <set>

#include "storage/keys.h"
#include "temp_store.h"

namespace anneal::coordinator {
namespace {

using storage::Table;
using testing::TempStore;

pb::CheckpointRecord Committed(uint64_t step, double eval_loss = -1, const std::string& job = "job-000001") {
  pb::CheckpointRecord c;
  c.set_job_id(job);
  c.set_step(step);
  c.set_path("/out/run/checkpoint-" + std::to_string(step));
  c.set_node_id("n1");
  c.set_state(pb::CHECKPOINT_COMMITTED);
  if (eval_loss >= 0) (*c.mutable_metrics())["eval_loss"] = eval_loss;
  return c;
}

std::vector<uint64_t> Steps(const std::vector<pb::CheckpointRecord>& records) {
  std::vector<uint64_t> steps;
  for (const auto& r : records) steps.push_back(r.step());
  return steps;
}

TEST(CheckpointRegistry, ACommitIsRecordedOnceAndTheLatestIsTheResumePoint) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  checkpoints.Track("job-000001", {});
  EXPECT_EQ(checkpoints.LatestCommitted("job-000001"), nullptr);
  EXPECT_TRUE(checkpoints.RecordCommitted(Committed(10)));
  EXPECT_FALSE(checkpoints.RecordCommitted(Committed(10)));  // a duplicate report
  EXPECT_TRUE(checkpoints.RecordCommitted(Committed(20)));
  ASSERT_NE(checkpoints.LatestCommitted("job-000001"), nullptr);
  EXPECT_EQ(checkpoints.LatestCommitted("job-000001")->step(), 20u);
  t.Commit();
  auto stored = checkpoints.Read("job-000001");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(Steps(*stored), (std::vector<uint64_t>{10, 20}));
}

TEST(CheckpointRegistry, AProtectedCheckpointIsNeverMarkedNorOrderedDeletedAgain) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  std::set<std::string> protected_paths = {"/out/run/checkpoint-10"};
  checkpoints.SetProtector([&](const std::string& path) { return protected_paths.count(path) > 0; });
  checkpoints.Track("job-000001", {.save_total_limit = 1});
  for (uint64_t step : {10, 20, 30}) ASSERT_TRUE(checkpoints.RecordCommitted(Committed(step)));
  EXPECT_EQ(Steps(checkpoints.ApplyRetention("job-000001")), std::vector<uint64_t>{20});  // 10 is protected
  t.Commit();
  auto stored = checkpoints.Read("job-000001");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ((*stored)[0].state(), pb::CHECKPOINT_COMMITTED);
  // 20 was marked before a version came to use it: a re-registering node is not told to delete it again.
  EXPECT_EQ(Steps(checkpoints.DeletingOn("n1")), std::vector<uint64_t>{20});
  protected_paths.insert("/out/run/checkpoint-20");
  EXPECT_TRUE(checkpoints.DeletingOn("n1").empty());
}

TEST(CheckpointRegistry, RetentionKeepsTheLatestAndTheBestAndMarksTheRestDeleting) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  checkpoints.Track("job-000001", {.save_total_limit = 2, .keep_best = 1});
  for (auto [step, loss] : std::vector<std::pair<uint64_t, double>>{{10, 0.9}, {20, 0.3}, {30, 0.5}, {40, 0.7}}) {
    ASSERT_TRUE(checkpoints.RecordCommitted(Committed(step, loss)));
  }
  const auto doomed = checkpoints.ApplyRetention("job-000001");
  EXPECT_EQ(Steps(doomed), std::vector<uint64_t>{10});  // 30, 40 latest; 20 best
  EXPECT_EQ(doomed[0].state(), pb::CHECKPOINT_DELETING);
  EXPECT_EQ(Steps(checkpoints.DeletingOn("n1")), std::vector<uint64_t>{10});
  EXPECT_TRUE(checkpoints.DeletingOn("n2").empty());
  EXPECT_TRUE(checkpoints.ApplyRetention("job-000001").empty());  // nothing more to delete
}

TEST(CheckpointRegistry, ZeroLimitKeepsEverything) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  checkpoints.Track("job-000001", {.save_total_limit = 0, .keep_best = 1});
  for (uint64_t step : {10, 20, 30}) ASSERT_TRUE(checkpoints.RecordCommitted(Committed(step, 1.0)));
  EXPECT_TRUE(checkpoints.ApplyRetention("job-000001").empty());
}

TEST(CheckpointRegistry, AConfirmedDeletionIsDeletedAFailedOneCommittedAgain) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  checkpoints.Track("job-000001", {.save_total_limit = 1});
  for (uint64_t step : {10, 20, 30}) ASSERT_TRUE(checkpoints.RecordCommitted(Committed(step)));
  ASSERT_EQ(Steps(checkpoints.ApplyRetention("job-000001")), (std::vector<uint64_t>{10, 20}));
  pb::CheckpointDeleted deleted;
  deleted.set_job_id("job-000001");
  deleted.set_step(10);
  deleted.set_ok(true);
  auto confirmed = checkpoints.ConfirmDeleted(deleted);
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_EQ(confirmed->state(), pb::CHECKPOINT_DELETED);
  EXPECT_FALSE(checkpoints.ConfirmDeleted(deleted).has_value());  // a duplicate answer
  deleted.set_step(20);
  deleted.set_ok(false);
  confirmed = checkpoints.ConfirmDeleted(deleted);
  ASSERT_TRUE(confirmed.has_value());
  EXPECT_EQ(confirmed->state(), pb::CHECKPOINT_COMMITTED);
  EXPECT_TRUE(checkpoints.RecordCommitted(Committed(10)));  // a DELETED step may be committed again
}

TEST(CheckpointRegistry, ALateReportOfAnUntrackedJobIsStoredOnce) {
  TempStore t;
  CheckpointRegistry checkpoints(t.batch(), t.store());
  EXPECT_FALSE(checkpoints.RecordCommitted(Committed(10)));
  t.Commit();
  pb::CheckpointRecord stored;
  ASSERT_TRUE(t.store()->Get(Table::kCheckpoints, storage::JobStepKey("job-000001", 10), &stored).ok());
  EXPECT_EQ(stored.path(), "/out/run/checkpoint-10");
  pb::CheckpointRecord again = Committed(10);
  again.set_path("/elsewhere");
  EXPECT_FALSE(checkpoints.RecordCommitted(again));
  EXPECT_TRUE(t.batch()->empty());  // already stored: not written again
}

TEST(CheckpointRegistry, LoadReadsTheStoredCheckpointsAndTheSpecsRetention) {
  TempStore t;
  {
    CheckpointRegistry checkpoints(t.batch(), t.store());
    checkpoints.Track("job-000001", {});
    for (uint64_t step : {10, 20, 30}) ASSERT_TRUE(checkpoints.RecordCommitted(Committed(step)));
    t.Commit();
  }
  pb::JobRecord record;
  record.set_job_id("job-000001");
  record.set_spec_yaml(
      "model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: /out/run\n"
      "save_total_limit: 1\n");
  CheckpointRegistry checkpoints(t.batch(), t.store());
  ASSERT_TRUE(checkpoints.Load(record).ok());
  ASSERT_NE(checkpoints.RetentionFor("job-000001"), nullptr);
  EXPECT_EQ(checkpoints.RetentionFor("job-000001")->save_total_limit, 1);
  EXPECT_EQ(checkpoints.LatestCommitted("job-000001")->step(), 30u);
  EXPECT_EQ(Steps(checkpoints.ApplyRetention("job-000001")), (std::vector<uint64_t>{10, 20}));
  checkpoints.Forget("job-000001");
  EXPECT_FALSE(checkpoints.Tracks("job-000001"));
  EXPECT_EQ(checkpoints.LatestCommitted("job-000001"), nullptr);
}

}  // namespace
}  // namespace anneal::coordinator
