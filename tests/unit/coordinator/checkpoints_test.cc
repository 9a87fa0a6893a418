// The checkpoint registry: idempotent commits, the latest handed to retries, retention by latest N and best K
// with the agent deleting first.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

std::vector<uint64_t> DeleteOrders(const Harness& h, const std::string& node) {
  std::vector<uint64_t> steps;
  for (const auto& m : h.AgentMessages(node)) {
    if (m.has_delete_checkpoint()) steps.push_back(m.delete_checkpoint().step());
  }
  return steps;
}

std::map<uint64_t, pb::CheckpointState> States(Harness& h, const std::string& job) {
  pb::ClientRequest req;
  req.mutable_list_checkpoints()->set_job_id(job);
  std::map<uint64_t, pb::CheckpointState> out;
  const pb::ClientReply reply = h.Call(req);  // named: the loop below must not outlive it
  for (const auto& c : reply.list_checkpoints().checkpoints()) out[c.step()] = c.state();
  return out;
}

TEST(CheckpointRegistry, CommitIsIdempotentByJobAndStep) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec());
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10);
  h.ReportCheckpoint("n1", job, 10);  // a new seq, the same checkpoint (the agent re-reported it)
  auto states = States(h, job);
  ASSERT_EQ(states.size(), 1u);
  EXPECT_EQ(states[10], pb::CHECKPOINT_COMMITTED);
  int checkpoint_events = 0;
  for (const auto& e : h.Events(job)) checkpoint_events += e.kind() == "checkpoint";
  EXPECT_EQ(checkpoint_events, 1);
}

TEST(CheckpointRegistry, KeepsTheLatestNDeletingFilesFirst) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 2\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10);
  h.ReportCheckpoint("n1", job, 20);
  EXPECT_TRUE(DeleteOrders(h, "n1").empty());
  h.ReportCheckpoint("n1", job, 30);
  EXPECT_EQ(DeleteOrders(h, "n1"), std::vector<uint64_t>{10});
  // Until the agent confirms, the record says DELETING, not deleted.
  EXPECT_EQ(States(h, job)[10], pb::CHECKPOINT_DELETING);
  h.ReportCheckpointDeleted("n1", job, 10, true);
  auto states = States(h, job);
  EXPECT_EQ(states[10], pb::CHECKPOINT_DELETED);
  EXPECT_EQ(states[20], pb::CHECKPOINT_COMMITTED);
  EXPECT_EQ(states[30], pb::CHECKPOINT_COMMITTED);
}

TEST(CheckpointRegistry, KeepBestProtectsTheBestByMetric) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 1\nkeep_best: 1\nmetric_for_best_model: eval_loss\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10, {{"eval_loss", 2.0}});
  h.ReportCheckpoint("n1", job, 20, {{"eval_loss", 1.0}});   // best
  h.ReportCheckpoint("n1", job, 30, {{"eval_loss", 3.0}});   // latest
  auto states = States(h, job);
  EXPECT_EQ(states[10], pb::CHECKPOINT_DELETING);
  EXPECT_EQ(states[20], pb::CHECKPOINT_COMMITTED);
  EXPECT_EQ(states[30], pb::CHECKPOINT_COMMITTED);
}

TEST(CheckpointRegistry, GreaterIsBetterFlipsTheOrder) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec(
      "save_total_limit: 1\nkeep_best: 1\nmetric_for_best_model: accuracy\ngreater_is_better: true\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10, {{"accuracy", 0.9}});
  h.ReportCheckpoint("n1", job, 20, {{"accuracy", 0.5}});
  h.ReportCheckpoint("n1", job, 30, {{"accuracy", 0.7}});
  auto states = States(h, job);
  EXPECT_EQ(states[10], pb::CHECKPOINT_COMMITTED);  // best
  EXPECT_EQ(states[20], pb::CHECKPOINT_DELETING);
  EXPECT_EQ(states[30], pb::CHECKPOINT_COMMITTED);  // latest
}

TEST(CheckpointRegistry, FailedDeletionKeepsTheRecordCommitted) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10);
  h.ReportCheckpoint("n1", job, 20);
  h.ReportCheckpointDeleted("n1", job, 10, false);
  EXPECT_EQ(States(h, job)[10], pb::CHECKPOINT_COMMITTED);
}

TEST(CheckpointRegistry, RetryResumesFromTheLatestCommittedNotADeletedOne) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("max_attempts: 2\nsave_total_limit: 5\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10);
  h.ReportCheckpoint("n1", job, 20);
  h.ReportAll(job, pb::TASK_FAILED);
  pb::JobRecord r = h.Job(job);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-20");
  ASSERT_EQ(h.Launches("n1").size(), 1u);
  EXPECT_EQ(h.Launches("n1")[0].resume_checkpoint(), h.Job(job).output_dir() + "/checkpoint-20");
}

TEST(CheckpointRegistry, PendingDeletionIsResentWhenTheNodeReRegisters) {
  Harness h;
  h.Register("n1", 1);
  const std::string job = h.Submit(BaseSpec("save_total_limit: 1\n"));
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n1", job, 10);
  h.ReportCheckpoint("n1", job, 20);
  pb::JobRecord r = h.Job(job);
  h.Restart();
  h.Register("n1", 1, {Harness::Task(r, pb::TASK_RUNNING)});
  EXPECT_EQ(DeleteOrders(h, "n1"), std::vector<uint64_t>{10});
}

}  // namespace
}  // namespace anneal::coordinator
