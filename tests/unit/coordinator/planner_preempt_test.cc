// The pure scheduler's preemption (coordinator/planner.h stages 1 and 5): time-limit stops and reclaims, victim
// choice, minimum runtime, preemption budget, jobs already being preempted.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "coordinator/planner.h"
#include "planner_test_helpers.h"

namespace anneal::coordinator {
namespace {

using namespace planner_testing;  // NOLINT: the test builders

// ---- preemption ----

// Team a borrows the whole cluster (2 nodes x 4) with two 4-slot jobs; team b is guaranteed 4.
PlannerInput ReclaimCluster() {
  return Input({Node("n1", 4, 4), Node("n2", 4, 4)},
               {Running("a-old", "a", {{"n1", 4}}, 60 * kMinute), Running("a-new", "a", {{"n2", 4}}, 30 * kMinute)},
               {Pending("b1", "b", 1, 4, 1)}, {Team("a"), Team("b", {{"", 4, 0}})});
}

TEST(Planner, ATeamWithinItsGuaranteeReclaimsBorrowedSlots) {
  auto in = ReclaimCluster();
  in.running[0].last_checkpoint_ms = kNow - 2 * kMinute;  // a-old would lose 2 minutes, a-new 30
  auto plan = PlanSchedule(in);
  ASSERT_EQ(plan.preemptions.size(), 1u);
  const Preemption& p = plan.preemptions[0];
  EXPECT_EQ(p.kind, PreemptionKind::kReclaim);
  EXPECT_EQ(p.victim_job_id, "a-old");  // least work lost
  EXPECT_EQ(p.beneficiary_job_id, "b1");
  EXPECT_EQ(p.work_lost_ms, 2 * kMinute);
  EXPECT_TRUE(Has(p.reason, "team b below its guarantee (0 of 4 slots on the cluster)")) << p.reason;
  EXPECT_TRUE(plan.starts.empty());  // the victim still holds its slots
  EXPECT_EQ(ReasonOf(plan, "b1"), "waiting for the preemption of a-old");
}

TEST(Planner, NoReclaimBeyondTheGuaranteeOrWhenOff) {
  auto in = ReclaimCluster();
  in.pending[0].gang = {2, 4, 1};  // 8 slots: more than b's guarantee of 4
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
  in = ReclaimCluster();
  in.config.preemption = false;
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
  in = ReclaimCluster();
  in.teams = {Team("a", {{"", 8, 0}}), Team("b", {{"", 4, 0}})};  // a holds 8, within its own guarantee
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
}

// The pass after a reclaim: the victim's slots (n1) are free. They go to the beneficiary b1, whose team is
// below its guarantee, not to c1 of a borrowing team with lower usage (which would make b1 reclaim again).
TEST(Planner, SlotsFreedByAPreemptionGoToTheBeneficiaryNotToALowerUsageBorrower) {
  auto in = Input({Node("n1", 4, 0), Node("n2", 4, 4), Node("n3", 4, 4)},
                  {Running("a1", "a", {{"n2", 4}}), Running("c0", "c", {{"n3", 4}})},
                  {Pending("c1", "c", 1, 4, 1), Pending("b1", "b", 1, 4, 2)},
                  {Team("a", {}, 1e6), Team("b", {{"", 4, 0}}, 1e9), Team("c", {}, 0)});
  auto plan = PlanSchedule(in);
  EXPECT_NE(StartOf(plan, "b1"), nullptr);
  EXPECT_EQ(StartOf(plan, "c1"), nullptr);
  EXPECT_TRUE(plan.preemptions.empty());  // no second round of victims
  EXPECT_EQ(plan.order, (std::vector<std::string>{"b1", "c1"}));
}

TEST(Planner, VictimsComeFromTheBiggestBorrowerThenLowestPriority) {
  auto in =
      Input({Node("n1", 4, 4), Node("n2", 4, 4), Node("n3", 4, 4)},
            {Running("c1", "c", {{"n1", 4}}, 60 * kMinute, 0, /*priority=*/-5),
             Running("a1", "a", {{"n2", 4}}, 60 * kMinute, 0, 3), Running("a2", "a", {{"n3", 4}}, 60 * kMinute, 0, 1)},
            {Pending("b1", "b", 1, 4, 1)}, {Team("b", {{"", 4, 0}})});
  EXPECT_EQ(Victims(PlanSchedule(in)), (std::vector<std::string>{"a2"}));  // a borrows 8, c only 4
  in.running[2].priority = 5;
  EXPECT_EQ(Victims(PlanSchedule(in)), (std::vector<std::string>{"a1"}));
}

TEST(Planner, VictimsAreWholeGangsAndTheFewest) {
  // a-small (lowest priority) holds 2 of n1's slots next to a job that cannot be preempted; a-gang spans n2 and
  // n3. Taking a-small first does not help, so only the gang is preempted, all of it.
  auto in = Input(
      {Node("n1", 4, 4), Node("n2", 4, 4), Node("n3", 4, 2)},
      {Running("a-small", "a", {{"n1", 2}}, 60 * kMinute, 0, -1), Running("a-fixed", "a", {{"n1", 2}}, 60 * kMinute),
       Running("a-gang", "a", {{"n2", 4}, {"n3", 2}}, 60 * kMinute)},
      {Pending("b1", "b", 1, 4, 1)}, {Team("b", {{"", 4, 0}})});
  in.running[1].preemptible = false;
  auto plan = PlanSchedule(in);
  EXPECT_EQ(Victims(plan), (std::vector<std::string>{"a-gang"}));
}

TEST(Planner, ReclaimNeverTakesAVictimTeamBelowItsOwnGuarantee) {
  // a is guaranteed 4 and holds 8; c holds 4 with no guarantee. b (guaranteed 8) needs 2 nodes x 4. a gives
  // only what it borrows (one job), so the second victim comes from c although a2 sorts before c1.
  auto in = Input({Node("n1", 4, 4), Node("n2", 4, 4), Node("n3", 4, 4)},
                  {Running("a1", "a", {{"n1", 4}}), Running("a2", "a", {{"n2", 4}}), Running("c1", "c", {{"n3", 4}})},
                  {Pending("b1", "b", 2, 4, 1)}, {Team("a", {{"", 4, 0}}), Team("b", {{"", 8, 0}})});
  EXPECT_EQ(Victims(PlanSchedule(in)), (std::vector<std::string>{"a1", "c1"}));
}

TEST(Planner, MinimumRuntimeProtectsAJustStartedJob) {
  auto in = ReclaimCluster();
  in.running[0].started_at_ms = kNow - 5 * kMinute;
  in.running[1].started_at_ms = kNow - 5 * kMinute;
  auto plan = PlanSchedule(in);
  EXPECT_TRUE(plan.preemptions.empty());
  EXPECT_FALSE(Has(ReasonOf(plan, "b1"), "preemption")) << ReasonOf(plan, "b1");
  in.config.min_runtime_ms = 4 * kMinute;
  EXPECT_EQ(PlanSchedule(in).preemptions.size(), 1u);
}

TEST(Planner, AJobWhosePreemptionBudgetIsSpentIsNeverAVictim) {
  auto in = ReclaimCluster();
  in.running[0].preemptible = false;
  EXPECT_EQ(Victims(PlanSchedule(in)), (std::vector<std::string>{"a-new"}));
  in.running[1].preemptible = false;
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
}

TEST(Planner, SlotsBeingPreemptedCountAsFreedSoNoSecondRound) {
  auto in = ReclaimCluster();
  in.running[1].being_preempted = true;  // the previous pass chose a-new
  auto plan = PlanSchedule(in);
  EXPECT_TRUE(plan.preemptions.empty());
  EXPECT_EQ(ReasonOf(plan, "b1"), "waiting for the preemption of a-new");
  // A second job of b is not covered by those slots any more: it gets a victim of its own.
  in.pending.push_back(Pending("b2", "b", 1, 2, 2));
  in.teams[1].quotas = {{"", 6, 0}};
  plan = PlanSchedule(in);
  EXPECT_EQ(Victims(plan), (std::vector<std::string>{"a-old"}));
}

// b1's victim of an earlier pass held n1. Without a claim, d1 (lower usage, also within its guarantee) goes
// first and takes n1's slots, so b1 must reclaim again; with claimed_nodes = {n1}, b1 leads the order and gets
// them, whether they are still freeing (the victim's grace period) or free already.
TEST(Planner, AClaimantGetsTheSlotsItsVictimsFreeBeforeJobsAheadOfIt) {
  auto cluster = [](bool freed_already) {
    auto in = Input({Node("n1", 4, freed_already ? 0 : 4), Node("n2", 4, 4)}, {Running("a1", "a", {{"n2", 4}})},
                    {Pending("d1", "d", 1, 4, 1), Pending("b1", "b", 1, 4, 2)},
                    {Team("a"), Team("b", {{"", 4, 0}}, 1e9), Team("d", {{"", 4, 0}}, 0)});
    if (!freed_already) {
      in.running.push_back(Running("a0", "a", {{"n1", 4}}));
      in.running.back().being_preempted = true;
    }
    return in;
  };
  for (bool freed_already : {true, false}) {
    SCOPED_TRACE(freed_already ? "the victim's slots are free" : "the victim is in its grace period");
    auto in = cluster(freed_already);
    auto plan = PlanSchedule(in);
    EXPECT_EQ(plan.order, (std::vector<std::string>{"d1", "b1"}));
    ASSERT_EQ(plan.preemptions.size(), 1u);
    EXPECT_EQ(plan.preemptions[0].beneficiary_job_id, "b1");  // b1 reclaims again: its slots went to d1

    in.pending[1].claimed_nodes = {"n1"};
    plan = PlanSchedule(in);
    EXPECT_EQ(plan.order, (std::vector<std::string>{"b1", "d1"}));
    if (freed_already) {
      ASSERT_NE(StartOf(plan, "b1"), nullptr);
      EXPECT_EQ(StartOf(plan, "b1")->nodes[0].node_id, "n1");
    } else {
      EXPECT_EQ(ReasonOf(plan, "b1"), "waiting for the preemption of a0");
    }
    ASSERT_EQ(plan.preemptions.size(), 1u);
    EXPECT_EQ(plan.preemptions[0].beneficiary_job_id, "d1");  // d1 reclaims for itself
    EXPECT_EQ(plan.preemptions[0].victim_job_id, "a1");
  }
}

// Many reclaims of one shape in one pass (the planner finds the later ones from per-node costs instead of
// walking the victims): 50 nodes x 4 slots, each held by four 1-slot jobs of team a with distinct work lost;
// 40 jobs of b each need a whole node. Victims are the fewest (the four jobs of one node), and the walk in
// preference order (least work lost first) completes first the node whose most-work-lost job loses least:
// the k-th beneficiary gets the node with the k-th smallest such maximum.
TEST(Planner, ManyReclaimsOfOneShapeTakeNodesInTheWalksOrder) {
  std::mt19937 rng(15);
  std::vector<int64_t> lost(200);
  for (size_t i = 0; i < lost.size(); ++i) lost[i] = static_cast<int64_t>(i + 1) * 1000;
  std::shuffle(lost.begin(), lost.end(), rng);
  PlannerInput in;
  in.now_ms = kNow;
  std::vector<std::pair<int64_t, std::vector<std::string>>> nodes;  // (most work lost, its jobs)
  for (int n = 0; n < 50; ++n) {
    in.nodes.push_back(Node(Id("node", n), 4, 4));
    nodes.push_back({0, {}});
    for (int k = 0; k < 4; ++k) {
      const size_t j = static_cast<size_t>(n * 4 + k);
      in.running.push_back(Running(Id("a", j), "a", {{Id("node", n), 1}}));
      in.running.back().last_checkpoint_ms = kNow - lost[j];
      nodes.back().first = std::max(nodes.back().first, lost[j]);
      nodes.back().second.push_back(Id("a", j));
    }
  }
  for (int b = 0; b < 40; ++b) in.pending.push_back(Pending(Id("b", b), "b", 1, 4, static_cast<uint64_t>(b)));
  in.teams = {Team("a"), Team("b", {{"", 160, 0}})};
  std::sort(nodes.begin(), nodes.end());

  const SchedulePlan plan = PlanSchedule(in);
  ASSERT_EQ(plan.preemptions.size(), 40u * 4);
  for (size_t b = 0; b < 40; ++b) {
    std::vector<std::string> victims;
    for (size_t k = 0; k < 4; ++k) {
      const Preemption& p = plan.preemptions[b * 4 + k];
      EXPECT_EQ(p.beneficiary_job_id, Id("b", b));
      victims.push_back(p.victim_job_id);
    }
    std::sort(victims.begin(), victims.end());
    std::vector<std::string> expected = nodes[b].second;
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(victims, expected) << "beneficiary " << b;
  }
}

TEST(Planner, GuaranteesApplyPerLabelPool) {
  auto job = Pending("b1", "b", 1, 4, 1);
  job.node_selector = {{"gpu", "h100"}};
  auto in =
      Input({Node("c", 4, 4), Node("h", 4, 4, {{"gpu", "h100"}})},
            {Running("a-cpu", "a", {{"c", 4}}, 60 * kMinute, 0, -9), Running("a-h100", "a", {{"h", 4}}, 60 * kMinute)},
            {job}, {Team("b", {{"gpu=h100", 4, 0}})});
  EXPECT_EQ(Victims(PlanSchedule(in)), (std::vector<std::string>{"a-h100"}));
  in.pending[0].node_selector.clear();  // not pinned: only the "" pool matters, where b has no guarantee
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
}

// y1 finds no victim (v's job is too young; x and w are within their guarantees on the cluster). px then
// reclaims w's slots on the h100 pool, and holding them makes x borrow on the cluster: y2, of y1's shape, now
// finds x's job as a victim (a failed reclaim is retried once something can make it succeed).
TEST(Planner, AReclaimThatMakesItsTeamBorrowLetsAFailedShapeTryAgain) {
  auto px = Pending("px", "x", 1, 4, 2);
  px.node_selector = {{"gpu", "h100"}};
  const int64_t limit = 180 * kMinute;
  auto in =
      Input({Node("n1", 4, 4), Node("h1", 4, 4, {{"gpu", "h100"}}), Node("n2", 4, 4)},
            {Running("rx", "x", {{"n1", 4}}, 60 * kMinute, limit), Running("rw", "w", {{"h1", 4}}, 60 * kMinute, limit),
             Running("rv", "v", {{"n2", 4}}, 1 * kMinute, limit)},
            {Pending("y1", "y", 1, 4, 1), px, Pending("y2", "y", 1, 4, 3, 30 * kMinute)},
            {Team("x", {{"", 4, 0}, {"gpu=h100", 4, 0}}, 1e9), Team("y", {{"", 4, 0}}, 0), Team("w", {{"", 4, 0}}, 1e9),
             Team("v", {}, 1e9)});
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"y1", "px", "y2"}));
  EXPECT_EQ(Victims(plan), (std::vector<std::string>{"rw", "rx"}));
  ASSERT_EQ(plan.preemptions.size(), 2u);
  EXPECT_EQ(plan.preemptions[0].beneficiary_job_id, "px");
  EXPECT_EQ(plan.preemptions[1].beneficiary_job_id, "y2");
  EXPECT_EQ(ReasonOf(plan, "y2"), "waiting for the preemption of rx");
}

TEST(Planner, NoVictimSetMeansNobodyIsPreempted) {
  auto in = ReclaimCluster();
  in.running[1].preemptible = false;
  in.pending[0].gang = {1, 4, 1};
  in.running[0].slots_by_node = {{"n1", 2}};  // a-old holds only half of n1; the rest is held by nobody known
  in.nodes[0].free_slots = {};
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
}

// ---- time limits ----

TEST(Planner, StopsJobsPastTheirTimeLimit) {
  auto in = Input({Node("n1", 4, 4)},
                  {Running("over", "a", {{"n1", 2}}, 10 * kMinute, 10 * kMinute),
                   Running("under", "a", {{"n1", 2}}, 10 * kMinute, 11 * kMinute)},
                  {});
  in.running[0].last_checkpoint_ms = kNow - kMinute;
  auto plan = PlanSchedule(in);
  ASSERT_EQ(plan.preemptions.size(), 1u);
  EXPECT_EQ(plan.preemptions[0].victim_job_id, "over");
  EXPECT_EQ(plan.preemptions[0].kind, PreemptionKind::kTimeLimit);
  EXPECT_TRUE(plan.preemptions[0].beneficiary_job_id.empty());
  EXPECT_EQ(plan.preemptions[0].work_lost_ms, kMinute);
  in.running[0].being_preempted = true;  // already stopping: not again
  EXPECT_TRUE(PlanSchedule(in).preemptions.empty());
}

}  // namespace
}  // namespace anneal::coordinator
