// The pure scheduler (coordinator/planner.h): quotas and borrowing, fair-share order, EASY backfill, reclaim
// preemption, time limits, node labels and the explanations of pending jobs.
#include "coordinator/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace anneal::coordinator {
namespace {

constexpr int64_t kNow = 1'000'000'000;
constexpr int64_t kMinute = 60'000;

PlannerNode Node(const std::string& id, uint32_t total, uint32_t used, std::map<std::string, std::string> labels = {}) {
  PlannerNode n;
  n.node_id = id;
  n.total_slots = total;
  n.labels = std::move(labels);
  for (uint32_t s = used; s < total; ++s) n.free_slots.push_back(s);
  return n;
}

RunningJob Running(const std::string& id, const std::string& team, std::map<std::string, uint32_t> slots,
                   int64_t started_ago_ms = 60 * kMinute, int64_t time_limit_ms = 0, int32_t priority = 0) {
  RunningJob r;
  r.job_id = id;
  r.team = team;
  r.priority = priority;
  r.slots_by_node = std::move(slots);
  r.started_at_ms = kNow - started_ago_ms;
  r.time_limit_ms = time_limit_ms;
  return r;
}

PendingJob Pending(const std::string& id, const std::string& team, uint32_t nodes, uint32_t per_node, uint64_t seq,
                   int64_t time_limit_ms = 0) {
  PendingJob p;
  p.job_id = id;
  p.team = team;
  p.gang = {nodes, per_node, 1};
  p.submit_seq = seq;
  p.time_limit_ms = time_limit_ms;
  p.submitted_at_ms = kNow - 1000;
  return p;
}

TeamPolicy Team(const std::string& name, std::vector<QuotaEntry> quotas = {}, double usage = 0, double weight = 1) {
  TeamPolicy t;
  t.name = name;
  t.weight = weight;
  t.decayed_usage = usage;
  t.quotas = std::move(quotas);
  return t;
}

PlannerInput Input(std::vector<PlannerNode> nodes, std::vector<RunningJob> running, std::vector<PendingJob> pending,
                   std::vector<TeamPolicy> teams = {}) {
  PlannerInput in;
  in.now_ms = kNow;
  in.nodes = std::move(nodes);
  in.running = std::move(running);
  in.pending = std::move(pending);
  in.teams = std::move(teams);
  return in;
}

const PlannedStart* StartOf(const SchedulePlan& plan, const std::string& id) {
  for (const auto& s : plan.starts) {
    if (s.job_id == id) return &s;
  }
  return nullptr;
}

std::string ReasonOf(const SchedulePlan& plan, const std::string& id) {
  auto it = plan.pending.find(id);
  return it == plan.pending.end() ? "<started>" : it->second.reason;
}

// Built with append, not "x" + std::to_string(i): GCC 12 warns falsely (-Wrestrict) on the latter at -O2.
std::string Id(const char* prefix, uint64_t n) {
  return std::string(prefix).append(std::to_string(n));
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<std::string> Victims(const SchedulePlan& plan) {
  std::vector<std::string> ids;
  for (const auto& p : plan.preemptions) {
    if (p.kind == PreemptionKind::kReclaim) ids.push_back(p.victim_job_id);
  }
  return ids;
}

// ---- placement ----

TEST(Planner, StartsWhatFitsWithBestFit) {
  auto plan = PlanSchedule(Input({Node("a", 8, 0), Node("b", 8, 6)}, {}, {Pending("j", "t", 1, 2, 1)}));
  ASSERT_EQ(plan.starts.size(), 1u);
  ASSERT_EQ(plan.starts[0].nodes.size(), 1u);
  EXPECT_EQ(plan.starts[0].nodes[0].node_id, "b");
  EXPECT_EQ(plan.starts[0].nodes[0].slots, (std::vector<uint32_t>{6, 7}));
  EXPECT_TRUE(plan.pending.empty());
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
  EXPECT_EQ(plan.pending.at("b1").position, 2u);
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

// ---- backfill ----

// n1: 8 slots held by x until +100 s. n2: 8 slots, 6 free, y holds 2 until +50 s. n3: 4 slots, z holds them
// with no time limit. The head job needs 2 nodes x 4 slots: n2 now, n1 at +100 s.
PlannerInput BackfillCluster(std::vector<PendingJob> behind) {
  std::vector<PendingJob> pending = {Pending("head", "t", 2, 4, 1)};
  for (auto& p : behind) pending.push_back(std::move(p));
  return Input({Node("n1", 8, 8), Node("n2", 8, 2), Node("n3", 4, 4)},
               {Running("x", "u", {{"n1", 8}}, kMinute, kMinute + 100'000),
                Running("y", "u", {{"n2", 2}}, kMinute, kMinute + 50'000), Running("z", "u", {{"n3", 4}})},
               std::move(pending));
}

TEST(Planner, TheFirstBlockedJobGetsAReservationFromExpectedEnds) {
  auto plan = PlanSchedule(BackfillCluster({}));
  ASSERT_TRUE(plan.reservation.has_value());
  EXPECT_EQ(plan.reservation->job_id, "head");
  EXPECT_EQ(plan.reservation->at_ms, kNow + 100'000);
  EXPECT_EQ(plan.reservation->slots_by_node, (std::map<std::string, uint32_t>{{"n1", 4}, {"n2", 4}}));
  EXPECT_EQ(plan.pending.at("head").estimated_start_ms, kNow + 100'000);
  EXPECT_TRUE(Has(ReasonOf(plan, "head"), "waiting for 2 node(s) with 4 free slot(s); 1 have them now"))
      << ReasonOf(plan, "head");
}

TEST(Planner, BackfillsJobsThatEndBeforeTheReservation) {
  // n2 has 6 free: the reservation needs 4 of its 8 at +100 s, so jobs that outlive it may take only 4 now.
  auto plan =
      PlanSchedule(BackfillCluster({Pending("long", "t", 1, 4, 2, 200'000), Pending("long2", "t", 1, 2, 3, 200'000),
                                    Pending("short", "t", 1, 2, 4, 90'000)}));
  EXPECT_EQ(StartOf(plan, "head"), nullptr);
  EXPECT_NE(StartOf(plan, "long"), nullptr);  // the 4 slots the reservation leaves
  EXPECT_EQ(StartOf(plan, "long2"), nullptr);
  EXPECT_TRUE(Has(ReasonOf(plan, "long2"), "reserved for job head until")) << ReasonOf(plan, "long2");
  EXPECT_NE(StartOf(plan, "short"), nullptr);  // same 2 slots, but it ends at +90 s, before the reservation
}

TEST(Planner, AJobWithoutTimeLimitBackfillsOnlyIntoSlotsTheReservationDoesNotNeed) {
  auto plan = PlanSchedule(BackfillCluster({Pending("open1", "t", 1, 3, 2), Pending("open2", "t", 1, 3, 3)}));
  ASSERT_NE(StartOf(plan, "open1"), nullptr);
  EXPECT_EQ(StartOf(plan, "open1")->nodes[0].node_id, "n2");
  EXPECT_EQ(StartOf(plan, "open2"), nullptr);  // 3 free on n2 now, but the head needs 2 of them at +100 s
  EXPECT_TRUE(Has(ReasonOf(plan, "open2"), "reserved for job head")) << ReasonOf(plan, "open2");
}

TEST(Planner, AReservationWithUnknownTimeStillHoldsItsSlots) {
  // The head needs n3's 4 slots, held by z with no time limit: no time known, but n3 is still reserved.
  auto in = BackfillCluster({Pending("short", "t", 1, 2, 2, 1000)});
  in.pending[0].gang = {3, 4, 1};
  auto plan = PlanSchedule(in);
  ASSERT_TRUE(plan.reservation.has_value());
  EXPECT_EQ(plan.reservation->at_ms, 0);
  EXPECT_EQ(plan.reservation->slots_by_node.size(), 3u);
  EXPECT_EQ(plan.pending.at("head").estimated_start_ms, 0);
  EXPECT_TRUE(Has(ReasonOf(plan, "head"), "unknown time")) << ReasonOf(plan, "head");
  // short ends in 1 s but no reservation time is known, so it may only use what the head leaves: 2 on n2.
  ASSERT_NE(StartOf(plan, "short"), nullptr);
  EXPECT_EQ(StartOf(plan, "short")->nodes[0].node_id, "n2");
}

TEST(Planner, StrictOrderWhenBackfillIsOff) {
  auto in = BackfillCluster({Pending("short", "t", 1, 2, 2, 1000)});
  in.config.backfill = false;
  auto plan = PlanSchedule(in);
  EXPECT_TRUE(plan.starts.empty());
  EXPECT_TRUE(Has(ReasonOf(plan, "short"), "behind job head")) << ReasonOf(plan, "short");
  in.config.backfill = true;
  EXPECT_NE(StartOf(PlanSchedule(in), "short"), nullptr);
}

TEST(Planner, EstimatesWhenWaitingJobsCouldStart) {
  auto plan = PlanSchedule(
      BackfillCluster({Pending("wide", "t", 1, 8, 2), Pending("three", "t", 3, 4, 3), Pending("five", "t", 1, 5, 4)}));
  // wide needs a whole node: n2 has 8 free once y ends at +50 s (a lower bound: the head is ahead of it).
  EXPECT_EQ(plan.pending.at("wide").estimated_start_ms, kNow + 50'000);
  EXPECT_EQ(ReasonOf(plan, "wide"), "waiting for 1 node(s) with 8 free slot(s); 0 have them now");
  // three needs n3 too, held by a job without a time limit: unknown.
  EXPECT_EQ(plan.pending.at("three").estimated_start_ms, 0);
  // five fits n2's 6 free slots, but only 4 are not reserved: it may start when the head does.
  EXPECT_TRUE(Has(ReasonOf(plan, "five"), "reserved for job head")) << ReasonOf(plan, "five");
  EXPECT_EQ(plan.pending.at("five").estimated_start_ms, kNow + 100'000);
}

TEST(Planner, ExplainsJobsBehindOtherTeams) {
  auto in = BackfillCluster({Pending("mine", "t", 1, 8, 2), Pending("theirs", "v", 1, 8, 3)});
  in.teams = {Team("t", {}, 0), Team("v", {}, 1e12)};
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"head", "mine", "theirs"}));
  EXPECT_TRUE(Has(ReasonOf(plan, "theirs"), "behind 2 job(s) of teams with lower usage; waiting for 1 node(s)"))
      << ReasonOf(plan, "theirs");
  EXPECT_FALSE(Has(ReasonOf(plan, "mine"), "behind")) << ReasonOf(plan, "mine");
  EXPECT_EQ(plan.pending.at("theirs").position, 3u);
}

// Random small clusters: every running job and every backfilled job honours its time limit. Simulated forward
// to the reservation time, the reserved job's gang fits on the slots the reservation names.
TEST(Planner, BackfillNeverDelaysTheReservation) {
  std::mt19937 rng(2026);
  int checked = 0;
  for (int round = 0; round < 2000; ++round) {
    PlannerInput in;
    in.now_ms = kNow;
    const int node_count = 2 + static_cast<int>(rng() % 4);
    int job_seq = 0;
    for (int i = 0; i < node_count; ++i) {
      const uint32_t total = 2 + rng() % 7;
      PlannerNode node = Node(Id("n", i), total, 0);
      uint32_t next = 0;
      while (next < total && rng() % 3 != 0) {  // fill with single-node running jobs
        const uint32_t take = std::min<uint32_t>(total - next, 1 + rng() % 4);
        const int64_t limit = 10'000 + static_cast<int64_t>(rng() % 200) * 1000;
        in.running.push_back(Running(Id("r", job_seq++), "u", {{node.node_id, take}}, 5000, limit));
        next += take;
      }
      node.free_slots.clear();
      for (uint32_t s = next; s < total; ++s) node.free_slots.push_back(s);
      in.nodes.push_back(std::move(node));
    }
    const int pending_count = 1 + static_cast<int>(rng() % 8);
    for (int j = 0; j < pending_count; ++j) {
      const int64_t limit = rng() % 3 == 0 ? 0 : 1000 * static_cast<int64_t>(1 + rng() % 300);
      in.pending.push_back(Pending(Id("p", j), "t", 1 + rng() % 2, 1 + rng() % 6, j, limit));
    }
    const SchedulePlan plan = PlanSchedule(in);
    if (!plan.reservation || plan.reservation->at_ms == 0) continue;
    const int64_t at = plan.reservation->at_ms;
    // Free at `at`: free now, minus what started now and is still running then, plus what ended by then.
    std::map<std::string, int64_t> free;
    for (const auto& n : in.nodes) free[n.node_id] = static_cast<int64_t>(n.free_slots.size());
    for (const auto& r : in.running) {
      if (r.expected_end_ms() <= at) {
        for (const auto& [node, count] : r.slots_by_node) free[node] += count;
      }
    }
    for (const auto& s : plan.starts) {
      auto job =
          std::find_if(in.pending.begin(), in.pending.end(), [&](const auto& p) { return p.job_id == s.job_id; });
      const bool still_running = job->time_limit_ms == 0 || kNow + job->time_limit_ms > at;
      for (const auto& n : s.nodes) {
        if (still_running) free[n.node_id] -= static_cast<int64_t>(n.slots.size());
      }
    }
    const auto reserved = std::find_if(in.pending.begin(), in.pending.end(),
                                       [&](const auto& p) { return p.job_id == plan.reservation->job_id; });
    ASSERT_EQ(plan.reservation->slots_by_node.size(), reserved->gang.nodes) << "round " << round;
    for (const auto& [node, count] : plan.reservation->slots_by_node) {
      EXPECT_EQ(count, reserved->gang.ranks_per_node);
      EXPECT_GE(free[node], count) << "round " << round << ": backfill took reserved slots on " << node;
    }
    ++checked;
  }
  EXPECT_GT(checked, 200);  // the property was exercised, not skipped
}

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
  for (const auto& [id, why] : plan.pending) EXPECT_FALSE(why.reason.empty()) << id;
}

}  // namespace
}  // namespace anneal::coordinator
