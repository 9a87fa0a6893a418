// Gang placement: packing, gangs, tensor-parallel groups inside a node, nothing fits; and the queue order
// (priority, then FIFO) through the Coordinator.
#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

#include "harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;

NodeCapacity Node(const std::string& id, uint32_t total, uint32_t used) {
  NodeCapacity n;
  n.node_id = id;
  n.total_slots = total;
  for (uint32_t s = used; s < total; ++s) n.free_slots.push_back(s);
  return n;
}

TEST(Scheduler, PacksIntoTheFullestNodeThatFits) {
  // a: 8 free, b: 2 free, c: 3 free. A 2-rank job goes to b and leaves the big hole on a.
  auto r = PlaceGang({1, 2, 1}, {Node("a", 8, 0), Node("b", 8, 6), Node("c", 8, 5)});
  ASSERT_EQ(r.outcome, PlacementOutcome::kPlaced);
  ASSERT_EQ(r.nodes.size(), 1u);
  EXPECT_EQ(r.nodes[0].node_id, "b");
  EXPECT_EQ(r.nodes[0].slots, (std::vector<uint32_t>{6, 7}));
}

TEST(Scheduler, GangTakesAllNodesOrNone) {
  auto none = PlaceGang({3, 4, 1}, {Node("a", 8, 0), Node("b", 8, 0), Node("c", 8, 6)});
  EXPECT_EQ(none.outcome, PlacementOutcome::kWait);  // c could, once idle
  EXPECT_TRUE(none.nodes.empty());
  auto all = PlaceGang({3, 4, 1}, {Node("a", 8, 0), Node("b", 8, 0), Node("c", 8, 4)});
  ASSERT_EQ(all.outcome, PlacementOutcome::kPlaced);
  EXPECT_EQ(all.nodes.size(), 3u);
  EXPECT_EQ(all.nodes[0].node_id, "c");  // fullest first
}

TEST(Scheduler, TensorParallelGroupMustStayInsideANode) {
  auto split = PlaceGang({2, 2, 4}, {Node("a", 8, 0), Node("b", 8, 0)});
  EXPECT_EQ(split.outcome, PlacementOutcome::kNever);
  EXPECT_NE(split.reason.find("tensor_parallel 4"), std::string::npos) << split.reason;
  auto inside = PlaceGang({2, 4, 4}, {Node("a", 8, 0), Node("b", 8, 0)});
  EXPECT_EQ(inside.outcome, PlacementOutcome::kPlaced);
}

TEST(Scheduler, NothingFitsIsNeverWhenNoNodeIsBigEnough) {
  auto r = PlaceGang({1, 16, 1}, {Node("a", 8, 0), Node("b", 8, 0)});
  EXPECT_EQ(r.outcome, PlacementOutcome::kNever);
  EXPECT_NE(r.reason.find("16 slot(s)"), std::string::npos) << r.reason;
  auto too_many_nodes = PlaceGang({3, 1, 1}, {Node("a", 8, 0), Node("b", 8, 0)});
  EXPECT_EQ(too_many_nodes.outcome, PlacementOutcome::kNever);
  auto empty = PlaceGang({1, 1, 1}, {});
  EXPECT_EQ(empty.outcome, PlacementOutcome::kNever);
}

TEST(Scheduler, RankZeroGoesWhereARendezvousPortIsFree) {
  NodeCapacity busy = Node("a", 8, 6);
  busy.has_free_port = false;
  auto r = PlaceGang({2, 2, 1}, {busy, Node("b", 8, 0)});
  ASSERT_EQ(r.outcome, PlacementOutcome::kPlaced);
  EXPECT_EQ(r.nodes[0].node_id, "b");
  EXPECT_EQ(r.nodes[1].node_id, "a");
  auto wait = PlaceGang({1, 2, 1}, {busy});
  EXPECT_EQ(wait.outcome, PlacementOutcome::kWait);
}

TEST(SchedulerQueue, HigherPriorityFirstThenFifo) {
  Harness h;
  const std::string low = h.Submit(BaseSpec("priority: 0\n"));
  const std::string high = h.Submit(BaseSpec("priority: 5\n"));
  const std::string low2 = h.Submit(BaseSpec("priority: 0\n"));
  h.Register("n1", 1);
  EXPECT_EQ(h.State(high), pb::JOB_STARTING);
  EXPECT_EQ(h.State(low), pb::JOB_PENDING);
  h.ReportAll(high, pb::TASK_RUNNING);
  h.ReportAll(high, pb::TASK_SUCCEEDED);
  EXPECT_EQ(h.State(low), pb::JOB_STARTING);  // FIFO among equals
  EXPECT_EQ(h.State(low2), pb::JOB_PENDING);
}

// With backfill off (the coordinator setting `backfill: false`), the queue is strict: the head that waits for
// capacity blocks everyone behind it.
CoordinatorOptions StrictOrder() {
  CoordinatorOptions o;
  o.planner.backfill = false;
  return o;
}

TEST(SchedulerQueue, ABlockedHeadIsNotPassedButAnImpossibleJobIs) {
  Harness h(StrictOrder());
  h.Register("n1", 2);
  h.Register("n2", 4);
  const std::string small = h.Submit(BaseSpec("gpus_per_node: 2\n"));  // best fit: n1
  const std::string big = h.Submit(BaseSpec("gpus_per_node: 4\n"));    // n2
  ASSERT_EQ(h.State(small), pb::JOB_STARTING);
  ASSERT_EQ(h.State(big), pb::JOB_STARTING);
  EXPECT_EQ(h.Job(small).placement().nodes(0).node_id(), "n1");
  const std::string waits = h.Submit(BaseSpec("gpus_per_node: 4\n"));   // needs n2 idle: waits
  const std::string behind = h.Submit(BaseSpec("gpus_per_node: 1\n"));  // would fit nowhere now anyway
  EXPECT_EQ(h.State(waits), pb::JOB_PENDING);
  EXPECT_EQ(h.State(behind), pb::JOB_PENDING);
  h.ReportAll(small, pb::TASK_RUNNING);
  h.ReportAll(small, pb::TASK_SUCCEEDED);
  // n1 is free now, but the 4-slot head still waits, so the 1-slot job behind it is not placed.
  EXPECT_EQ(h.State(behind), pb::JOB_PENDING);
  // Drain n2 -> the 4-slot job can never run on the schedulable nodes and stops blocking.
  pb::ClientRequest drain;
  drain.mutable_drain()->set_node_id("n2");
  EXPECT_EQ(h.Call(drain).drain().state(), pb::NODE_DRAINING);
  EXPECT_EQ(h.State(behind), pb::JOB_STARTING);
  EXPECT_EQ(h.State(waits), pb::JOB_PENDING);
  // Draining sticks across a re-registration; undrain puts n2 back and the 4-slot job runs there.
  h.Register("n2", 4);
  EXPECT_EQ(h.core().FindNode("n2")->state(), pb::NODE_DRAINING);
  drain.mutable_drain()->set_undrain(true);
  EXPECT_EQ(h.Call(drain).drain().state(), pb::NODE_UP);
  EXPECT_EQ(h.State(waits), pb::JOB_PENDING);  // n2 still runs the first 4-slot job
  h.ReportAll(big, pb::TASK_RUNNING);
  h.ReportAll(big, pb::TASK_SUCCEEDED);
  EXPECT_EQ(h.State(waits), pb::JOB_STARTING);
}

// With backfill (the default), a job behind the blocked head starts at once on slots the head's reservation
// does not need, even without a time limit.
TEST(SchedulerQueue, AJobBehindABlockedHeadBackfillsIntoSlotsItsReservationDoesNotNeed) {
  Harness h;
  h.Register("n1", 2);
  h.Register("n2", 4);
  const std::string big = h.Submit(BaseSpec("gpus_per_node: 4\n"));  // n2
  ASSERT_EQ(h.State(big), pb::JOB_STARTING);
  const std::string waits = h.Submit(BaseSpec("gpus_per_node: 4\n"));  // reserved on n2
  const std::string behind = h.Submit(BaseSpec("gpus_per_node: 1\n"));
  EXPECT_EQ(h.State(waits), pb::JOB_PENDING);
  EXPECT_EQ(h.State(behind), pb::JOB_STARTING);
  EXPECT_EQ(h.Job(behind).placement().nodes(0).node_id(), "n1");
  EXPECT_EQ(h.Job(waits).queue_position(), 1u);
  EXPECT_FALSE(h.Job(waits).wait_reason().empty());
}

// Every pending job stores the reason the plan renders for it: the coordinator renders them all into one buffer
// (coordinator/scheduling.cc), and each job gets its own text, not its predecessor's with its own appended.
TEST(SchedulerQueue, EachPendingJobStoresItsOwnRenderedReason) {
  Harness h;
  h.Register("n1", 4);
  const std::string big = h.Submit(BaseSpec("gpus_per_node: 4\n"));
  ASSERT_EQ(h.State(big), pb::JOB_STARTING);
  const std::string first = h.Submit(BaseSpec("gpus_per_node: 4\n"));
  const std::string second = h.Submit(BaseSpec("gpus_per_node: 2\n"));
  const std::string first_reason = h.Job(first).wait_reason();
  EXPECT_EQ(first_reason.rfind("waiting for 1 node(s) with 4 free slot(s); 0 have them now; its slots are reserved "
                               "from ",
                               0),
            0u)
      << first_reason;
  EXPECT_EQ(h.Job(second).wait_reason(), "waiting for 1 node(s) with 2 free slot(s); 0 have them now");
}

TEST(SchedulerQueue, ARetriedJobGoesBackToTheNodeHoldingItsCheckpoint) {
  Harness h;
  h.Register("n1", 2);
  h.Register("n2", 2);
  const std::string first = h.Submit(BaseSpec("gpus_per_node: 2\n"));  // n1 (ties go by node id)
  const std::string job = h.Submit(BaseSpec("gpus_per_node: 2\nmax_attempts: 2\n"));
  ASSERT_EQ(h.Job(job).placement().nodes(0).node_id(), "n2");
  h.ReportAll(job, pb::TASK_RUNNING);
  h.ReportCheckpoint("n2", job, 10);
  h.ReportAll(first, pb::TASK_SUCCEEDED);  // n1 is free: best fit alone would now pick it (ties by id)
  h.ReportAll(job, pb::TASK_FAILED);
  const pb::JobRecord r = h.Job(job);
  ASSERT_EQ(r.state(), pb::JOB_STARTING);
  EXPECT_EQ(r.attempt(), 2u);
  EXPECT_EQ(r.placement().nodes(0).node_id(), "n2") << "the retry resumes where its checkpoint is";
}

TEST(SchedulerQueue, SubmitRejectsWhatTheClusterCanNeverRun) {
  Harness h;
  h.Register("n1", 4);
  pb::ClientRequest req;
  req.mutable_submit()->set_spec_yaml(BaseSpec("gpus_per_node: 8\n"));
  pb::ClientReply reply = h.Call(req);
  EXPECT_NE(reply.error().code(), pb::OK);
  EXPECT_NE(reply.error().message().find("never run"), std::string::npos) << reply.error().message();
  EXPECT_EQ(h.core().ActiveJobCount(), 0u);
}

TEST(SchedulerQueue, TwoJobsOnOneNodeGetDifferentRendezvousPorts) {
  Harness h;
  h.Register("n1", 2);
  const std::string a = h.Submit(BaseSpec());
  const std::string b = h.Submit(BaseSpec());
  EXPECT_EQ(h.Job(a).placement().master_port(), 29500u);
  EXPECT_EQ(h.Job(b).placement().master_port(), 29501u);
  EXPECT_NE(h.Job(a).placement().nodes(0).ranks(0).slot(), h.Job(b).placement().nodes(0).ranks(0).slot());
}

TEST(SchedulerQueue, RanksAreNodeMajorSoTensorGroupsStayInANode) {
  Harness h;
  h.Register("n1", 4);
  h.Register("n2", 4);
  const std::string job = h.Submit(BaseSpec("nodes: 2\ngpus_per_node: 4\ntensor_model_parallel_size: 2\n"));
  pb::JobRecord r = h.Job(job);
  ASSERT_EQ(r.state(), pb::JOB_STARTING);
  ASSERT_EQ(r.placement().nodes_size(), 2);
  for (int n = 0; n < 2; ++n) {
    for (int l = 0; l < 4; ++l) {
      EXPECT_EQ(r.placement().nodes(n).ranks(l).global_rank(), static_cast<uint32_t>(n * 4 + l));
      EXPECT_EQ(r.placement().nodes(n).ranks(l).local_rank(), static_cast<uint32_t>(l));
    }
  }
  auto launch = h.Launches(r.placement().nodes(1).node_id());
  ASSERT_EQ(launch.size(), 1u);
  EXPECT_EQ(launch[0].node_rank(), 1u);
  EXPECT_EQ(launch[0].nnodes(), 2u);
  EXPECT_EQ(launch[0].master_addr(), r.placement().nodes(0).node_id() + ".cluster");
}

}  // namespace
}  // namespace anneal::coordinator
