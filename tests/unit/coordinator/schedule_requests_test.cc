// Schedules through the coordinator's client channel: who may create, read, pause, resume, trigger and delete them
// (each refusal names the permission and the team, changes nothing, and the coordinator serves on), the bounds,
// and fires that create real pipeline runs exactly once across a restart (FakeClock, a real StateStore).
#include <gtest/gtest.h>

#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::TeamsTest;

constexpr int64_t kMinute = 60'000;

std::string PipelineYaml() {
  static int next = 0;
  return "name: nightly\nsteps:\n  - name: train\n    job:\n      model_name_or_path: /models/tiny\n"
         "      dataset: alpaca\n      output_dir: /out/sched-" +
         std::to_string(++next) + "-${pipeline.id}\n";
}

pb::ClientRequest Create(const std::string& team, const std::string& name, const std::string& cron = "* * * * *") {
  pb::ClientRequest r;
  auto* c = r.mutable_create_schedule();
  c->set_team(team);
  c->set_name(name);
  c->set_cron(cron);
  c->set_pipeline_yaml(PipelineYaml());
  c->set_concurrency(pb::CONCURRENCY_REPLACE);
  return r;
}

pb::ClientRequest Get(const std::string& team, const std::string& name, uint32_t next = 0) {
  pb::ClientRequest r;
  r.mutable_get_schedule()->mutable_schedule()->set_team(team);
  r.mutable_get_schedule()->mutable_schedule()->set_name(name);
  r.mutable_get_schedule()->set_next_count(next);
  return r;
}

pb::ClientRequest Pause(const std::string& team, const std::string& name) {
  pb::ClientRequest r;
  r.mutable_pause_schedule()->mutable_schedule()->set_team(team);
  r.mutable_pause_schedule()->mutable_schedule()->set_name(name);
  return r;
}

pb::ClientRequest Trigger(const std::string& team, const std::string& name) {
  pb::ClientRequest r;
  r.mutable_trigger_schedule()->mutable_schedule()->set_team(team);
  r.mutable_trigger_schedule()->mutable_schedule()->set_name(name);
  return r;
}

pb::ClientRequest Delete(const std::string& team, const std::string& name) {
  pb::ClientRequest r;
  r.mutable_delete_schedule()->mutable_schedule()->set_team(team);
  r.mutable_delete_schedule()->mutable_schedule()->set_name(name);
  return r;
}

class ScheduleRequests : public TeamsTest {};

TEST_F(ScheduleRequests, AMemberCreatesAndTheReplyHasTheNextFireTimes) {
  pb::ClientReply reply = As("nina", Create("", "nightly", "0 3 * * *"));  // her only team
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  EXPECT_EQ(reply.schedule().schedule().team(), "nlp");
  EXPECT_EQ(reply.schedule().schedule().owner(), "nina");
  EXPECT_EQ(reply.schedule().next_fire_ms_size(), 5);
  pb::ClientReply shown = As("vic", Get("nlp", "nightly", 12));  // a viewer reads
  ASSERT_EQ(shown.error().code(), pb::OK) << shown.error().message();
  EXPECT_EQ(shown.schedule().next_fire_ms_size(), 12);
  EXPECT_EQ(shown.schedule().next_fire_ms(1) - shown.schedule().next_fire_ms(0), 24 * 60 * kMinute);
}

TEST_F(ScheduleRequests, RefusalsNameThePermissionChangeNothingAndTheCoordinatorServesOn) {
  Done(As("nina", Create("nlp", "nightly")));
  EXPECT_EQ(Refusal(As("vic", Create("nlp", "mine")), pb::PERMISSION_DENIED),
            "user 'vic' may not create schedules in team 'nlp': that needs role member or above in team 'nlp' "
            "(vic is a viewer there)");
  EXPECT_NE(Refusal(As("vic", Pause("nlp", "nightly")), pb::PERMISSION_DENIED)
                .find("may not change the schedules of team 'nlp'"),
            std::string::npos);
  EXPECT_NE(Refusal(As("walt", Delete("nlp", "nightly")), pb::PERMISSION_DENIED).find("walt is not in team 'nlp'"),
            std::string::npos);
  EXPECT_NE(Refusal(As("walt", Get("nlp", "nightly")), pb::PERMISSION_DENIED)
                .find("may not read the schedules of team 'nlp'"),
            std::string::npos);
  pb::ClientRequest list;
  list.mutable_list_schedules()->set_team("nlp");
  Refusal(As("walt", list), pb::PERMISSION_DENIED);
  list.mutable_list_schedules()->clear_team();
  EXPECT_EQ(As("walt", list).list_schedules().schedules_size(), 0);  // nlp's are not his to see
  EXPECT_EQ(As("vic", list).list_schedules().schedules_size(), 1);
  // Nothing changed, and the coordinator still serves.
  EXPECT_EQ(As("vic", Get("nlp", "nightly")).schedule().schedule().state(), pb::SCHEDULE_ACTIVE);
  EXPECT_EQ(As("nina", Pause("nlp", "nightly")).schedule().schedule().state(), pb::SCHEDULE_PAUSED);
}

TEST_F(ScheduleRequests, AMemberTriggersARunNowThatRunsAsTheOwnerAndIsAudited) {
  Done(As("nina", Create("nlp", "weekly", "0 3 * * 1")));
  EXPECT_NE(Refusal(As("vic", Trigger("nlp", "weekly")), pb::PERMISSION_DENIED)
                .find("may not change the schedules of team 'nlp'"),
            std::string::npos);
  EXPECT_NE(Refusal(As("walt", Trigger("nlp", "weekly")), pb::PERMISSION_DENIED).find("walt is not in team 'nlp'"),
            std::string::npos);
  EXPECT_EQ(Refusal(As("nina", Trigger("nlp", "absent")), pb::NOT_FOUND), "team 'nlp' has no schedule 'absent'");
  EXPECT_EQ(h_.core().schedules().Find("nlp", "weekly")->history_size(), 0) << "a refusal fired nothing";

  pb::ClientReply fired = As("nina", Trigger("", "weekly"));
  ASSERT_EQ(fired.error().code(), pb::OK) << fired.error().message();
  ASSERT_EQ(fired.schedule().schedule().history_size(), 1);
  const pb::ScheduleFire& fire = fired.schedule().schedule().history(0);
  EXPECT_EQ(fire.outcome(), pb::FIRE_STARTED) << fire.message();
  EXPECT_EQ(fire.triggered_by(), "nina");
  EXPECT_EQ(fired.schedule().next_fire_ms_size(), 5) << "the cron schedule goes on";
  auto run = h_.core().GetPipelineRun(fire.run_id());
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->owner(), "nina");
  EXPECT_NE(run->origin().find("schedule nlp/weekly triggered by nina at "), std::string::npos) << run->origin();

  pb::ClientRequest audit;
  audit.mutable_list_audit()->set_team("nlp");
  int triggers = 0;
  const pb::ClientReply audited = Admin(audit);
  for (const auto& a : audited.list_audit().records()) triggers += a.operation() == "schedule.trigger";
  EXPECT_EQ(triggers, 4) << "three refusals and the trigger";
}

TEST_F(ScheduleRequests, BadInputIsRefusedNamingWhatAndWhere) {
  pb::ClientRequest bad_cron = Create("nlp", "nightly", "0 3 * * 9");
  EXPECT_NE(Refusal(As("nina", bad_cron), pb::INVALID_ARGUMENT).find("field 5 (day-of-week)"), std::string::npos);
  pb::ClientRequest bad_pipeline = Create("nlp", "nightly");
  bad_pipeline.mutable_create_schedule()->set_pipeline_yaml("name: x\nsteps:\n  - name: a\n    needs: [b]\n");
  EXPECT_NE(Refusal(As("nina", bad_pipeline), pb::INVALID_ARGUMENT).find("its pipeline"), std::string::npos);
  pb::ClientRequest long_name = Create("nlp", std::string(300, 'a'));
  EXPECT_NE(Refusal(As("nina", long_name), pb::INVALID_ARGUMENT).find("the schedule name is 300 bytes"),
            std::string::npos);
  EXPECT_EQ(Refusal(As("nina", Get("nlp", "nightly")), pb::NOT_FOUND), "team 'nlp' has no schedule 'nightly'");
  Done(As("nina", Create("nlp", "nightly")));  // and it still serves
}

TEST_F(ScheduleRequests, AFireCreatesOnePipelineRunAndARestartNeverRepeatsIt) {
  Done(As("nina", Create("nlp", "minutely")));
  h_.Advance(kMinute);
  const pb::ScheduleRecord* record = h_.core().schedules().Find("nlp", "minutely");
  ASSERT_NE(record, nullptr);
  ASSERT_EQ(record->history_size(), 1);
  EXPECT_EQ(record->history(0).outcome(), pb::FIRE_STARTED) << record->history(0).message();
  const std::string run = record->last_run_id();
  EXPECT_EQ(run, "pipe-000001") << "validating the pipeline at create uses no run id";
  auto created = h_.core().GetPipelineRun(run);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_EQ(created->owner(), "nina");
  EXPECT_EQ(created->team(), "nlp");
  EXPECT_NE(created->origin().find("schedule nlp/minutely fire at"), std::string::npos) << created->origin();
  h_.Restart();
  h_.Advance(1000);
  record = h_.core().schedules().Find("nlp", "minutely");
  ASSERT_NE(record, nullptr);
  EXPECT_EQ(record->history_size(), 1);
  EXPECT_EQ(record->last_run_id(), run);
}

TEST_F(ScheduleRequests, AFireLostBeforeItsCommitRunsOnceAfterTheRestart) {
  Done(As("nina", Create("nlp", "minutely")));
  h_.clock().Advance(kMinute);
  h_.core().Tick();  // the fire and its pipeline run are in the round's batch; kill -9 before Flush
  h_.Restart();
  h_.Advance(500);
  const pb::ScheduleRecord* record = h_.core().schedules().Find("nlp", "minutely");
  ASSERT_NE(record, nullptr);
  ASSERT_EQ(record->history_size(), 1);
  EXPECT_EQ(record->history(0).outcome(), pb::FIRE_STARTED);
  EXPECT_TRUE(h_.core().GetPipelineRun(record->last_run_id()).ok());
}

}  // namespace
}  // namespace anneal::coordinator
