// The pure scheduler's EASY backfill (coordinator/planner.h stage 4): the reservation, what may start before it,
// and the explanations and estimated starts of waiting jobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "coordinator/planner.h"
#include "planner_test_helpers.h"

namespace anneal::coordinator {
namespace {

using namespace planner_testing;  // NOLINT: the test builders

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
  EXPECT_EQ(PendingOf(plan, "head").estimated_start_ms, kNow + 100'000);
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
  EXPECT_EQ(PendingOf(plan, "head").estimated_start_ms, 0);
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
  EXPECT_EQ(PendingOf(plan, "wide").estimated_start_ms, kNow + 50'000);
  EXPECT_EQ(ReasonOf(plan, "wide"), "waiting for 1 node(s) with 8 free slot(s); 0 have them now");
  // three needs n3 too, held by a job without a time limit: unknown.
  EXPECT_EQ(PendingOf(plan, "three").estimated_start_ms, 0);
  // five fits n2's 6 free slots, but only 4 are not reserved: it may start when the head does.
  EXPECT_TRUE(Has(ReasonOf(plan, "five"), "reserved for job head")) << ReasonOf(plan, "five");
  EXPECT_EQ(PendingOf(plan, "five").estimated_start_ms, kNow + 100'000);
}

TEST(Planner, ExplainsJobsBehindOtherTeams) {
  auto in = BackfillCluster({Pending("mine", "t", 1, 8, 2), Pending("theirs", "v", 1, 8, 3)});
  in.teams = {Team("t", {}, 0), Team("v", {}, 1e12)};
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"head", "mine", "theirs"}));
  EXPECT_TRUE(Has(ReasonOf(plan, "theirs"), "behind 2 job(s) of teams with lower usage; waiting for 1 node(s)"))
      << ReasonOf(plan, "theirs");
  EXPECT_FALSE(Has(ReasonOf(plan, "mine"), "behind")) << ReasonOf(plan, "mine");
  EXPECT_EQ(PendingOf(plan, "theirs").position, 3u);
}

// Jobs that wait for the same thing share one text of the plan; each keeps its own "behind ..." counts.
TEST(Planner, WaitingJobsShareTheirReasonTextAndKeepTheirOwnCounts) {
  auto in = BackfillCluster({Pending("t1", "t", 1, 8, 2), Pending("v1", "v", 1, 8, 3), Pending("t2", "t", 1, 8, 4),
                             Pending("v2", "v", 1, 8, 5)});
  in.teams = {Team("t", {}, 0), Team("v", {}, 1e12)};
  auto plan = PlanSchedule(in);
  EXPECT_EQ(plan.order, (std::vector<std::string>{"head", "t1", "t2", "v1", "v2"}));
  const PendingExplanation& t2 = PendingOf(plan, "t2");
  const PendingExplanation& v2 = PendingOf(plan, "v2");
  EXPECT_EQ(t2.text, PendingOf(plan, "t1").text);
  EXPECT_EQ(v2.text, t2.text);
  EXPECT_EQ(ReasonOf(plan, "t2"), "waiting for 1 node(s) with 8 free slot(s); 0 have them now");  // none ahead
  EXPECT_EQ(t2.behind_lower, 0u);
  EXPECT_EQ(v2.behind_lower, 3u);  // the head, t1 and t2 (v1 is of its own team)
  EXPECT_EQ(v2.behind_guaranteed, 0u);
  EXPECT_EQ(ReasonOf(plan, "v2"),
            "behind 3 job(s) of teams with lower usage; waiting for 1 node(s) with 8 free "
            "slot(s); 0 have them now");
}

// AppendReason renders the counts, then the shared text, after what the buffer holds; Reason is the same text.
TEST(Planner, AppendReasonRendersTheCountsThenTheText) {
  SchedulePlan plan;
  plan.reason_texts = {"waiting for 1 node(s) with 8 free slot(s); 0 have them now", "no node has label gpu=x"};
  PendingExplanation why;
  why.text = 0;
  std::string out = "kept: ";
  plan.AppendReason(why, out);
  EXPECT_EQ(out, "kept: waiting for 1 node(s) with 8 free slot(s); 0 have them now");
  why.behind_guaranteed = 12;
  EXPECT_EQ(plan.Reason(why),
            "behind 12 job(s) of teams within their guarantee; waiting for 1 node(s) with 8 free slot(s); 0 have "
            "them now");
  why.behind_lower = 4294967295u;
  why.text = 1;
  EXPECT_EQ(plan.Reason(why),
            "behind 12 job(s) of teams within their guarantee and 4294967295 job(s) of teams with lower usage; no "
            "node has label gpu=x");
  why.behind_guaranteed = 0;
  EXPECT_EQ(plan.Reason(why), "behind 4294967295 job(s) of teams with lower usage; no node has label gpu=x");
  why.text = 2;  // not a text of this plan (a caller's bug): the counts only, no read past the texts
  EXPECT_EQ(plan.Reason(why), "behind 4294967295 job(s) of teams with lower usage; ");
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

}  // namespace
}  // namespace anneal::coordinator
