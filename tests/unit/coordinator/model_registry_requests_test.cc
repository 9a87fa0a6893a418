// The model registry through the coordinator (coordinator/model_registry_requests.cc): register / promote /
// archive / list / show by role, every refusal named (and the coordinator still serving), the audit, a submit
// that would overwrite a registered version refused, recovery, limits and the read-only HTTP routes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "coordinator/http_router.h"
#include "coordinator/model_registry_json.h"
#include "teams_harness.h"

namespace anneal::coordinator {
namespace {

using testing::BaseSpec;

class ModelRequestsTest : public testing::TeamsTest {
 protected:
  // A train job of team nlp run to SUCCEEDED on node n1; returns its id.
  std::string SucceededJob() {
    if (!registered_) h_.Register("n1", 4), registered_ = true;
    pb::ClientReply submitted = As("nina", SubmitTo("nlp"));
    EXPECT_EQ(submitted.error().code(), pb::OK) << submitted.error().message();
    const std::string job = submitted.submit().job_id();
    h_.ReportAll(job, pb::TASK_RUNNING);
    h_.ReportAll(job, pb::TASK_SUCCEEDED);
    EXPECT_EQ(h_.State(job), pb::JOB_SUCCEEDED);
    return job;
  }
  static pb::ClientRequest RegisterModel(const std::string& team, const std::string& name, const std::string& job) {
    pb::ClientRequest r;
    r.mutable_register_model()->set_team(team);
    r.mutable_register_model()->set_name(name);
    r.mutable_register_model()->set_job_id(job);
    return r;
  }
  static pb::ClientRequest PromoteModel(const std::string& team, const std::string& name, uint32_t v,
                                        const std::string& reason = "") {
    pb::ClientRequest r;
    r.mutable_promote_model()->set_team(team);
    r.mutable_promote_model()->set_name(name);
    r.mutable_promote_model()->set_version(v);
    r.mutable_promote_model()->set_reason(reason);
    return r;
  }
  static pb::ClientRequest ArchiveModel(const std::string& team, const std::string& name, uint32_t v) {
    pb::ClientRequest r;
    r.mutable_archive_model()->set_team(team);
    r.mutable_archive_model()->set_name(name);
    r.mutable_archive_model()->set_version(v);
    return r;
  }
  static pb::ClientRequest GetModel(const std::string& team, const std::string& name) {
    pb::ClientRequest r;
    r.mutable_get_model()->set_team(team);
    r.mutable_get_model()->set_name(name);
    return r;
  }
  static pb::ClientRequest ListModels(const std::string& team = "") {
    pb::ClientRequest r;
    r.mutable_list_models()->set_team(team);
    return r;
  }
  bool registered_ = false;
};

TEST_F(ModelRequestsTest, AMemberRegistersAndPromotesAViewerReads) {
  const std::string job = SucceededJob();
  pb::ClientReply reg = As("nina", RegisterModel("nlp", "summarizer", job));
  ASSERT_EQ(reg.error().code(), pb::OK) << reg.error().message();
  EXPECT_EQ(reg.register_model().version().version(), 1u);
  EXPECT_EQ(reg.register_model().version().stage(), pb::MODEL_CANDIDATE);
  EXPECT_EQ(reg.register_model().version().created_by(), "nina");
  EXPECT_EQ(reg.register_model().version().path(), h_.Job(job).output_dir());

  pb::ClientReply promoted = As("nina", PromoteModel("nlp", "summarizer", 1, "first"));
  ASSERT_EQ(promoted.error().code(), pb::OK) << promoted.error().message();
  EXPECT_EQ(promoted.promote_model().version().stage(), pb::MODEL_PRODUCTION);

  pb::ClientReply shown = As("vic", GetModel("", "summarizer"));  // the team found from the name
  ASSERT_EQ(shown.error().code(), pb::OK) << shown.error().message();
  EXPECT_EQ(shown.get_model().model().production_version(), 1u);
  ASSERT_EQ(shown.get_model().versions_size(), 1);
  pb::ClientReply listed = As("vic", ListModels());
  ASSERT_EQ(listed.list_models().models_size(), 1);
  ASSERT_EQ(listed.list_models().production_size(), 1);
  EXPECT_TRUE(listed.list_models().production(0).spec_yaml().empty());  // the list stays small

  // Audited: who did what to which model.
  pb::ClientRequest audit;
  audit.mutable_list_audit()->set_team("nlp");
  bool seen = false;
  const pb::ClientReply audited = Admin(audit);  // named: the loop must not outlive it
  for (const auto& a : audited.list_audit().records()) {
    seen |= a.operation() == "model.promote" && a.user() == "nina" && a.target() == "nlp/summarizer";
  }
  EXPECT_TRUE(seen);
}

TEST_F(ModelRequestsTest, RefusalsByRoleNameWhoAndWhyAndTheCoordinatorStillServes) {
  const std::string job = SucceededJob();
  // A viewer may not register, promote or archive.
  std::string why = Refusal(As("vic", RegisterModel("nlp", "summarizer", job)), pb::PERMISSION_DENIED);
  EXPECT_NE(why.find("vic"), std::string::npos) << why;
  EXPECT_NE(why.find("member"), std::string::npos) << why;
  ASSERT_EQ(As("nina", RegisterModel("nlp", "summarizer", job)).error().code(), pb::OK);
  why = Refusal(As("vic", PromoteModel("nlp", "summarizer", 1)), pb::PERMISSION_DENIED);
  EXPECT_NE(why.find("change the models of team 'nlp'"), std::string::npos) << why;
  Refusal(As("vic", ArchiveModel("nlp", "summarizer", 1)), pb::PERMISSION_DENIED);
  // Another team's member may neither change nor read them.
  Refusal(As("walt", PromoteModel("nlp", "summarizer", 1)), pb::PERMISSION_DENIED);
  why = Refusal(As("walt", GetModel("nlp", "summarizer")), pb::PERMISSION_DENIED);
  EXPECT_NE(why.find("read the models of team 'nlp'"), std::string::npos) << why;
  why = Refusal(As("walt", GetModel("", "summarizer")), pb::NOT_FOUND);  // not even its existence
  EXPECT_NE(why.find("no model 'summarizer' in the teams you may read"), std::string::npos) << why;
  Refusal(As("walt", ListModels("nlp")), pb::PERMISSION_DENIED);
  EXPECT_EQ(As("walt", ListModels()).list_models().models_size(), 0);  // lists only what one may read
  // A job of another team cannot become this team's model; a job that did not succeed cannot either.
  Refusal(As("walt", RegisterModel("vision", "summarizer", job)), pb::FAILED_PRECONDITION);
  why = Refusal(As("nina", RegisterModel("nlp", "other", "job-999999")), pb::NOT_FOUND);
  EXPECT_NE(why.find("job-999999"), std::string::npos) << why;
  // Stage refusals come back named.
  ASSERT_EQ(As("nina", PromoteModel("nlp", "summarizer", 1)).error().code(), pb::OK);
  why = Refusal(As("nina", ArchiveModel("nlp", "summarizer", 1)), pb::FAILED_PRECONDITION);
  EXPECT_NE(why.find("is in production"), std::string::npos) << why;
  why = Refusal(As("nina", PromoteModel("nlp", "summarizer", 7)), pb::NOT_FOUND);
  EXPECT_NE(why.find("no version 7"), std::string::npos) << why;
  Refusal(As("nina", PromoteModel("nope", "summarizer", 1)), pb::NOT_FOUND);
  // The team admin and the cluster admin pass.
  EXPECT_EQ(As("tess", GetModel("nlp", "summarizer")).error().code(), pb::OK);
  EXPECT_EQ(Admin(GetModel("nlp", "summarizer")).error().code(), pb::OK);
  // Still serving.
  EXPECT_EQ(As("nina", ListModels("nlp")).list_models().models_size(), 1);
}

TEST_F(ModelRequestsTest, ASubmitThatWouldOverwriteARegisteredVersionIsRefused) {
  const std::string job = SucceededJob();
  const std::string dir = h_.Job(job).output_dir();
  ASSERT_EQ(As("nina", RegisterModel("nlp", "summarizer", job)).error().code(), pb::OK);
  pb::ClientRequest again;
  again.mutable_submit()->set_spec_yaml("model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: " + dir + "\n");
  again.mutable_submit()->set_team("nlp");
  const std::string why = Refusal(As("nina", again), pb::FAILED_PRECONDITION);
  EXPECT_NE(why.find("registered model version nlp/summarizer v1"), std::string::npos) << why;
  EXPECT_NE(why.find("choose another output_dir"), std::string::npos) << why;
  // A fresh directory is fine.
  EXPECT_EQ(As("nina", SubmitTo("nlp")).error().code(), pb::OK);
}

TEST_F(ModelRequestsTest, TheRegistrySurvivesARestart) {
  const std::string job = SucceededJob();
  ASSERT_EQ(As("nina", RegisterModel("nlp", "summarizer", job)).error().code(), pb::OK);
  ASSERT_EQ(As("nina", PromoteModel("nlp", "summarizer", 1)).error().code(), pb::OK);
  h_.Restart();
  pb::ClientReply shown = As("vic", GetModel("nlp", "summarizer"));
  ASSERT_EQ(shown.error().code(), pb::OK) << shown.error().message();
  EXPECT_EQ(shown.get_model().versions(0).stage(), pb::MODEL_PRODUCTION);
  // The protection comes back with it.
  pb::ClientRequest again;
  again.mutable_submit()->set_spec_yaml(
      "model_name_or_path: /models/tiny\ndataset: alpaca\noutput_dir: " + h_.Job(job).output_dir() + "\n");
  again.mutable_submit()->set_team("nlp");
  Refusal(As("nina", again), pb::FAILED_PRECONDITION);
}

TEST_F(ModelRequestsTest, OversizedNamesAndReasonsAreRefusedNamingTheField) {
  std::string why = Refusal(As("nina", GetModel("nlp", std::string(300, 'm'))), pb::INVALID_ARGUMENT);
  EXPECT_NE(why.find("the model name is 300 bytes"), std::string::npos) << why;
  why = Refusal(As("nina", PromoteModel("nlp", "m", 1, std::string(2000, 'r'))), pb::INVALID_ARGUMENT);
  EXPECT_NE(why.find("the reason is 2000 bytes"), std::string::npos) << why;
  why = Refusal(As("nina", RegisterModel("nlp", "bad/name", SucceededJob())), pb::INVALID_ARGUMENT);
  EXPECT_NE(why.find("model name 'bad/name'"), std::string::npos) << why;
}

TEST_F(ModelRequestsTest, HttpServesTheModelsReadOnly) {
  const std::string job = SucceededJob();
  ASSERT_EQ(As("nina", RegisterModel("nlp", "summarizer", job)).error().code(), pb::OK);
  ASSERT_EQ(As("nina", PromoteModel("nlp", "summarizer", 1)).error().code(), pb::OK);
  HttpSnapshot snapshot;
  snapshot.models = RenderModelsJson(h_.core());
  snapshot.model_details = RenderModelDetailsJson(h_.core());
  HttpRouteOptions options{.authenticate = [](std::string_view) { return Status::Ok(); }};
  auto get = [&](const std::string& target, const std::string& method = "GET") {
    return RouteHttpRequest({.method = method, .target = target, .authorization = "Bearer t"}, snapshot, options);
  };
  HttpResponse list = get("/api/models");
  ASSERT_EQ(list.status, 200);
  const auto models = nlohmann::json::parse(list.body);
  ASSERT_EQ(models["models"].size(), 1u);
  EXPECT_EQ(models["models"][0]["name"], "summarizer");
  EXPECT_EQ(models["models"][0]["production"]["stage"], "MODEL_PRODUCTION");
  HttpResponse one = get("/api/models/nlp/summarizer");
  ASSERT_EQ(one.status, 200);
  const auto detail = nlohmann::json::parse(one.body);
  EXPECT_EQ(detail["versions"][0]["source_job_id"], job);
  HttpResponse missing = get("/api/models/nlp/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_NE(missing.body.find("no model 'nlp/nope'"), std::string::npos) << missing.body;
  EXPECT_EQ(get("/api/models", "POST").status, 405);
}

}  // namespace
}  // namespace anneal::coordinator
