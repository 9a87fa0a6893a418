// Pipelines on the coordinator (coordinator/pipelines.h): steps as ordinary jobs, references, the step and run
// state machines edge by edge, cancel, retry, recovery, validation refusals and authorization. A real
// StateStore, a FakeClock, jobs driven by task reports like the other coordinator tests.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "coordinator/http.h"
#include "coordinator/http_router.h"
#include "harness.h"
#include "teams_harness.h"

namespace anneal::coordinator::testing {
namespace {

// train -> eval -> report (a train job whose spec uses the eval's metric and job id).
const char* kPipeline = R"(name: weekly
steps:
  - name: train
    job: {model_name_or_path: /models/tiny, dataset: alpaca, output_dir: /out/weekly}
  - name: eval
    needs: [train]
    job:
      kind: eval
      model_name_or_path: /models/tiny
      adapter_name_or_path: ${steps.train.output_dir}
      eval_dataset: heldout
      output_dir: ${steps.train.output_dir}/eval
  - name: report
    needs: [eval]
    job:
      model_name_or_path: /models/tiny
      dataset: alpaca
      learning_rate: ${steps.eval.metrics.eval_loss}
      output_dir: /out/report/${steps.eval.job_id}
)";

class PipelinesTest : public ::testing::Test {
 protected:
  void SetUp() override { h_.Register("n1", 1); }

  pb::ClientReply Submit(const std::string& yaml, std::map<std::string, std::string> overrides = {}) {
    pb::ClientRequest req;
    req.mutable_submit_pipeline()->set_yaml(yaml);
    for (auto& [k, v] : overrides) (*req.mutable_submit_pipeline()->mutable_overrides())[k] = v;
    return h_.Call(req);
  }
  std::string SubmitOk(const std::string& yaml = kPipeline) {
    pb::ClientReply reply = Submit(yaml);
    EXPECT_EQ(reply.error().code(), pb::OK) << reply.error().message();
    return reply.submit_pipeline().pipeline_id();
  }
  pb::PipelineRunRecord Run(const std::string& id) {
    auto run = h_.core().GetPipelineRun(id);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? *run : pb::PipelineRunRecord();
  }
  pb::PipelineStepRecord Step(const std::string& id, const std::string& step) {
    const pb::PipelineRunRecord run = Run(id);
    const pb::PipelineStepRecord* s = FindStep(run, step);
    EXPECT_NE(s, nullptr) << step;
    return s == nullptr ? pb::PipelineStepRecord() : *s;
  }
  void ReportMetric(const std::string& job, const std::string& key, double value, uint64_t step = 0) {
    pb::AgentToCoordinator msg;
    msg.mutable_metric_batch()->set_seq(h_.NextSeq("n1"));
    msg.mutable_metric_batch()->set_job_id(job);
    msg.mutable_metric_batch()->set_epoch(h_.Job(job).epoch());
    auto* p = msg.mutable_metric_batch()->add_points();
    p->set_step(step);
    (*p->mutable_values())[key] = value;
    h_.core().OnAgentMessage(Harness::Peer("n1"), msg);
    h_.Round();
  }
  // Runs the job to its end; one more round lets the pipeline see the committed end.
  void Finish(const std::string& job, pb::TaskState end) {
    h_.ReportAll(job, pb::TASK_RUNNING);
    h_.ReportAll(job, end);
    h_.Round();
  }
  pb::ClientReply Cancel(const std::string& id) {
    pb::ClientRequest req;
    req.mutable_cancel_pipeline()->set_pipeline_id(id);
    return h_.Call(req);
  }
  pb::ClientReply Retry(const std::string& id) {
    pb::ClientRequest req;
    req.mutable_retry_pipeline()->set_pipeline_id(id);
    return h_.Call(req);
  }

  Harness h_;
};

TEST_F(PipelinesTest, RootStepsRunAsOrdinaryJobsWithTheirOwnOutputDir) {
  const std::string id = SubmitOk();
  EXPECT_EQ(id, "pipe-000001");
  const pb::PipelineStepRecord train = Step(id, "train");
  EXPECT_EQ(train.state(), pb::PIPELINE_STEP_RUNNING);
  ASSERT_FALSE(train.job_id().empty());
  EXPECT_EQ(train.output_dir(), "/out/weekly/pipe-000001");  // a later run never writes over this one
  const pb::JobRecord job = h_.Job(train.job_id());
  EXPECT_EQ(job.pipeline_id(), id);
  EXPECT_EQ(job.pipeline_step(), "train");
  EXPECT_EQ(job.output_dir(), "/out/weekly/pipe-000001");
  EXPECT_EQ(job.state(), pb::JOB_STARTING);  // scheduled like any job
  EXPECT_EQ(Step(id, "eval").state(), pb::PIPELINE_STEP_WAITING);
  pb::ClientRequest ls;
  ls.mutable_list_jobs();
  EXPECT_EQ(h_.Call(ls).list_jobs().jobs_size(), 1);  // visible in anneal ls
}

TEST_F(PipelinesTest, ReferencesFlowFromEarlierStepsAndTheRunSucceeds) {
  const std::string id = SubmitOk();
  const std::string train_job = Step(id, "train").job_id();
  Finish(train_job, pb::TASK_SUCCEEDED);
  EXPECT_EQ(Step(id, "train").state(), pb::PIPELINE_STEP_SUCCEEDED);
  const pb::PipelineStepRecord eval = Step(id, "eval");
  ASSERT_EQ(eval.state(), pb::PIPELINE_STEP_RUNNING);
  EXPECT_EQ(eval.params().at("steps.train.output_dir"), "/out/weekly/pipe-000001");
  EXPECT_EQ(eval.output_dir(), "/out/weekly/pipe-000001/eval");  // already the run's: nothing appended
  const std::string eval_spec = h_.Job(eval.job_id()).spec_yaml();
  EXPECT_NE(eval_spec.find("adapter_name_or_path: "), std::string::npos) << eval_spec;
  EXPECT_EQ(eval_spec.find("${"), std::string::npos) << eval_spec;  // every reference substituted
  EXPECT_NE(eval_spec.find("/out/weekly/pipe-000001"), std::string::npos) << eval_spec;
  EXPECT_EQ(h_.Job(eval.job_id()).kind(), pb::JOB_EVAL);

  h_.ReportAll(eval.job_id(), pb::TASK_RUNNING);
  ReportMetric(eval.job_id(), "eval_loss", 2.5);
  ReportMetric(eval.job_id(), "eval_loss", 0.0002, 1);  // the last value wins
  h_.ReportAll(eval.job_id(), pb::TASK_SUCCEEDED);
  h_.Round();
  EXPECT_DOUBLE_EQ(Step(id, "eval").metrics().at("eval_loss"), 0.0002);
  const pb::PipelineStepRecord report = Step(id, "report");
  ASSERT_EQ(report.state(), pb::PIPELINE_STEP_RUNNING) << report.message();
  EXPECT_EQ(report.params().at("steps.eval.metrics.eval_loss"), "0.0002");
  EXPECT_EQ(report.params().at("steps.eval.job_id"), eval.job_id());
  EXPECT_NE(h_.Job(report.job_id()).spec_yaml().find("learning_rate: 0.0002"), std::string::npos);

  Finish(report.job_id(), pb::TASK_SUCCEEDED);
  const pb::PipelineRunRecord run = Run(id);
  EXPECT_EQ(run.state(), pb::PIPELINE_SUCCEEDED);
  EXPECT_GT(run.finished_at_ms(), 0);
  EXPECT_FALSE(h_.core().PipelineRunActive(id));
}

TEST_F(PipelinesTest, AFailedStepSkipsItsDependentsAndFailsTheRun) {
  const std::string id = SubmitOk();
  Finish(Step(id, "train").job_id(), pb::TASK_FAILED);  // max_attempts 3: the job retries first
  std::string job = Step(id, "train").job_id();
  for (int i = 0; i < 5 && h_.State(job) != pb::JOB_FAILED; ++i) Finish(job, pb::TASK_FAILED);
  ASSERT_EQ(h_.State(job), pb::JOB_FAILED);
  h_.Round();
  EXPECT_EQ(Step(id, "train").state(), pb::PIPELINE_STEP_FAILED);
  EXPECT_NE(Step(id, "train").message().find("failed"), std::string::npos);
  EXPECT_EQ(Step(id, "eval").state(), pb::PIPELINE_STEP_SKIPPED);
  EXPECT_EQ(Step(id, "eval").message(), "step 'train' it needs failed");
  EXPECT_EQ(Step(id, "report").state(), pb::PIPELINE_STEP_SKIPPED);  // skipped because eval was skipped
  EXPECT_EQ(Run(id).state(), pb::PIPELINE_FAILED);
}

TEST_F(PipelinesTest, CancelCascadesToTheRunningJobAndTheWaitingSteps) {
  const std::string id = SubmitOk();
  const std::string job = Step(id, "train").job_id();
  h_.ReportAll(job, pb::TASK_RUNNING);
  pb::ClientReply reply = Cancel(id);
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  EXPECT_EQ(reply.cancel_pipeline().state(), pb::PIPELINE_RUNNING);  // until its job stops
  EXPECT_EQ(h_.State(job), pb::JOB_CANCELLING);
  EXPECT_EQ(Step(id, "eval").state(), pb::PIPELINE_STEP_CANCELLED);
  EXPECT_EQ(Step(id, "report").state(), pb::PIPELINE_STEP_CANCELLED);
  h_.ReportAll(job, pb::TASK_STOPPED);
  h_.Round();
  EXPECT_EQ(h_.State(job), pb::JOB_CANCELLED);
  EXPECT_EQ(Step(id, "train").state(), pb::PIPELINE_STEP_CANCELLED);
  EXPECT_EQ(Run(id).state(), pb::PIPELINE_CANCELLED);
  EXPECT_EQ(Cancel(id).cancel_pipeline().state(), pb::PIPELINE_CANCELLED);  // again: a no-op
}

TEST_F(PipelinesTest, RetryRerunsFailedStepsAndKeepsSucceededOnes) {
  const std::string id = SubmitOk();
  const std::string train_job = Step(id, "train").job_id();
  Finish(train_job, pb::TASK_SUCCEEDED);
  const std::string eval_job = Step(id, "eval").job_id();
  ASSERT_TRUE(h_.core().CancelPipelineRun(id, "test").ok());  // eval cancelled, report cancelled
  h_.ReportAll(eval_job, pb::TASK_STOPPED);
  h_.Round();
  ASSERT_EQ(Run(id).state(), pb::PIPELINE_CANCELLED);

  pb::ClientReply reply = Retry(id);
  ASSERT_EQ(reply.error().code(), pb::OK) << reply.error().message();
  EXPECT_EQ(std::vector<std::string>(reply.retry_pipeline().steps().begin(), reply.retry_pipeline().steps().end()),
            (std::vector<std::string>{"eval", "report"}));
  const pb::PipelineRunRecord run = Run(id);
  EXPECT_EQ(run.state(), pb::PIPELINE_RUNNING);
  EXPECT_EQ(run.retries(), 1u);
  EXPECT_EQ(FindStep(run, "train")->job_id(), train_job);  // kept
  const pb::PipelineStepRecord eval = *FindStep(run, "eval");
  EXPECT_EQ(eval.state(), pb::PIPELINE_STEP_RUNNING);
  EXPECT_NE(eval.job_id(), eval_job);
  EXPECT_EQ(eval.previous_job_ids(0), eval_job);
  EXPECT_EQ(eval.tries(), 2u);

  const std::string running = SubmitOk();
  const pb::ClientReply refused = Retry(running);
  EXPECT_EQ(refused.error().code(), pb::FAILED_PRECONDITION);
  EXPECT_NE(refused.error().message().find("still running"), std::string::npos) << refused.error().message();
}

TEST_F(PipelinesTest, ARestartContinuesTheRunWithoutCreatingAJobTwice) {
  const std::string id = SubmitOk();
  const std::string train_job = Step(id, "train").job_id();
  h_.Restart();
  h_.Register("n1", 1);
  h_.Round();
  EXPECT_EQ(Step(id, "train").job_id(), train_job);
  EXPECT_EQ(h_.core().ActiveJobCount(), 1u);
  EXPECT_TRUE(h_.core().PipelineRunActive(id));
  // The job ends and the coordinator dies before the pipeline moved on: the restart moves it.
  pb::JobRecord r = h_.Job(train_job);
  h_.ReportAll(train_job, pb::TASK_RUNNING);
  h_.ReportAll(train_job, pb::TASK_SUCCEEDED);
  ASSERT_EQ(h_.State(train_job), pb::JOB_SUCCEEDED);
  h_.Restart();
  h_.Round();
  EXPECT_EQ(Step(id, "train").state(), pb::PIPELINE_STEP_SUCCEEDED);
  const std::string eval_job = Step(id, "eval").job_id();
  ASSERT_FALSE(eval_job.empty());
  h_.Restart();
  h_.Round();
  EXPECT_EQ(Step(id, "eval").job_id(), eval_job);
  EXPECT_EQ(h_.core().ActiveJobCount(), 1u);  // one eval job, not two
}

TEST_F(PipelinesTest, AStepWhoseJobIsRefusedFails) {
  // The metric the next step needs was never reported: WAITING -> FAILED, naming it.
  const std::string id = SubmitOk();
  Finish(Step(id, "train").job_id(), pb::TASK_SUCCEEDED);
  Finish(Step(id, "eval").job_id(), pb::TASK_SUCCEEDED);
  const pb::PipelineStepRecord report = Step(id, "report");
  EXPECT_EQ(report.state(), pb::PIPELINE_STEP_FAILED);
  EXPECT_NE(report.message().find("reported no metric 'eval_loss'"), std::string::npos) << report.message();
  EXPECT_TRUE(report.job_id().empty());
  EXPECT_EQ(Run(id).state(), pb::PIPELINE_FAILED);
}

// train -> eval -> promote into model `bot`; the eval reports `eval_loss`.
std::string PromotePipeline(const std::string& model = "bot") {
  return "steps:\n"
         "  - {name: train, job: {model_name_or_path: /models/tiny, dataset: alpaca, output_dir: /out/bot}}\n"
         "  - {name: eval, needs: [train], job: {kind: eval, model_name_or_path: /models/tiny, adapter_name_or_path: "
         "\"${steps.train.output_dir}\", eval_dataset: heldout, output_dir: \"${steps.train.output_dir}/eval\"}}\n"
         "  - {name: promote, needs: [eval], promote: {model: " +
         model + ", train_step: train, eval_step: eval, metric: eval_loss, mode: min, margin: 0.1}}\n";
}

TEST_F(PipelinesTest, PromoteRegistersThenPromotesOnlyWhatIsBetter) {
  auto run_with_loss = [&](double loss) {
    const std::string id = SubmitOk(PromotePipeline());
    Finish(Step(id, "train").job_id(), pb::TASK_SUCCEEDED);
    const std::string eval = Step(id, "eval").job_id();
    h_.ReportAll(eval, pb::TASK_RUNNING);
    ReportMetric(eval, "eval_loss", loss);
    h_.ReportAll(eval, pb::TASK_SUCCEEDED);
    h_.Round();
    return id;
  };
  const std::string first = run_with_loss(1.0);
  pb::PipelineStepRecord promote = Step(first, "promote");
  EXPECT_EQ(promote.state(), pb::PIPELINE_STEP_SUCCEEDED) << promote.message();
  EXPECT_TRUE(promote.promoted());
  EXPECT_EQ(promote.model_version(), "bot v1");
  EXPECT_EQ(Run(first).state(), pb::PIPELINE_SUCCEEDED);

  const std::string second = run_with_loss(1.05);  // better, but not by the margin 0.1
  promote = Step(second, "promote");
  EXPECT_EQ(promote.state(), pb::PIPELINE_STEP_SUCCEEDED) << promote.message();  // not promoted is no failure
  EXPECT_FALSE(promote.promoted());
  EXPECT_EQ(promote.model_version(), "bot v2");
  EXPECT_NE(promote.message().find("eval_loss"), std::string::npos) << promote.message();

  // ${models.bot.production.path} is the production version's directory: still the first run's.
  const std::string third = SubmitOk(
      "steps:\n  - {name: t, job: {model_name_or_path: /models/tiny, adapter_name_or_path: "
      "\"${models.bot.production.path}\", dataset: alpaca, output_dir: /out/next}}\n");
  EXPECT_EQ(Step(third, "t").params().at("models.bot.production.path"), Step(first, "train").output_dir());
}

TEST_F(PipelinesTest, ARegistryErrorFailsThePromoteStep) {
  const std::string id = SubmitOk(PromotePipeline("'bad model!'"));
  Finish(Step(id, "train").job_id(), pb::TASK_SUCCEEDED);
  Finish(Step(id, "eval").job_id(), pb::TASK_SUCCEEDED);
  const pb::PipelineStepRecord promote = Step(id, "promote");
  EXPECT_EQ(promote.state(), pb::PIPELINE_STEP_FAILED);
  EXPECT_NE(promote.message().find("the model registry refused"), std::string::npos) << promote.message();
  EXPECT_EQ(Run(id).state(), pb::PIPELINE_FAILED);
}

TEST_F(PipelinesTest, AMissingProductionModelFailsTheStepThatNeedsIt) {
  const std::string id = SubmitOk(
      "steps:\n  - {name: t, job: {model_name_or_path: /models/tiny, adapter_name_or_path: "
      "\"${models.nothing.production.path}\", dataset: alpaca, output_dir: /out/next}}\n");
  const pb::PipelineStepRecord t = Step(id, "t");
  EXPECT_EQ(t.state(), pb::PIPELINE_STEP_FAILED);
  EXPECT_NE(t.message().find("model 'nothing'"), std::string::npos) << t.message();
  EXPECT_NE(t.message().find("no production version"), std::string::npos) << t.message();
}

TEST_F(PipelinesTest, InvalidPipelinesAreRefusedNamingStepAndKeyAndTheCoordinatorStillServes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"steps:\n  - {name: a, needs: [b], job: {output_dir: /o/a}}\n  - {name: b, needs: [a], job: {output_dir: "
       "/o/b}}\n",
       "a -> b -> a"},
      {"steps:\n  - {name: a, job: {output_dir: \"${steps.zz.output_dir}\"}}\n", "step 'zz'"},
      {"steps:\n  - {name: a, run: make}\n", "run no commands"},
      {"steps:\n  - {name: a, job: {model_name_or_path: /m, dataset: d, output_dir: /o, learning_rat: 1}}\n",
       "step 'a'"},
      {"steps:\n  - {name: a, kind: eval, job: {kind: train, output_dir: /o}}\n", "contradicts"},
  };
  for (const auto& [yaml, expected] : cases) {
    pb::ClientReply reply = Submit(yaml);
    EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT) << yaml;
    EXPECT_NE(reply.error().message().find(expected), std::string::npos) << reply.error().message();
  }
  EXPECT_EQ(SubmitOk(), "pipe-000001");  // refusals used no id, and the coordinator still serves
}

// clean -> train: the clean step is a JOB_CLEAN job with no model; its counts are its metrics; the train step
// reads its output_dir. Bad clean keys are refused at submit naming the step and the key.
TEST_F(PipelinesTest, ACleanStepFeedsTheTrainStepAndBadCleanKeysAreRefused) {
  const char* pipeline = R"(steps:
  - name: clean
    job: {kind: clean, dataset: raw, dataset_dir: /data/raw, output_dir: /out/clean, clean: {near_dedup: true}}
  - name: train
    needs: [clean]
    job:
      model_name_or_path: /models/tiny
      dataset: cleaned
      dataset_dir: ${steps.clean.output_dir}
      max_samples: ${steps.clean.metrics.kept}
      output_dir: /out/train
)";
  const std::string id = SubmitOk(pipeline);
  const pb::PipelineStepRecord clean = Step(id, "clean");
  ASSERT_EQ(clean.state(), pb::PIPELINE_STEP_RUNNING);
  EXPECT_EQ(clean.kind(), "clean");
  const pb::JobRecord job = h_.Job(clean.job_id());
  EXPECT_EQ(job.kind(), pb::JOB_CLEAN);
  EXPECT_EQ(job.output_dir(), "/out/clean/" + id);
  EXPECT_EQ(job.spec_yaml().find("model_name_or_path"), std::string::npos) << job.spec_yaml();
  h_.ReportAll(clean.job_id(), pb::TASK_RUNNING);
  ReportMetric(clean.job_id(), "kept", 40);
  h_.ReportAll(clean.job_id(), pb::TASK_SUCCEEDED);
  h_.Round();
  EXPECT_EQ(Step(id, "clean").metrics().at("kept"), 40);
  const pb::PipelineStepRecord train = Step(id, "train");
  ASSERT_EQ(train.state(), pb::PIPELINE_STEP_RUNNING);
  const std::string spec = h_.Job(train.job_id()).spec_yaml();
  EXPECT_NE(spec.find("dataset_dir: \"/out/clean/" + id + "\""), std::string::npos) << spec;
  EXPECT_NE(spec.find("max_samples: 40"), std::string::npos) << spec;

  const std::vector<std::pair<std::string, std::vector<std::string>>> refused = {
      {"steps:\n  - {name: c, job: {kind: clean, dataset: d, output_dir: /o, clean: {languages: [en, xx]}}}\n",
       {"step 'c'", "clean.languages", "unknown language 'xx'"}},
      {"steps:\n  - {name: c, job: {kind: clean, dataset: d, output_dir: /o, clean: {near_dedupe: true}}}\n",
       {"step 'c'", "clean.near_dedupe"}},
      {"steps:\n  - {name: c, job: {kind: clean, dataset: d, output_dir: /o, clean: {jaccard_threshold: 2}}}\n",
       {"step 'c'", "clean.jaccard_threshold"}},
  };
  for (const auto& [yaml, parts] : refused) {
    pb::ClientReply reply = Submit(yaml);
    EXPECT_EQ(reply.error().code(), pb::INVALID_ARGUMENT) << yaml;
    for (const auto& part : parts)
      EXPECT_NE(reply.error().message().find(part), std::string::npos) << reply.error().message();
  }
}

TEST_F(PipelinesTest, HttpServesTheRunsReadOnly) {
  const std::string id = SubmitOk();
  HttpSnapshot snapshot;
  HttpServer::RenderPipelines(h_.core(), &snapshot);
  const HttpRouteOptions options{.public_metrics = false,
                                 .authenticate = [](std::string_view) { return Status::Ok(); }};
  auto get = [&](const std::string& target, const std::string& method = "GET") {
    return RouteHttpRequest({.method = method, .target = target, .authorization = "Bearer t"}, snapshot, options);
  };
  HttpResponse list = get("/api/pipelines");
  EXPECT_EQ(list.status, 200);
  EXPECT_EQ(list.content_type, "application/json");
  EXPECT_NE(list.body.find("\"pipeline_id\":\"" + id + "\""), std::string::npos) << list.body;
  HttpResponse one = get("/api/pipelines/" + id);
  EXPECT_EQ(one.status, 200);
  EXPECT_NE(one.body.find("\"name\":\"train\""), std::string::npos) << one.body;
  EXPECT_NE(one.body.find("\"state\":\"running\""), std::string::npos) << one.body;
  EXPECT_EQ(get("/api/pipelines/pipe-999999").status, 404);
  EXPECT_EQ(get("/api/pipelines", "POST").status, 405);
}

TEST_F(PipelinesTest, OversizedRequestsAreRefusedByTheLimits) {
  pb::ClientReply big = Submit(std::string(kPipeline) + "# " + std::string(1 << 20, 'x') + "\n");
  EXPECT_EQ(big.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(big.error().message().find("max_spec_bytes"), std::string::npos) << big.error().message();
  pb::ClientRequest show;
  show.mutable_get_pipeline()->set_pipeline_id(std::string(300, 'p'));
  pb::ClientReply refused = h_.Call(show);
  EXPECT_EQ(refused.error().code(), pb::INVALID_ARGUMENT);
  EXPECT_NE(refused.error().message().find("the pipeline run id"), std::string::npos) << refused.error().message();
  EXPECT_EQ(SubmitOk(), "pipe-000001");  // still serving
}

TEST(PipelinesPaths, AStepOutsideTheTeamsRootsIsRefusedAtSubmit) {
  auto policy =
      jobspec::ParsePathPolicy(YAML::Load("default: {models: [/models], datasets: [/data], outputs: [/out]}"), "test");
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  CoordinatorOptions options;
  options.path_policy = std::make_shared<jobspec::PathPolicy>(*policy);
  Harness h(options);
  pb::ClientRequest req;
  req.mutable_submit_pipeline()->set_yaml(
      "steps:\n  - {name: t, job: {model_name_or_path: /models/m, dataset: /data/d.json, dataset_dir: /data, "
      "output_dir: /etc/x}}\n");
  pb::ClientReply reply = h.Call(req);
  EXPECT_EQ(reply.error().code(), pb::PERMISSION_DENIED);
  EXPECT_NE(reply.error().message().find("step 't'"), std::string::npos) << reply.error().message();
  EXPECT_NE(reply.error().message().find("train.output_dir"), std::string::npos) << reply.error().message();
}

class PipelineAuthzTest : public TeamsTest {
 protected:
  pb::ClientRequest SubmitTo(const std::string& team) {
    pb::ClientRequest r;
    r.mutable_submit_pipeline()->set_yaml(
        "steps:\n  - {name: t, job: {model_name_or_path: /m, dataset: d, output_dir: /out/" + team + "}}\n");
    r.mutable_submit_pipeline()->set_team(team);
    return r;
  }
};

TEST_F(PipelineAuthzTest, MembersSubmitAndCancelViewersReadOthersNothing) {
  const pb::ClientReply made = As("nina", SubmitTo("nlp"));
  Done(made);
  const std::string id = made.submit_pipeline().pipeline_id();
  EXPECT_NE(Refusal(As("vic", SubmitTo("nlp")), pb::PERMISSION_DENIED).find("run pipelines in"), std::string::npos);
  pb::ClientRequest show;
  show.mutable_get_pipeline()->set_pipeline_id(id);
  Done(As("vic", show));
  EXPECT_EQ(As("vic", show).get_pipeline().run().owner(), "nina");
  EXPECT_NE(Refusal(As("walt", show), pb::PERMISSION_DENIED).find("read pipelines of team 'nlp'"), std::string::npos);
  pb::ClientRequest ls;
  ls.mutable_list_pipelines();
  EXPECT_EQ(As("walt", ls).list_pipelines().runs_size(), 0);  // not its team: not listed
  EXPECT_EQ(As("vic", ls).list_pipelines().runs_size(), 1);
  pb::ClientRequest cancel;
  cancel.mutable_cancel_pipeline()->set_pipeline_id(id);
  EXPECT_NE(Refusal(As("vic", cancel), pb::PERMISSION_DENIED).find("cancel pipelines of"), std::string::npos);
  Done(As("nina", cancel));
  pb::ClientRequest missing;
  missing.mutable_get_pipeline()->set_pipeline_id("pipe-999999");
  EXPECT_NE(Refusal(As("nina", missing), pb::NOT_FOUND).find("no pipeline run 'pipe-999999'"), std::string::npos);
}

}  // namespace
}  // namespace anneal::coordinator::testing
