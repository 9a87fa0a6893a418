// The sharing commands against a scripted coordinator: `anneal team quota` (what it sends, usage errors before
// anything is sent, refusals), `anneal team ls` with weights and quotas, `anneal queue` (one table per team,
// positions, wait reasons, estimated starts, --json) and the scheduling lines of `anneal show`.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_harness.h"

namespace anneal::cli::testing {
namespace {

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

pb::TeamRecord Team(const std::string& name, double weight) {
  pb::TeamRecord t;
  t.set_name(name);
  t.set_weight(weight);
  return t;
}

pb::JobRecord Pending(const std::string& id, const std::string& team, uint32_t position, const std::string& why,
                      int64_t start_ms) {
  pb::JobRecord job;
  job.set_job_id(id);
  job.set_name("n-" + id);
  job.set_team(team);
  job.set_state(pb::JOB_PENDING);
  job.set_priority(3);
  job.mutable_resources()->set_nodes(2);
  job.mutable_resources()->set_gpus_per_node(4);
  job.set_queue_position(position);
  job.set_wait_reason(why);
  job.set_estimated_start_ms(start_ms);
  job.set_max_preemptions(10);
  return job;
}

TEST(CliSharing, TeamQuotaSendsWeightAndQuotaAndPrintsTheResult) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    pb::TeamRecord t = Team(req.set_team_quota().team(), 2);
    auto* q = t.add_quotas();
    q->set_label("gpu=h100");
    q->set_guaranteed(8);
    q->set_max(0);
    *reply.mutable_set_team_quota()->add_teams() = t;
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "team", "quota", "nlp", "--weight", "2",
                           "--guaranteed", "8", "--max", "0", "--label", "gpu=h100"},
                          home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "team 'nlp': weight 2, quotas (guaranteed/max): gpu=h100 8/-")) << r.out;
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& sent = requests[0].set_team_quota();
  EXPECT_EQ(sent.team(), "nlp");
  EXPECT_EQ(sent.weight(), 2);
  ASSERT_EQ(sent.quotas_size(), 1);
  EXPECT_EQ(sent.quotas(0).label(), "gpu=h100");
  EXPECT_EQ(sent.quotas(0).guaranteed(), 8u);
  EXPECT_EQ(sent.quotas(0).max(), 0u);
}

TEST(CliSharing, TeamQuotaUsageErrorsAreCaughtBeforeAnythingIsSent) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) { return ErrorReply(pb::INTERNAL, "unexpected"); });
  const std::vector<std::vector<std::string>> bad = {
      {"team", "quota", "nlp"},                         // nothing to change
      {"team", "quota", "nlp", "--guaranteed", "4"},    // --max missing
      {"team", "quota", "nlp", "--weight", "0"},        // not positive
      {"team", "quota", "nlp", "--weight", "-2"},       // not positive
      {"team", "quota", "nlp", "--label", "gpu=h100"},  // a label without a quota
      {"team", "quota", "nlp", "--guaranteed", "-1", "--max", "2"},
  };
  for (const auto& args : bad) {
    std::vector<std::string> full = {"--coordinator", coordinator.address()};
    full.insert(full.end(), args.begin(), args.end());
    RunResult r = RunAnneal(full, home.path());
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  EXPECT_TRUE(coordinator.requests().empty());
}

TEST(CliSharing, TeamQuotaRefusalsExitWithTheCoordinatorsMessage) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    return ErrorReply(pb::FAILED_PRECONDITION,
                      "team 'nlp' guaranteed 9 slots on pool 'gpu=h100': the guarantees of all teams there would add "
                      "up to 12 slots, above the 8 slots of its registered nodes");
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "team", "quota", "nlp", "--guaranteed", "9", "--max",
                           "9", "--label", "gpu=h100"},
                          home.path());
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(Contains(r.err, "anneal team quota: ")) << r.err;
  EXPECT_TRUE(Contains(r.err, "above the 8 slots")) << r.err;
}

TEST(CliSharing, TeamLsShowsWeightsAndQuotas) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    pb::ClientReply reply;
    pb::TeamRecord nlp = Team("nlp", 2);
    auto* q = nlp.add_quotas();
    q->set_guaranteed(4);
    q->set_max(16);
    *reply.mutable_list_teams()->add_teams() = nlp;
    *reply.mutable_list_teams()->add_teams() = Team("vision", 0);
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "team", "ls"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "WEIGHT")) << r.out;
  EXPECT_TRUE(Contains(r.out, "cluster 4/16")) << r.out;
  std::stringstream lines(r.out);
  std::string line;
  bool vision = false;
  while (std::getline(lines, line)) {
    if (line.rfind("vision", 0) == 0) vision = Contains(line, " 1 ");  // unset weight reads as 1
  }
  EXPECT_TRUE(vision) << r.out;
}

TEST(CliSharing, QueuePrintsOneTablePerTeamInOrderWithReasonsAndStarts) {
  TempDir home;
  const int64_t now = Now();
  FakeCoordinator coordinator([now](const pb::ClientRequest&) {
    pb::ClientReply reply;
    auto* q = reply.mutable_queue();
    *q->add_teams() = Team("nlp", 2);
    *q->add_teams() = Team("vision", 1);
    *q->add_jobs() =
        Pending("j-1", "nlp", 1, "reserved: waiting for 2 nodes with 4 free slots", now + 12 * 60000 + 5000);
    *q->add_jobs() = Pending("j-2", "vision", 2, "behind 1 job of teams with lower usage", 0);
    *q->add_jobs() = Pending("j-3", "nlp", 3, "over quota on pool 'gpu=h100' (16 of 16 slots)", 0);
    auto* usage = q->add_usage();
    usage->set_team("nlp");
    usage->set_decayed_slot_seconds(7200);
    (*q->mutable_slots_held())["nlp"] = 8;
    (*q->mutable_slots_held())["vision"] = 0;
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "queue", "--team", "nlp"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto requests = coordinator.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].queue().team(), "nlp");
  EXPECT_TRUE(Contains(r.out, "team nlp  weight 2  usage 2 slot-h  holds 8 slots")) << r.out;
  EXPECT_TRUE(Contains(r.out, "team vision  weight 1")) << r.out;
  const size_t nlp = r.out.find("team nlp"), vision = r.out.find("team vision");
  const size_t j1 = r.out.find("j-1"), j2 = r.out.find("j-2"), j3 = r.out.find("j-3");
  ASSERT_NE(j1, std::string::npos);
  EXPECT_TRUE(nlp < j1 && j1 < j3 && j3 < vision && vision < j2) << r.out;
  EXPECT_TRUE(Contains(r.out, "2x4")) << r.out;
  EXPECT_TRUE(Contains(r.out, "in 12m")) << r.out;
  EXPECT_TRUE(Contains(r.out, "over quota on pool 'gpu=h100' (16 of 16 slots)")) << r.out;

  RunResult j = RunAnneal({"--coordinator", coordinator.address(), "--json", "queue"}, home.path());
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto parsed = nlohmann::json::parse(j.out);
  ASSERT_EQ(parsed["jobs"].size(), 3u);
  EXPECT_EQ(parsed["jobs"][0]["wait_reason"], "reserved: waiting for 2 nodes with 4 free slots");
  EXPECT_EQ(parsed["slots_held"]["nlp"], 8);
}

TEST(CliSharing, QueueRefusalExitsFour) {
  TempDir home;
  FakeCoordinator coordinator([](const pb::ClientRequest&) {
    return ErrorReply(pb::PERMISSION_DENIED, "user 'nina' may not read the queue of team 'vision'");
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "queue", "--team", "vision"}, home.path());
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(r.err.rfind("anneal queue: ", 0), 0u) << r.err;
  EXPECT_TRUE(Contains(r.err, "user 'nina' may not read the queue of team 'vision'")) << r.err;
}

TEST(CliSharing, ShowPrintsQueuePositionWaitReasonLimitsAndPreemptions) {
  TempDir home;
  const int64_t now = Now();
  FakeCoordinator coordinator([now](const pb::ClientRequest& req) {
    pb::ClientReply reply;
    if (req.has_get_job()) {
      pb::JobRecord job = Pending("j-9", "nlp", 4, "waiting for 2 nodes with 4 free slots", now + 3 * 3600000 + 60000);
      job.set_time_limit_ms(90 * 60000);
      (*job.mutable_node_selector())["gpu"] = "h100";
      job.set_preemptions(2);
      job.set_preempt_reason("team vision below its guarantee reclaims 8 slots for job j-5");
      *reply.mutable_get_job()->mutable_job() = job;
    } else {
      reply.mutable_watch();  // the event pages: none
    }
    return reply;
  });
  RunResult r = RunAnneal({"--coordinator", coordinator.address(), "show", "j-9"}, home.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Contains(r.out, "Limits:      time limit 1h30m; nodes with gpu=h100")) << r.out;
  EXPECT_TRUE(Contains(r.out, "Queue:       position 4, estimated start in 3h")) << r.out;
  EXPECT_TRUE(Contains(r.out, "Waiting:     waiting for 2 nodes with 4 free slots")) << r.out;
  EXPECT_TRUE(Contains(r.out, "Preemptions: 2 of 10 allowed")) << r.out;
  EXPECT_TRUE(Contains(r.out, "Preempted:   team vision below its guarantee reclaims 8 slots")) << r.out;
}

}  // namespace
}  // namespace anneal::cli::testing
