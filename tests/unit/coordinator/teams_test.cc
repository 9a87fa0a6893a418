// Teams through the coordinator's client channel: who may submit, read, cancel, manage members, and what the
// audit log keeps. Every refusal names the permission and the team, and changes nothing.
#include <gtest/gtest.h>

#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;
using testing::Harness;
using testing::TeamsTest;

TEST_F(TeamsTest, AMemberSubmitsToItsTeamAndTheJobRecordsOwnerAndTeam) {
  pb::ClientReply reply = As("nina", SubmitTo(""));  // her only team
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  pb::JobRecord job = h_.Job(reply.submit().job_id());
  EXPECT_EQ(job.owner(), "nina");
  EXPECT_EQ(job.team(), "nlp");
}

TEST_F(TeamsTest, AViewerCannotSubmitAndNothingIsStored) {
  const std::string message = Refusal(As("vic", SubmitTo("nlp")), pb::PERMISSION_DENIED);
  EXPECT_EQ(message,
            "user 'vic' may not submit jobs to team 'nlp': that needs role member or above in team 'nlp' "
            "(vic is a viewer there)");
  EXPECT_EQ(h_.core().ActiveJobCount(), 0u);
  EXPECT_NE(Refusal(As("nina", SubmitTo("vision")), pb::PERMISSION_DENIED).find("nina is not in team 'vision'"),
            std::string::npos);
}

TEST_F(TeamsTest, AMemberCannotCancelOrReadAnotherTeamsJob) {
  const std::string job = As("walt", SubmitTo("vision")).submit().job_id();
  ASSERT_FALSE(job.empty());
  pb::ClientRequest cancel;
  cancel.mutable_cancel()->set_job_id(job);
  EXPECT_NE(Refusal(As("nina", cancel), pb::PERMISSION_DENIED).find("may not cancel jobs of team 'vision'"),
            std::string::npos);
  EXPECT_EQ(h_.State(job), pb::JOB_PENDING);
  pb::ClientRequest get;
  get.mutable_get_job()->set_job_id(job);
  EXPECT_NE(Refusal(As("nina", get), pb::PERMISSION_DENIED).find("may not read jobs of team 'vision'"),
            std::string::npos);
  pb::ClientRequest watch;
  watch.mutable_watch()->set_job_id(job);
  Refusal(As("nina", watch), pb::PERMISSION_DENIED);
  pb::ClientRequest logs;
  logs.mutable_get_logs()->set_job_id(job);
  Refusal(As("nina", logs), pb::PERMISSION_DENIED);
  pb::ClientRequest checkpoints;
  checkpoints.mutable_list_checkpoints()->set_job_id(job);
  Refusal(As("nina", checkpoints), pb::PERMISSION_DENIED);
  // Its own team's member cancels it.
  EXPECT_EQ(As("walt", cancel).error().code(), pb::OK);
}

TEST_F(TeamsTest, ListJobsShowsOnlyTheTeamsTheCallerMayRead) {
  const std::string nlp_job = As("nina", SubmitTo("nlp")).submit().job_id();
  const std::string vision_job = As("walt", SubmitTo("vision")).submit().job_id();
  auto ids = [&](const std::string& user) {
    pb::ClientRequest ls;
    ls.mutable_list_jobs();
    std::vector<std::string> out;
    const pb::ClientReply reply = As(user, ls);
    for (const auto& j : reply.list_jobs().jobs()) out.push_back(j.job_id());
    return out;
  };
  EXPECT_EQ(ids("vic"), std::vector<std::string>{nlp_job});  // a viewer reads
  EXPECT_EQ(ids("walt"), std::vector<std::string>{vision_job});
  pb::ClientRequest ls;
  ls.mutable_list_jobs();
  EXPECT_EQ(Admin(ls).list_jobs().jobs_size(), 2);
}

TEST_F(TeamsTest, ATeamAdminManagesOnlyItsOwnTeamAndClusterOperationsNeedClusterAdmin) {
  Done(As("tess", SetRole("nlp", "walt", pb::ROLE_VIEWER)));
  EXPECT_NE(Refusal(As("tess", SetRole("vision", "nina", pb::ROLE_MEMBER)), pb::PERMISSION_DENIED)
                .find("needs role admin in team 'vision'"),
            std::string::npos);
  EXPECT_NE(Refusal(As("nina", SetRole("nlp", "vic", pb::ROLE_ADMIN)), pb::PERMISSION_DENIED)
                .find("may not manage the members of team 'nlp'"),
            std::string::npos);
  pb::ClientRequest drain;
  drain.mutable_drain()->set_node_id("n1");
  EXPECT_EQ(Refusal(As("tess", drain), pb::PERMISSION_DENIED),
            "user 'tess' may not drain nodes: that needs cluster admin");
  Refusal(As("tess", CreateUser("mallory")), pb::PERMISSION_DENIED);
  Refusal(As("tess", CreateTeam("evil")), pb::PERMISSION_DENIED);
  pb::ClientRequest others;
  others.mutable_create_token()->set_user("nina");
  Refusal(As("tess", others), pb::PERMISSION_DENIED);
}

TEST_F(TeamsTest, UsersManageTheirOwnTokensAndARevokedTokenStopsAtOnce) {
  pb::ClientRequest create;
  create.mutable_create_token()->set_description("laptop");
  pb::ClientReply created = As("nina", create);
  ASSERT_EQ(created.error().code(), pb::OK);
  const std::string laptop = created.create_token().token();
  pb::ClientRequest whoami;
  whoami.mutable_whoami();
  whoami.set_token(laptop);
  pb::ClientReply me = h_.CallExactly(whoami);
  ASSERT_EQ(me.error().code(), pb::OK) << me.error().message();
  EXPECT_EQ(me.whoami().user().name(), "nina");
  EXPECT_EQ(me.whoami().token_id(), created.create_token().record().token_id());

  pb::ClientRequest revoke;
  revoke.mutable_revoke_token()->set_token_id(created.create_token().record().token_id());
  Refusal(As("walt", revoke), pb::PERMISSION_DENIED);  // not his
  Done(As("nina", revoke));
  EXPECT_NE(Refusal(h_.CallExactly(whoami), pb::UNAUTHENTICATED).find("revoked"), std::string::npos);
  pb::ClientRequest mine;
  mine.mutable_list_tokens();
  pb::ClientReply listed = As("nina", mine);
  ASSERT_EQ(listed.list_tokens().tokens_size(), 2);
  for (const auto& t : listed.list_tokens().tokens()) EXPECT_TRUE(t.secret_hash().empty());
  pb::ClientRequest everyone;
  everyone.mutable_list_tokens()->set_all_users(true);
  Refusal(As("nina", everyone), pb::PERMISSION_DENIED);
}

TEST_F(TeamsTest, AnExpiredTokenIsRefused) {
  pb::ClientRequest create;
  create.mutable_create_token()->set_ttl_ms(60'000);
  const std::string token = As("nina", create).create_token().token();
  pb::ClientRequest ls;
  ls.mutable_list_jobs();
  ls.set_token(token);
  EXPECT_EQ(h_.CallExactly(ls).error().code(), pb::OK);
  h_.clock().Advance(60'000);
  EXPECT_NE(Refusal(h_.CallExactly(ls), pb::UNAUTHENTICATED).find("expired"), std::string::npos);
}

TEST_F(TeamsTest, EveryMutationIsAuditedWithItsOutcomeAndSurvivesARestart) {
  const std::string job = As("nina", SubmitTo("nlp")).submit().job_id();
  As("vic", SubmitTo("nlp"));  // refused
  pb::ClientRequest cancel;
  cancel.mutable_cancel()->set_job_id(job);
  cancel.set_token("ant_000000000000_" + std::string(64, '0'));
  h_.CallExactly(cancel);  // unauthenticated
  h_.Restart();
  pb::ClientRequest audit;
  audit.mutable_list_audit()->set_limit(3);
  pb::ClientReply reply = Admin(audit);
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  ASSERT_EQ(reply.list_audit().records_size(), 3);
  const auto& ok = reply.list_audit().records(0);
  EXPECT_EQ(ok.user(), "nina");
  EXPECT_EQ(ok.team(), "nlp");
  EXPECT_EQ(ok.operation(), "submit");
  EXPECT_EQ(ok.target(), job);
  EXPECT_EQ(ok.result(), pb::OK);
  EXPECT_EQ(reply.list_audit().records(1).user(), "vic");
  EXPECT_EQ(reply.list_audit().records(1).result(), pb::PERMISSION_DENIED);
  EXPECT_EQ(reply.list_audit().records(2).operation(), "cancel");
  EXPECT_EQ(reply.list_audit().records(2).result(), pb::UNAUTHENTICATED);
  // Only a cluster admin reads the whole log; a team admin reads their team's.
  Refusal(As("tess", audit), pb::PERMISSION_DENIED);
  audit.mutable_list_audit()->set_team("nlp");
  EXPECT_EQ(As("tess", audit).error().code(), pb::OK);
  audit.mutable_list_audit()->set_team("vision");
  Refusal(As("tess", audit), pb::PERMISSION_DENIED);
}

TEST_F(TeamsTest, ATeamWithActiveJobsCannotBeDeleted) {
  const std::string job = As("nina", SubmitTo("nlp")).submit().job_id();
  pb::ClientRequest del;
  del.mutable_delete_team()->set_name("nlp");
  EXPECT_NE(Refusal(Admin(del), pb::FAILED_PRECONDITION).find(job), std::string::npos);
  Refusal(As("tess", del), pb::PERMISSION_DENIED);
}

}  // namespace
}  // namespace anneal::coordinator
