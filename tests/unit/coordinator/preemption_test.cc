// Sharing through the coordinator (coordinator/scheduling.cc over coordinator/planner.h): a team within its
// guarantee reclaims borrowed slots by preemption (PreemptTask, PREEMPTED -> PENDING, resume from the latest
// checkpoint, no attempt used), the minimum runtime protects a young job, a gang that does not stop is counted
// stopped after the deadline, time limits end a job, and pending jobs carry their reason.
#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

CoordinatorOptions SharingOptions(int64_t min_runtime_ms = 0) {
  CoordinatorOptions o;
  o.planner.min_runtime_ms = min_runtime_ms;
  o.preemption_grace_ms = 5000;
  o.stop_timeout_ms = 20000;
  o.heartbeat_timeout_ms = 3600 * 1000;  // the tests advance the clock far without heartbeats
  return o;
}

class PreemptionTest : public ::testing::Test {
 protected:
  explicit PreemptionTest(int64_t min_runtime_ms = 0) : h_(SharingOptions(min_runtime_ms)) {}

  void SetUp() override {
    h_.Register("n1", 2);
    for (const char* team : {"a", "b"}) {
      pb::ClientRequest r;
      r.mutable_create_team()->set_name(team);
      Done(h_.Call(r));
    }
    pb::ClientRequest quota;
    quota.mutable_set_team_quota()->set_team("b");
    auto* q = quota.mutable_set_team_quota()->add_quotas();
    q->set_guaranteed(2);
    q->set_max(2);
    Done(h_.Call(quota));
  }

  static void Done(const pb::ClientReply& reply) { ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message(); }

  std::string SubmitTo(const std::string& team, const std::string& extra = "") {
    return h_.Submit(BaseSpec("gpus_per_node: 2\n" + extra), team);
  }

  // Team a's job fills the node and runs, with a committed checkpoint at step 4.
  std::string RunningJobOfA(const std::string& extra = "") {
    const std::string job = SubmitTo("a", extra);
    h_.Round();
    EXPECT_EQ(h_.State(job), pb::JOB_STARTING);
    h_.ReportAll(job, pb::TASK_RUNNING);
    EXPECT_EQ(h_.State(job), pb::JOB_RUNNING);
    h_.ReportCheckpoint("n1", job, 4);
    return job;
  }

  // A preempted victim's ranks commit checkpoint `step` on n1 and exit "preempted": it is requeued (one
  // preemption, resuming from that checkpoint). Returns its record after the round.
  pb::JobRecord CheckpointAndLeave(const std::string& victim, uint64_t step) {
    h_.ReportCheckpoint("n1", victim, step);
    h_.ReportAll(victim, pb::TASK_PREEMPTED);
    h_.Round();
    pb::JobRecord v = h_.Job(victim);
    EXPECT_EQ(v.state(), pb::JOB_PENDING);
    EXPECT_EQ(v.preemptions(), 1u);
    EXPECT_NE(v.resume_checkpoint().find("checkpoint-" + std::to_string(step)), std::string::npos)
        << v.resume_checkpoint();
    return v;
  }

  std::vector<pb::PreemptTask> Preempts(const std::string& node) const {
    std::vector<pb::PreemptTask> out;
    for (auto& m : h_.AgentMessages(node)) {
      if (m.has_preempt()) out.push_back(m.preempt());
    }
    return out;
  }

  bool HasEvent(const std::string& job, const std::string& kind, const std::string& text) {
    for (const auto& e : h_.Events(job)) {
      if (e.kind() == kind && e.message().find(text) != std::string::npos) return true;
    }
    return false;
  }

  Harness h_;
};

TEST_F(PreemptionTest, ATeamWithinItsGuaranteeReclaimsBorrowedSlotsAndTheVictimResumesFromItsCheckpoint) {
  const std::string victim = RunningJobOfA("max_attempts: 1\n");
  const std::string mine = SubmitTo("b");  // the round that accepts it also plans and sends the preemption
  const auto preempts = Preempts("n1");
  EXPECT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  EXPECT_EQ(h_.State(mine), pb::JOB_PENDING);
  ASSERT_EQ(preempts.size(), 1u);
  EXPECT_EQ(preempts[0].job_id(), victim);
  EXPECT_EQ(preempts[0].grace_ms(), 5000u);
  EXPECT_TRUE(HasEvent(victim, "preemption", mine)) << "the victim's event names the beneficiary";
  EXPECT_TRUE(HasEvent(mine, "preemption", victim)) << "the beneficiary's event names the victim";

  // The ranks checkpointed and exited "preempted": the victim is requeued, resuming from that checkpoint.
  pb::JobRecord v = CheckpointAndLeave(victim, 6);
  EXPECT_EQ(h_.State(mine), pb::JOB_STARTING) << "the beneficiary starts once the slots are free";
  EXPECT_FALSE(v.wait_reason().empty()) << "a pending job says why it waits";

  // The beneficiary ends; the victim runs again: a preemption is not an attempt (max_attempts 1 still allows it).
  h_.ReportAll(mine, pb::TASK_SUCCEEDED);
  h_.Round();
  v = h_.Job(victim);
  EXPECT_EQ(v.state(), pb::JOB_STARTING);
  EXPECT_EQ(v.attempt(), 2u);
  EXPECT_TRUE(v.wait_reason().empty());
}

TEST_F(PreemptionTest, DrainWithEvictPreemptsTheNodesJobsAsAPreemptionNotAnAttempt) {
  const std::string victim = RunningJobOfA("max_attempts: 1\n");
  pb::ClientRequest drain;
  drain.mutable_drain()->set_node_id("n1");
  drain.mutable_drain()->set_evict(true);
  pb::ClientReply reply = h_.Call(drain);
  Done(reply);
  EXPECT_EQ(reply.drain().state(), pb::NODE_DRAINING);
  ASSERT_EQ(reply.drain().evicted_job_ids_size(), 1);
  EXPECT_EQ(reply.drain().evicted_job_ids(0), victim);
  EXPECT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  ASSERT_EQ(Preempts("n1").size(), 1u);
  EXPECT_TRUE(HasEvent(victim, "preemption", "node n1 drained with --evict"));

  // It checkpoints and leaves; it waits (the only node is draining) without having used an attempt.
  pb::JobRecord v = CheckpointAndLeave(victim, 6);

  // Back in service, it resumes: max_attempts 1 still allows it.
  pb::ClientRequest undrain;
  undrain.mutable_drain()->set_node_id("n1");
  undrain.mutable_drain()->set_undrain(true);
  Done(h_.Call(undrain));
  h_.Round();
  v = h_.Job(victim);
  EXPECT_EQ(v.state(), pb::JOB_STARTING);
  EXPECT_EQ(v.attempt(), 2u);
}

TEST_F(PreemptionTest, EvictGoesWithADrainNotAnUndrain) {
  const std::string job = RunningJobOfA();
  pb::ClientRequest r;
  r.mutable_drain()->set_node_id("n1");
  r.mutable_drain()->set_undrain(true);
  r.mutable_drain()->set_evict(true);
  pb::ClientReply reply = h_.Call(r);
  EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(reply.error().message().find("--evict goes with a drain"), std::string::npos) << reply.error().message();
  EXPECT_EQ(h_.State(job), pb::JOB_RUNNING) << "a refused request preempts nothing";
}

TEST_F(PreemptionTest, AGangThatIgnoresThePreemptionIsCountedStoppedAfterTheDeadlineAndRequeued) {
  const std::string victim = RunningJobOfA();
  const std::string mine = SubmitTo("b");
  h_.Round();
  ASSERT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  h_.Advance(4000);
  EXPECT_EQ(h_.State(victim), pb::JOB_PREEMPTED) << "still within the grace period";
  h_.Advance(5000 + 20000);  // grace + stop timeout: the node never confirmed
  EXPECT_EQ(h_.State(victim), pb::JOB_PENDING);
  EXPECT_EQ(h_.State(mine), pb::JOB_STARTING);
}

TEST_F(PreemptionTest, ACancelDuringPreemptionCancels) {
  const std::string victim = RunningJobOfA();
  SubmitTo("b");
  h_.Round();
  ASSERT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  Done(h_.Cancel(victim));
  EXPECT_EQ(h_.State(victim), pb::JOB_CANCELLING);
  h_.ReportAll(victim, pb::TASK_STOPPED);
  EXPECT_EQ(h_.State(victim), pb::JOB_CANCELLED);
}

TEST_F(PreemptionTest, AJobPastItsTimeLimitIsCheckpointedAndStoppedAndFails) {
  const std::string job = RunningJobOfA("time_limit: 10m\n");
  h_.Advance(9 * 60 * 1000);
  EXPECT_EQ(h_.State(job), pb::JOB_RUNNING);
  h_.Advance(60 * 1000 + 1000);
  ASSERT_EQ(h_.State(job), pb::JOB_PREEMPTED);
  ASSERT_EQ(Preempts("n1").size(), 1u);
  h_.ReportAll(job, pb::TASK_PREEMPTED);
  const pb::JobRecord r = h_.Job(job);
  EXPECT_EQ(r.state(), pb::JOB_FAILED);
  EXPECT_NE(r.result().find("time limit 10 min reached"), std::string::npos) << r.result();
  EXPECT_NE(r.result().find("checkpoint-4"), std::string::npos) << r.result();
}

TEST_F(PreemptionTest, ATeamWithoutAGuaranteeWaitsAndSaysWhy) {
  const std::string running = RunningJobOfA();
  const std::string waiting = SubmitTo("a");
  h_.Round();
  EXPECT_EQ(h_.State(running), pb::JOB_RUNNING) << "no preemption within one team without a guarantee";
  const pb::JobRecord w = h_.Job(waiting);
  EXPECT_EQ(w.state(), pb::JOB_PENDING);
  EXPECT_FALSE(w.wait_reason().empty());
  EXPECT_EQ(w.queue_position(), 1u);
  EXPECT_TRUE(HasEvent(waiting, "placement", "not placed yet"));
}

class MinimumRuntimeTest : public PreemptionTest {
 protected:
  MinimumRuntimeTest() : PreemptionTest(/*min_runtime_ms=*/10 * 60 * 1000) {}
};

TEST_F(MinimumRuntimeTest, AJustStartedJobIsNotAVictimUntilItsMinimumRuntimePassed) {
  const std::string victim = RunningJobOfA();
  const std::string mine = SubmitTo("b");
  h_.Round();
  EXPECT_EQ(h_.State(victim), pb::JOB_RUNNING);
  EXPECT_TRUE(Preempts("n1").empty());
  h_.Advance(10 * 60 * 1000 + 1000);
  EXPECT_EQ(h_.State(victim), pb::JOB_PREEMPTED);
  EXPECT_EQ(h_.State(mine), pb::JOB_PENDING);
}

}  // namespace
}  // namespace anneal::coordinator
