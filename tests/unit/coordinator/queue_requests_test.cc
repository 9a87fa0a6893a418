// The queue (`anneal queue`, GET /api/queue): who sees which teams' jobs, the order, what is cleared, and the
// team settings, usage and held slots that come with it; plus the job record's sharing keys set at submit.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/http.h"
#include "coordinator/sharing.h"
#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::TeamsTest;

pb::ClientRequest QueueOf(const std::string& team) {
  pb::ClientRequest r;
  r.mutable_queue()->set_team(team);
  return r;
}

std::vector<std::string> JobIds(const pb::QueueReply& queue) {
  std::vector<std::string> ids;
  for (const auto& j : queue.jobs()) ids.push_back(j.job_id());
  return ids;
}

TEST_F(TeamsTest, TheQueueShowsOnlyTheTeamsTheCallerMayRead) {
  const std::string a1 = As("nina", SubmitTo("nlp")).submit().job_id();
  const std::string b1 = As("walt", SubmitTo("vision")).submit().job_id();
  const std::string a2 = As("nina", SubmitTo("nlp")).submit().job_id();
  ASSERT_FALSE(a1.empty() || b1.empty() || a2.empty());

  pb::ClientReply nina = As("nina", QueueOf(""));
  ASSERT_EQ(nina.error().code(), pb::OK) << nina.error().message();
  EXPECT_EQ(JobIds(nina.queue()), (std::vector<std::string>{a1, a2}));  // no position yet: submission order
  ASSERT_EQ(nina.queue().teams_size(), 1);
  EXPECT_EQ(nina.queue().teams(0).name(), "nlp");
  EXPECT_EQ(nina.queue().slots_held().at("nlp"), 0u);
  EXPECT_EQ(nina.queue().slots_held().count("vision"), 0u);
  for (const auto& job : nina.queue().jobs()) {
    EXPECT_TRUE(job.spec_yaml().empty());
    EXPECT_TRUE(job.submitted_spec_yaml().empty());
    EXPECT_EQ(job.team(), "nlp");
  }

  // Asking for another team's queue is refused, naming the team and the role it needs.
  const std::string message = Refusal(As("nina", QueueOf("vision")), pb::PERMISSION_DENIED);
  EXPECT_NE(message.find("read the queue of team 'vision'"), std::string::npos) << message;
  EXPECT_NE(Refusal(As("nina", QueueOf("nope")), pb::NOT_FOUND).find("no team 'nope'"), std::string::npos);
  EXPECT_NE(Refusal(As("nina", QueueOf(std::string(500, 'x'))), pb::INVALID_ARGUMENT).find("team name"),
            std::string::npos);

  // A viewer reads their team's queue; the cluster admin reads every team's.
  EXPECT_EQ(As("vic", QueueOf("nlp")).queue().jobs_size(), 2);
  pb::ClientReply admin = Admin(QueueOf(""));
  ASSERT_EQ(admin.error().code(), pb::OK) << admin.error().message();
  EXPECT_EQ(admin.queue().jobs_size(), 3);
  EXPECT_EQ(admin.queue().teams_size(), 3);  // default, nlp, vision
}

TEST_F(TeamsTest, TheQueueCarriesUsageAndHeldSlotsAndLeavesRunningJobsOut) {
  storage::WriteBatch batch;
  pb::TeamUsageRecord usage;
  usage.set_team("nlp");
  usage.set_decayed_slot_seconds(7200);
  usage.set_updated_at_ms(h_.clock().NowMs());  // no decay: the fake clock stands still
  batch.Put(storage::Table::kUsage, "nlp", usage);
  usage.set_team("vision");
  batch.Put(storage::Table::kUsage, "vision", usage);
  ASSERT_TRUE(h_.store().Commit(batch).ok());
  h_.Restart();  // the coordinator keeps usage in memory (coordinator/team_usage.h), loaded at recovery
  h_.Register("n1", 4);
  const std::string running = As("nina", SubmitTo("nlp", "gpus_per_node: 2\n")).submit().job_id();
  h_.Round();
  ASSERT_EQ(h_.State(running), pb::JOB_STARTING);
  const std::string queued = As("nina", SubmitTo("nlp", "gpus_per_node: 4\n")).submit().job_id();

  pb::ClientReply nina = As("nina", QueueOf("nlp"));
  ASSERT_EQ(nina.error().code(), pb::OK) << nina.error().message();
  EXPECT_EQ(JobIds(nina.queue()), std::vector<std::string>{queued});  // the running job is not queued
  EXPECT_EQ(nina.queue().slots_held().at("nlp"), 2u);
  ASSERT_EQ(nina.queue().usage_size(), 1);  // vision's row is not shown to nina
  EXPECT_EQ(nina.queue().usage(0).team(), "nlp");
  EXPECT_EQ(nina.queue().usage(0).decayed_slot_seconds(), 7200);

  // GET /api/queue renders the same, for every team.
  auto json = nlohmann::json::parse(HttpServer::RenderQueue(h_.core()));
  ASSERT_EQ(json["jobs"].size(), 1u);
  EXPECT_EQ(json["jobs"][0]["job_id"], queued);
  EXPECT_EQ(json["jobs"][0]["team"], "nlp");
  EXPECT_EQ(json["jobs"][0]["gpus_per_node"], 4);
  bool saw_nlp = false;
  for (const auto& team : json["teams"]) {
    if (team["name"] != "nlp") continue;
    saw_nlp = true;
    EXPECT_EQ(team["slots_held"], 2);
    EXPECT_EQ(team["usage_slot_seconds"], 7200.0);
    EXPECT_EQ(team["weight"], 1.0);
  }
  EXPECT_TRUE(saw_nlp) << json.dump();
}

TEST_F(TeamsTest, SubmitCopiesTheSpecsSharingKeysIntoTheJobRecord) {
  pb::ClientReply reply = As("nina", SubmitTo("nlp",
                                              "scheduling: {time_limit: 1h30m, node_selector: {gpu: h100}, "
                                              "max_preemptions: 0}\n"));
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  const pb::JobRecord job = h_.Job(reply.submit().job_id());
  EXPECT_EQ(job.time_limit_ms(), 5400 * 1000);
  ASSERT_EQ(job.node_selector().size(), 1u);
  EXPECT_EQ(job.node_selector().at("gpu"), "h100");
  EXPECT_EQ(job.max_preemptions(), 0u);
  const pb::JobRecord plain = h_.Job(As("nina", SubmitTo("nlp")).submit().job_id());
  EXPECT_EQ(plain.time_limit_ms(), 0);
  EXPECT_TRUE(plain.node_selector().empty());
  EXPECT_EQ(plain.max_preemptions(), 10u);
}

// ---- BuildQueueReply: the order and the held slots, over plain records ----------------------------------------

pb::JobRecord Record(const std::string& id, const std::string& team, pb::JobState state, uint32_t position,
                     uint64_t seq, int ranks = 0) {
  pb::JobRecord r;
  r.set_job_id(id);
  r.set_team(team);
  r.set_state(state);
  r.set_queue_position(position);
  r.set_submit_seq(seq);
  r.set_spec_yaml("spec");
  auto* node = r.mutable_placement()->add_nodes();
  node->set_node_id("n-" + id);
  for (int i = 0; i < ranks; ++i) node->add_ranks();
  (*r.mutable_task_states())[node->node_id()] = pb::TASK_RUNNING;  // its task has not ended
  return r;
}

TEST(QueueReply, JobsAreOrderedByQueuePositionWithUnpositionedJobsLastBySubmission) {
  std::vector<pb::JobRecord> jobs = {
      Record("c", "a", pb::JOB_PENDING, 0, 1),      Record("x", "a", pb::JOB_PENDING, 2, 5),
      Record("y", "a", pb::JOB_PENDING, 1, 9),      Record("p", "a", pb::JOB_PREEMPTED, 0, 0, 3),
      Record("r", "a", pb::JOB_RUNNING, 0, 3, 4),   Record("other", "b", pb::JOB_PENDING, 3, 2),
      Record("s", "a", pb::JOB_SUCCEEDED, 0, 4, 8),
  };
  QueueSources sources;
  for (const auto& j : jobs) sources.jobs.push_back(&j);
  sources.teams.resize(2);
  sources.teams[0].set_name("a");
  sources.teams[1].set_name("b");
  Principal member{.user = "u", .teams = {{"a", pb::ROLE_MEMBER}}};
  auto queue = BuildQueueReply(member, "", sources);
  ASSERT_TRUE(queue.ok()) << queue.status().ToString();
  EXPECT_EQ(JobIds(*queue), (std::vector<std::string>{"y", "x", "p", "c"}));
  EXPECT_EQ(queue->slots_held().at("a"), 7u);  // RUNNING 4 + PREEMPTED 3 (still stopping); not SUCCEEDED
  EXPECT_EQ(queue->slots_held().count("b"), 0u);
  for (const auto& j : queue->jobs()) EXPECT_TRUE(j.spec_yaml().empty());
  EXPECT_EQ(BuildQueueReply(member, "b", sources).status().code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace anneal::coordinator
