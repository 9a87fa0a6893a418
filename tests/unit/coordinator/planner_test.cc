// The pure scheduler (coordinator/planner.h): placement, node labels, quotas and fair-share order. Backfill is in
// planner_backfill_test.cc, preemption and time limits in planner_preempt_test.cc.
#include "coordinator/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "planner_test_helpers.h"

namespace anneal::coordinator {
namespace {

using namespace planner_testing;  // NOLINT: the test builders

// ---- placement ----

TEST(Planner, StartsWhatFitsWithBestFit) {
  auto plan = PlanSchedule(Input({Node("a", 8, 0), Node("b", 8, 6)}, {}, {Pending("j", "t", 1, 2, 1)}));
  ASSERT_EQ(plan.starts.size(), 1u);
  ASSERT_EQ(plan.starts[0].nodes.size(), 1u);
  EXPECT_EQ(plan.starts[0].nodes[0].node_id, "b");
  EXPECT_EQ(plan.starts[0].nodes[0].slots, (std::vector<uint32_t>{6, 7}));
  EXPECT_TRUE(plan.pending.empty());
}

TEST(Planner, PreferredNodesThatFitComeBeforeBestFit) {
  // "a" holds the job's checkpoint: it is taken although "b" fits better; rank 0 goes there.
  auto job = Pending("j", "t", 2, 2, 1);
  job.preferred_nodes = {"a", "gone", "a"};  // a node no longer schedulable and a duplicate are ignored
  auto plan = PlanSchedule(Input({Node("a", 8, 0), Node("b", 8, 6), Node("c", 8, 5)}, {}, {job}));
  ASSERT_EQ(plan.starts.size(), 1u);
  ASSERT_EQ(plan.starts[0].nodes.size(), 2u);
  EXPECT_EQ(plan.starts[0].nodes[0].node_id, "a");
  EXPECT_EQ(plan.starts[0].nodes[1].node_id, "b");  // the rest best fit
}

TEST(Planner, APreferredNodeThatDoesNotFitOrLacksTheLabelIsPassedOver) {
  auto full = Pending("full", "t", 1, 4, 1);
  full.preferred_nodes = {"a"};  // 2 free of 4 needed
  auto unlabelled = Pending("unlabelled", "t", 1, 1, 2);
  unlabelled.node_selector = {{"gpu", "h100"}};
  unlabelled.preferred_nodes = {"a"};  // fits, but does not carry gpu=h100
  auto plan = PlanSchedule(Input({Node("a", 8, 6), Node("b", 8, 0, {{"gpu", "h100"}})}, {}, {full, unlabelled}));
  ASSERT_NE(StartOf(plan, "full"), nullptr);
  EXPECT_EQ(StartOf(plan, "full")->nodes[0].node_id, "b");
  ASSERT_NE(StartOf(plan, "unlabelled"), nullptr);
  EXPECT_EQ(StartOf(plan, "unlabelled")->nodes[0].node_id, "b");
}

TEST(Planner, RankZeroNeedsAFreePortEvenOnAPreferredNode) {
  auto job = Pending("j", "t", 2, 2, 1);
  job.preferred_nodes = {"a"};
  PlannerNode a = Node("a", 8, 0);
  a.has_free_port = false;
  auto plan = PlanSchedule(Input({a, Node("b", 8, 4)}, {}, {job}));
  ASSERT_EQ(plan.starts.size(), 1u);
  ASSERT_EQ(plan.starts[0].nodes.size(), 2u);
  EXPECT_EQ(plan.starts[0].nodes[0].node_id, "b");  // rank 0 where a port is free
  EXPECT_EQ(plan.starts[0].nodes[1].node_id, "a");  // the preferred node still holds the others
}

TEST(Planner, PlacementMatchesPlaceGang) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    std::vector<PlannerNode> nodes;
    std::vector<NodeCapacity> caps;
    const int count = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < count; ++i) {
      const uint32_t total = 1 + rng() % 8;
      PlannerNode n = Node(Id("n", rng() % 100), total, rng() % (total + 1));
      if (std::any_of(nodes.begin(), nodes.end(), [&](const auto& o) { return o.node_id == n.node_id; })) continue;
      n.has_free_port = rng() % 4 != 0;
      caps.push_back({n.node_id, n.total_slots, n.free_slots, n.has_free_port});
      nodes.push_back(std::move(n));
    }
    GangRequest gang{1 + static_cast<uint32_t>(rng() % 3), 1 + static_cast<uint32_t>(rng() % 6), 1};
    PendingJob job = Pending("j", "t", gang.nodes, gang.ranks_per_node, 1);
    const PlacementResult expected = PlaceGang(gang, caps);
    const SchedulePlan plan = PlanSchedule(Input(nodes, {}, {job}));
    ASSERT_EQ(plan.starts.size() == 1, expected.outcome == PlacementOutcome::kPlaced) << "round " << round;
    if (plan.starts.empty()) continue;
    ASSERT_EQ(plan.starts[0].nodes.size(), expected.nodes.size());
    for (size_t i = 0; i < expected.nodes.size(); ++i) {
      EXPECT_EQ(plan.starts[0].nodes[i].node_id, expected.nodes[i].node_id) << "round " << round;
      EXPECT_EQ(plan.starts[0].nodes[i].slots, expected.nodes[i].slots) << "round " << round;
    }
  }
}

TEST(Planner, AJobThatCanNeverFitIsExplainedAndBlocksNobody) {
  auto plan =
      PlanSchedule(Input({Node("a", 4, 0)}, {}, {Pending("huge", "t", 1, 16, 1), Pending("small", "t", 1, 2, 2)}));
  EXPECT_NE(StartOf(plan, "small"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "huge"), "16 slot(s)")) << ReasonOf(plan, "huge");
  EXPECT_FALSE(plan.reservation.has_value());
}

TEST(Planner, NodeSelectorPlacesOnlyOnMatchingNodes) {
  auto job = Pending("j", "t", 1, 2, 1);
  job.node_selector = {{"gpu", "h100"}};
  auto plan = PlanSchedule(Input({Node("a", 8, 6), Node("b", 8, 0, {{"gpu", "h100"}})}, {}, {job}));
  ASSERT_EQ(plan.starts.size(), 1u);
  EXPECT_EQ(plan.starts[0].nodes[0].node_id, "b");  // a fits better but lacks the label
}

TEST(Planner, ReportsThatNoNodeHasTheLabel) {
  auto job = Pending("j", "t", 1, 2, 1);
  job.node_selector = {{"gpu", "a100"}};
  auto plan = PlanSchedule(Input({Node("a", 8, 0, {{"gpu", "h100"}})}, {}, {job, Pending("k", "t", 1, 2, 2)}));
  EXPECT_EQ(ReasonOf(plan, "j"), "no node has label gpu=a100");
  EXPECT_NE(StartOf(plan, "k"), nullptr);
}

TEST(Planner, NodeMatchesAndPools) {
  const std::map<std::string, std::string> labels = {{"gpu", "h100"}, {"zone", "x"}};
  EXPECT_TRUE(NodeMatches(labels, {{"gpu", "h100"}}));
  EXPECT_FALSE(NodeMatches(labels, {{"gpu", "h100"}, {"zone", "y"}}));
  EXPECT_TRUE(NodeMatches(labels, {}));
  EXPECT_TRUE(NodeInPool(labels, ""));
  EXPECT_TRUE(NodeInPool(labels, "zone=x"));
  EXPECT_FALSE(NodeInPool(labels, "gpu=a100"));
  EXPECT_FALSE(NodeInPool(labels, "gpu"));
}

TEST(Planner, PendingIsListedInInputOrderAndFoundById) {
  // Input order differs from the queue order (submit_seq): the list keeps the input's, positions the queue's.
  auto plan = PlanSchedule(
      Input({Node("a", 4, 0)}, {},
            {Pending("late", "t", 1, 4, 3), Pending("never", "t", 1, 8, 1), Pending("fits", "t", 1, 2, 2)}));
  ASSERT_EQ(plan.starts.size(), 1u);
  EXPECT_EQ(plan.starts[0].job_id, "fits");
  ASSERT_EQ(plan.pending.size(), 2u);
  EXPECT_EQ(plan.pending[0].job_id, "late");
  EXPECT_EQ(plan.pending[1].job_id, "never");
  const PendingExplanation* late = FindPending(plan, "late");
  ASSERT_NE(late, nullptr);
  EXPECT_EQ(late, &plan.pending[0]);
  EXPECT_EQ(late->position, 3u);
  EXPECT_EQ(PendingOf(plan, "never").position, 1u);
  EXPECT_EQ(FindPending(plan, "fits"), nullptr);    // started
  EXPECT_EQ(FindPending(plan, "nobody"), nullptr);  // not in the input
}

TEST(Planner, RunningJobsAreFoundOnTheirNodesAmongMany) {
  // 300 full nodes; the job on n217 ends first, so the reservation is there and then (node ids resolved through
  // the pass's node index, every one of them probed).
  std::vector<PlannerNode> nodes;
  std::vector<RunningJob> running;
  for (int i = 0; i < 300; ++i) {
    const std::string id = Id("n", static_cast<uint64_t>(i));
    nodes.push_back(Node(id, 2, 2));
    const int64_t limit = (i == 217 ? 30 : 90 + i) * kMinute;
    running.push_back(Running(Id("r", static_cast<uint64_t>(i)), "t", {{id, 2}}, 10 * kMinute, limit));
  }
  auto plan = PlanSchedule(Input(std::move(nodes), std::move(running), {Pending("next", "t", 1, 2, 1)}));
  EXPECT_TRUE(plan.starts.empty());
  ASSERT_TRUE(plan.reservation.has_value());
  EXPECT_EQ(plan.reservation->at_ms, kNow + 20 * kMinute);
  EXPECT_EQ(plan.reservation->slots_by_node, (std::map<std::string, uint32_t>{{"n217", 2}}));
}

// ---- quotas ----

TEST(Planner, MaxLimitsBorrowing) {
  auto in = Input({Node("a", 8, 6), Node("b", 8, 0)}, {Running("r", "x", {{"a", 6}})},
                  {Pending("over", "x", 1, 4, 1), Pending("other", "y", 1, 4, 2)}, {Team("x", {{"", 0, 8}})});
  auto plan = PlanSchedule(in);
  EXPECT_EQ(StartOf(plan, "over"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "over"), "over quota: team x holds 6 of its max 8 slots on the cluster"))
      << ReasonOf(plan, "over");
  EXPECT_NE(StartOf(plan, "other"), nullptr);  // over quota blocks nobody
  in.teams = {Team("x", {{"", 0, 10}})};
  EXPECT_NE(StartOf(PlanSchedule(in), "over"), nullptr);
}

TEST(Planner, QuotaOnALabelPoolCountsOnlyThatPool) {
  auto pinned = Pending("pinned", "x", 1, 2, 1);
  pinned.node_selector = {{"gpu", "h100"}};
  auto in = Input({Node("h", 8, 4, {{"gpu", "h100"}}), Node("c", 8, 0)}, {Running("r", "x", {{"h", 4}})},
                  {pinned, Pending("free", "x", 1, 2, 2)}, {Team("x", {{"gpu=h100", 0, 4}})});
  auto plan = PlanSchedule(in);
  EXPECT_TRUE(Has(ReasonOf(plan, "pinned"), "on pool gpu=h100")) << ReasonOf(plan, "pinned");
  EXPECT_NE(StartOf(plan, "free"), nullptr);  // charged to "" only, where x has no limit
}

TEST(Planner, SlotsStartedInThePassCountTowardTheMax) {
  auto plan = PlanSchedule(Input({Node("a", 8, 0)}, {}, {Pending("one", "x", 1, 3, 1), Pending("two", "x", 1, 3, 2)},
                                 {Team("x", {{"", 0, 4}})}));
  EXPECT_NE(StartOf(plan, "one"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "two"), "holds 3 of its max 4")) << ReasonOf(plan, "two");
}

// ---- fair share ----

TEST(Planner, OrderFavoursTheTeamFurthestBelowItsWeightedShare) {
  auto in = Input({Node("a", 1, 0)}, {}, {Pending("a1", "a", 1, 1, 1), Pending("b1", "b", 1, 1, 2)},
                  {Team("a", {}, 1000), Team("b", {}, 10)});
  EXPECT_EQ(PlanSchedule(in).order.front(), "b1");
  in.teams = {Team("a", {}, 100, 4), Team("b", {}, 60, 1)};  // 25 per weight vs 60
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order.front(), "a1");
  EXPECT_NE(StartOf(plan, "a1"), nullptr);
  EXPECT_EQ(PendingOf(plan, "b1").position, 2u);
}

TEST(Planner, SlotsHeldNowCountTowardUsage) {
  auto in = Input({Node("a", 8, 4)}, {Running("r", "a", {{"a", 4}})},
                  {Pending("a1", "a", 1, 1, 1), Pending("b1", "b", 1, 1, 2)}, {Team("a"), Team("b", {}, 1000)});
  EXPECT_EQ(PlanSchedule(in).order.front(), "b1");  // 4 slots x 3600 s outweighs 1000 slot-seconds
  in.config.share_horizon_s = 1;
  EXPECT_EQ(PlanSchedule(in).order.front(), "a1");
}

TEST(Planner, OnePassInterleavesTeams) {
  auto plan = PlanSchedule(Input({Node("a", 8, 0)}, {},
                                 {Pending("a1", "a", 1, 1, 1), Pending("a2", "a", 1, 1, 2), Pending("a3", "a", 1, 1, 3),
                                  Pending("b1", "b", 1, 1, 4), Pending("b2", "b", 1, 1, 5)}));
  EXPECT_EQ(plan.order, (std::vector<std::string>{"a1", "b1", "a2", "b2", "a3"}));
}

TEST(Planner, WithinATeamPriorityThenFifo) {
  auto high = Pending("high", "a", 1, 1, 3);
  high.priority = 5;
  auto plan = PlanSchedule(
      Input({Node("a", 1, 0)}, {}, {Pending("first", "a", 1, 1, 1), high, Pending("second", "a", 1, 1, 2)}));
  EXPECT_EQ(plan.order, (std::vector<std::string>{"high", "first", "second"}));
  EXPECT_NE(StartOf(plan, "high"), nullptr);
}

// ---- guarantees first ----

TEST(Planner, ACoveredJobOfATeamWithHighUsageGoesBeforeAnUncoveredJobOfATeamWithLowUsage) {
  auto in = Input({Node("a", 4, 0)}, {}, {Pending("low", "y", 1, 4, 1), Pending("high", "x", 1, 4, 2)},
                  {Team("x", {{"", 4, 0}}, 1e9), Team("y", {}, 0)});
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"high", "low"}));
  EXPECT_NE(StartOf(plan, "high"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "low"), "waiting for 1 node(s)")) << ReasonOf(plan, "low");
  in.teams = {Team("x", {}, 1e9), Team("y", {}, 0)};  // no guarantee: fair share alone
  EXPECT_EQ(PlanSchedule(in).order, (std::vector<std::string>{"low", "high"}));
}

TEST(Planner, TheGuaranteeCoversJobsOnlyUpToItsSlotsChargedAsTheyAreOrdered) {
  // x holds 2 of its 4 guaranteed: x1 (2 slots) is covered, x2 and x3 would borrow and keep fair-share order.
  auto plan = PlanSchedule(Input({Node("a", 8, 2), Node("b", 8, 8)}, {Running("r", "x", {{"a", 2}})},
                                 {Pending("x1", "x", 1, 2, 1), Pending("x2", "x", 1, 2, 2), Pending("x3", "x", 1, 1, 3),
                                  Pending("y1", "y", 1, 2, 4)},
                                 {Team("x", {{"", 4, 0}}, 1e9), Team("y", {}, 0)}));
  EXPECT_EQ(plan.order, (std::vector<std::string>{"x1", "y1", "x2", "x3"}));
}

TEST(Planner, AGuaranteeOnALabelPoolCoversOnlyJobsThatSelectIt) {
  auto pinned = Pending("pinned", "x", 1, 4, 2);
  pinned.node_selector = {{"gpu", "h100"}};
  auto in = Input({Node("h", 4, 0, {{"gpu", "h100"}}), Node("c", 4, 0)}, {},
                  {Pending("anywhere", "x", 1, 4, 1), pinned, Pending("low", "y", 1, 4, 3)},
                  {Team("x", {{"gpu=h100", 4, 0}}, 1e9), Team("y", {}, 0)});
  auto plan = PlanSchedule(in);
  // pinned's matching pools are "" and gpu=h100, where x is guaranteed 4; "anywhere" matches "" only.
  EXPECT_EQ(plan.order, (std::vector<std::string>{"pinned", "low", "anywhere"}));
  const PlannedStart* start = StartOf(plan, "pinned");
  ASSERT_NE(start, nullptr);
  EXPECT_EQ(start->nodes.at(0).node_id, "h");
  EXPECT_NE(StartOf(plan, "low"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "anywhere"), "waiting for 1 node(s)")) << ReasonOf(plan, "anywhere");
}

TEST(Planner, AJobThatCanNeverFitIsNotCoveredAndUsesNoGuarantee) {
  // Either of "missing" (no node has its label) or "wide" (3 nodes of a 2-node cluster), if covered, would
  // use 2 or 3 of x's 4 guaranteed slots and leave x1 uncovered, behind y1.
  auto missing = Pending("missing", "x", 1, 2, 1);
  missing.node_selector = {{"gpu", "none"}};
  auto plan = PlanSchedule(
      Input({Node("a", 4, 0), Node("b", 4, 4)}, {Running("r", "y", {{"b", 4}})},
            {missing, Pending("wide", "x", 3, 1, 2), Pending("x1", "x", 1, 4, 3), Pending("y1", "y", 1, 4, 4)},
            {Team("x", {{"", 4, 0}}, 1e9), Team("y", {}, 0)}));
  EXPECT_EQ(plan.order.front(), "x1");
  EXPECT_NE(StartOf(plan, "x1"), nullptr);
}

TEST(Planner, ExplainsJobsBehindTeamsWithinTheirGuarantee) {
  // z (guaranteed 8, high usage) and y (low usage) wait ahead of x's job, which nothing covers.
  auto in = Input({Node("a", 8, 8)}, {Running("r", "w", {{"a", 8}})},
                  {Pending("z1", "z", 1, 8, 1), Pending("y1", "y", 1, 8, 2), Pending("x1", "x", 1, 8, 3)},
                  {Team("z", {{"", 8, 0}}, 1e9), Team("y", {}, 0), Team("x", {}, 1e6), Team("w", {}, 1e12)});
  in.config.preemption = false;  // z1 waits for capacity instead of reclaiming w's slots
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"z1", "y1", "x1"}));
  EXPECT_TRUE(Has(ReasonOf(plan, "x1"),
                  "behind 1 job(s) of teams within their guarantee and 1 job(s) of teams with lower usage; "
                  "waiting for 1 node(s)"))
      << ReasonOf(plan, "x1");
  EXPECT_TRUE(Has(ReasonOf(plan, "y1"), "behind 1 job(s) of teams within their guarantee; waiting"))
      << ReasonOf(plan, "y1");
}

// ---- scale ----

// A large random pass keeps its invariants: no node gets more slots than it has free, every pending job not
// started is explained, and the order holds every pending job once.
TEST(Planner, ALargePassNeverOversubscribesANode) {
  std::mt19937 rng(11);
  PlannerInput in;
  in.now_ms = kNow;
  for (int i = 0; i < 500; ++i) in.nodes.push_back(Node(Id("node", i), 8, rng() % 9));
  for (int j = 0; j < 2000; ++j) {
    const uint32_t per_node = 1 + rng() % 8;
    in.pending.push_back(Pending(Id("job", j), Id("team", rng() % 3), 1 + rng() % 4, per_node, j,
                                 rng() % 2 ? 0 : 1000 * (1 + rng() % 1000)));
  }
  const SchedulePlan plan = PlanSchedule(in);
  std::map<std::string, size_t> used;
  for (const auto& s : plan.starts) {
    for (const auto& n : s.nodes) used[n.node_id] += n.slots.size();
  }
  for (const auto& n : in.nodes) EXPECT_LE(used[n.node_id], n.free_slots.size()) << n.node_id;
  EXPECT_FALSE(plan.starts.empty());
  EXPECT_EQ(plan.starts.size() + plan.pending.size(), in.pending.size());
  EXPECT_EQ(plan.order.size(), in.pending.size());
  for (const auto& why : plan.pending) EXPECT_FALSE(plan.Reason(why).empty()) << why.job_id;
}

}  // namespace
}  // namespace anneal::coordinator
