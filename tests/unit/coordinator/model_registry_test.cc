// ModelRegistry (coordinator/model_registry.h) over a real StateStore in a temp dir: promote-if-better end to
// end, the stage machine edge by edge, every refusal, idempotency, files and dataset hashes read from real
// files, persistence across a reload, and the protection of versions' directories.
#include "coordinator/model_registry.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "coordinator/checkpoint_registry.h"
#include "temp_store.h"

namespace anneal::coordinator {
namespace {

namespace fs = std::filesystem;
using testing::TempStore;

// A directory of real files under the temp dir, removed at the end.
class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() /
              ("anneal-models-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string Write(const std::string& rel, const std::string& content) const {
    const fs::path p = path_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string path(const std::string& rel = "") const { return rel.empty() ? path_.string() : (path_ / rel).string(); }

 private:
  fs::path path_;
};

pb::JobRecord TrainJob(const std::string& id, const std::string& output_dir, const std::string& team = "nlp",
                       const std::string& extra = "") {
  pb::JobRecord r;
  r.set_job_id(id);
  r.set_kind(pb::JOB_TRAIN);
  r.set_state(pb::JOB_SUCCEEDED);
  r.set_team(team);
  r.set_output_dir(output_dir);
  r.set_pipeline_id("p-1");
  r.set_pipeline_step("train");
  r.set_spec_yaml("model_name_or_path: /models/base\ndataset: alpaca\noutput_dir: " + output_dir + "\n" + extra);
  return r;
}

PromoteRequest Request(const pb::JobRecord& job, double eval_loss, const std::string& eval_set = "held=sha256:aa") {
  PromoteRequest r;
  r.team = "nlp";
  r.model = "summarizer";
  r.source_job = job;
  r.pipeline_id = job.pipeline_id();
  r.step = "promote";
  r.metric = "eval_loss";
  r.candidate_metrics = {{"eval_loss", eval_loss}};
  r.eval_set = eval_set;
  r.actor = "nina";
  return r;
}

class ModelRegistryTest : public ::testing::Test {
 protected:
  PromoteResult Promote(const PromoteRequest& r) {
    auto result = models_.RegisterAndPromoteIfBetter(r, t_.clock()->NowMs(), *t_.batch());
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    t_.Commit();
    return result.ok() ? *result : PromoteResult{};
  }
  pb::ModelStage Stage(uint32_t v) { return models_.FindVersion("nlp", "summarizer", v)->stage(); }

  TempStore t_;
  ModelRegistry models_;
};

TEST_F(ModelRegistryTest, TheFirstVersionIsPromotedAndRecordsWhereItCameFrom) {
  const PromoteResult r = Promote(Request(TrainJob("job-1", "/out/a/"), 0.9));
  EXPECT_TRUE(r.promoted);
  EXPECT_NE(r.decision.find("first version"), std::string::npos) << r.decision;
  const pb::ModelVersionRecord& v = r.version;
  EXPECT_EQ(v.version(), 1u);
  EXPECT_EQ(v.stage(), pb::MODEL_PRODUCTION);
  EXPECT_EQ(v.source_job_id(), "job-1");
  EXPECT_EQ(v.pipeline_id(), "p-1");
  EXPECT_EQ(v.pipeline_step(), "train");
  EXPECT_EQ(v.path(), "/out/a");  // normalized
  EXPECT_EQ(v.base_model(), "/models/base");
  EXPECT_EQ(v.artifact(), pb::MODEL_PEFT_ADAPTER);
  EXPECT_NE(v.spec_yaml().find("/models/base"), std::string::npos);
  ASSERT_EQ(v.datasets_size(), 1);
  EXPECT_EQ(v.datasets(0).name(), "alpaca");
  ASSERT_EQ(v.evals_size(), 1);
  EXPECT_EQ(v.evals(0).eval_set(), "held=sha256:aa");
  EXPECT_EQ(v.evals(0).metrics().at("eval_loss"), 0.9);
  EXPECT_TRUE(v.decision().promoted());
  EXPECT_EQ(v.decision().production_version(), 0u);
  ASSERT_NE(models_.Production("nlp", "summarizer"), nullptr);
  EXPECT_EQ(models_.Production("nlp", "summarizer")->version(), 1u);
  EXPECT_EQ(models_.FindModel("nlp", "summarizer")->created_by(), "nina");
}

TEST_F(ModelRegistryTest, AFullFinetuneIsAMergedModel) {
  const PromoteResult r = Promote(Request(TrainJob("job-1", "/out/a", "nlp", "finetuning_type: full\n"), 0.9));
  EXPECT_EQ(r.version.artifact(), pb::MODEL_MERGED);
}

TEST_F(ModelRegistryTest, ABetterCandidateReplacesProductionWhichIsArchived) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  PromoteRequest second = Request(TrainJob("job-2", "/out/b"), 0.8);
  second.margin = 0.05;
  const PromoteResult r = Promote(second);
  EXPECT_TRUE(r.promoted) << r.decision;
  EXPECT_EQ(Stage(1), pb::MODEL_ARCHIVED);
  EXPECT_EQ(Stage(2), pb::MODEL_PRODUCTION);
  // Compared with the number production recorded for the same eval set; both numbers are on the version.
  EXPECT_EQ(r.version.decision().production_version(), 1u);
  EXPECT_DOUBLE_EQ(r.version.decision().production_value(), 0.9);
  EXPECT_DOUBLE_EQ(r.version.decision().candidate_value(), 0.8);
  EXPECT_NE(r.decision.find("recorded for this eval set"), std::string::npos) << r.decision;
  const pb::ModelVersionRecord* old = models_.FindVersion("nlp", "summarizer", 1);
  EXPECT_EQ(old->history(old->history_size() - 1).reason(), "replaced by v2");
  const pb::ModelStageChange& entered = r.version.history(r.version.history_size() - 1);
  EXPECT_EQ(entered.to(), pb::MODEL_PRODUCTION);
  EXPECT_EQ(entered.actor(), "nina");
  EXPECT_EQ(entered.reason().rfind("step 'promote' of pipeline p-1: promoted: better by 0.1", 0), 0u)
      << entered.reason();
}

TEST_F(ModelRegistryTest, AWorseCandidateStaysACandidateWithBothNumbersRecorded) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.8));
  const PromoteResult r = Promote(Request(TrainJob("job-2", "/out/b"), 0.95));
  EXPECT_FALSE(r.promoted);
  EXPECT_EQ(Stage(1), pb::MODEL_PRODUCTION);
  EXPECT_EQ(Stage(2), pb::MODEL_CANDIDATE);
  EXPECT_FALSE(r.version.decision().promoted());
  EXPECT_DOUBLE_EQ(r.version.decision().candidate_value(), 0.95);
  EXPECT_DOUBLE_EQ(r.version.decision().production_value(), 0.8);
  EXPECT_NE(r.decision.find("worse"), std::string::npos) << r.decision;
}

TEST_F(ModelRegistryTest, BetterWithinTheMarginIsNotPromoted) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.80));
  PromoteRequest second = Request(TrainJob("job-2", "/out/b"), 0.79);
  second.margin = 0.05;
  EXPECT_FALSE(Promote(second).promoted);
  EXPECT_EQ(Stage(2), pb::MODEL_CANDIDATE);
}

TEST_F(ModelRegistryTest, ProductionMetricsFromThePipelineWinAndAreRecordedOnProduction) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.5));  // recorded 0.5 on held=sha256:aa
  PromoteRequest second = Request(TrainJob("job-2", "/out/b"), 0.7);
  second.production_metrics = std::map<std::string, double>{{"eval_loss", 0.9}};  // re-evaluated today
  second.production_eval_job_id = "job-3";
  const PromoteResult r = Promote(second);
  EXPECT_TRUE(r.promoted) << r.decision;  // 0.7 < 0.9 (not the stale 0.5)
  EXPECT_NE(r.decision.find("evaluated in pipeline p-1"), std::string::npos) << r.decision;
  const pb::ModelVersionRecord* first = models_.FindVersion("nlp", "summarizer", 1);
  ASSERT_EQ(first->evals_size(), 2);
  EXPECT_EQ(first->evals(1).job_id(), "job-3");
  EXPECT_EQ(first->evals(1).metrics().at("eval_loss"), 0.9);
}

TEST_F(ModelRegistryTest, ANumberFromAnotherEvalSetIsNotComparable) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9, "held=sha256:aa"));
  const PromoteResult r = Promote(Request(TrainJob("job-2", "/out/b"), 0.1, "held=sha256:bb"));
  EXPECT_FALSE(r.promoted);
  EXPECT_NE(r.decision.find("not comparable"), std::string::npos) << r.decision;
  EXPECT_NE(r.decision.find("production_metrics"), std::string::npos) << r.decision;  // what to add
  EXPECT_FALSE(r.version.decision().has_production_value());
  EXPECT_EQ(Stage(2), pb::MODEL_CANDIDATE);
}

TEST_F(ModelRegistryTest, ACandidateWithoutTheMetricIsRegisteredButNotPromoted) {
  PromoteRequest r = Request(TrainJob("job-1", "/out/a"), 0);
  r.candidate_metrics = {{"eval_accuracy", 0.4}};
  const PromoteResult result = Promote(r);
  EXPECT_FALSE(result.promoted);
  EXPECT_EQ(result.version.stage(), pb::MODEL_CANDIDATE);
  EXPECT_NE(result.decision.find("eval_accuracy"), std::string::npos) << result.decision;
  EXPECT_EQ(models_.Production("nlp", "summarizer"), nullptr);
}

TEST_F(ModelRegistryTest, TheSameSourceJobTwiceIsOneVersion) {
  const PromoteResult first = Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  const PromoteResult again = Promote(Request(TrainJob("job-1", "/out/a"), 0.1));  // a pipeline retried
  EXPECT_EQ(again.version.version(), 1u);
  EXPECT_TRUE(again.promoted);
  EXPECT_EQ(again.decision, first.decision);
  EXPECT_EQ(models_.Versions("nlp", "summarizer").size(), 1u);
}

TEST_F(ModelRegistryTest, RefusalsNameWhatAndWhyAndLeaveNoTrace) {
  struct Case {
    const char* name;
    std::function<void(PromoteRequest&)> change;
    StatusCode code;
    const char* says;
  };
  const Case cases[] = {
      {"running job", [](PromoteRequest& r) { r.source_job.set_state(pb::JOB_RUNNING); },
       StatusCode::kFailedPrecondition, "only a SUCCEEDED train or export job"},
      {"failed job", [](PromoteRequest& r) { r.source_job.set_state(pb::JOB_FAILED); }, StatusCode::kFailedPrecondition,
       "FAILED"},
      {"eval job", [](PromoteRequest& r) { r.source_job.set_kind(pb::JOB_EVAL); }, StatusCode::kFailedPrecondition,
       "EVAL job"},
      {"no output_dir", [](PromoteRequest& r) { r.source_job.set_output_dir(""); }, StatusCode::kFailedPrecondition,
       "no output_dir"},
      {"another team's job", [](PromoteRequest& r) { r.source_job.set_team("vision"); },
       StatusCode::kFailedPrecondition, "belongs to team 'vision'"},
      {"bad model name", [](PromoteRequest& r) { r.model = "a/b"; }, StatusCode::kInvalidArgument, "model name 'a/b'"},
      {"empty model name", [](PromoteRequest& r) { r.model = ""; }, StatusCode::kInvalidArgument,
       "model name is empty"},
      {"empty metric", [](PromoteRequest& r) { r.metric = ""; }, StatusCode::kInvalidArgument, "metric"},
      {"negative margin", [](PromoteRequest& r) { r.margin = -1; }, StatusCode::kInvalidArgument, "margin -1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    PromoteRequest r = Request(TrainJob("job-1", "/out/a"), 0.9);
    c.change(r);
    auto result = models_.RegisterAndPromoteIfBetter(r, 0, *t_.batch());
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), c.code) << result.status().ToString();
    EXPECT_NE(result.status().message().find(c.says), std::string::npos) << result.status().message();
    EXPECT_TRUE(t_.batch()->empty());
    EXPECT_EQ(models_.size(), 0u);
  }
  // Still serves afterwards.
  EXPECT_TRUE(Promote(Request(TrainJob("job-1", "/out/a"), 0.9)).promoted);
}

TEST_F(ModelRegistryTest, AJobInsideAnotherVersionsDirectoryIsRefused) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  auto nested = models_.RegisterAndPromoteIfBetter(Request(TrainJob("job-2", "/out/a/inner"), 0.5), 0, *t_.batch());
  ASSERT_FALSE(nested.ok());
  EXPECT_EQ(nested.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(nested.status().message().find("overlaps /out/a"), std::string::npos) << nested.status().message();
}

// ---- the stage machine, edge by edge

TEST_F(ModelRegistryTest, StageEdgesAllowedAndRefused) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.5));  // v1 production
  Promote(Request(TrainJob("job-2", "/out/b"), 0.9));  // v2 candidate (worse)
  Promote(Request(TrainJob("job-3", "/out/c"), 0.9));  // v3 candidate (worse)
  auto& batch = *t_.batch();
  auto refused = [&](StatusOr<pb::ModelVersionRecord> r, const char* says) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().message();
  };
  // PRODUCTION -> ARCHIVED by hand: refused (only a replacement archives production).
  refused(models_.Archive("nlp", "summarizer", 1, "nina", "", 0, batch), "is in production");
  // PRODUCTION -> PRODUCTION: refused.
  refused(models_.Promote("nlp", "summarizer", 1, "nina", "", 0, batch), "already production");
  // CANDIDATE -> ARCHIVED.
  auto archived = models_.Archive("nlp", "summarizer", 3, "nina", "bad data", 5, batch);
  ASSERT_TRUE(archived.ok()) << archived.status().ToString();
  EXPECT_EQ(archived->stage(), pb::MODEL_ARCHIVED);
  EXPECT_EQ(archived->history(archived->history_size() - 1).reason(), "archived by hand: bad data");
  // ARCHIVED -> ARCHIVED: refused.
  refused(models_.Archive("nlp", "summarizer", 3, "nina", "", 0, batch), "already archived");
  // CANDIDATE -> PRODUCTION by hand; the old production (v1) PRODUCTION -> ARCHIVED (replaced).
  auto promoted = models_.Promote("nlp", "summarizer", 2, "nina", "reviewed", 6, batch);
  ASSERT_TRUE(promoted.ok()) << promoted.status().ToString();
  EXPECT_EQ(Stage(2), pb::MODEL_PRODUCTION);
  EXPECT_EQ(Stage(1), pb::MODEL_ARCHIVED);
  EXPECT_EQ(promoted->promoted_by(), "nina");
  EXPECT_EQ(promoted->promoted_at_ms(), 6);
  // ARCHIVED -> PRODUCTION (rollback); v2 archived.
  ASSERT_TRUE(models_.Promote("nlp", "summarizer", 1, "tess", "rollback", 7, batch).ok());
  EXPECT_EQ(Stage(1), pb::MODEL_PRODUCTION);
  EXPECT_EQ(Stage(2), pb::MODEL_ARCHIVED);
  EXPECT_EQ(models_.FindModel("nlp", "summarizer")->production_version(), 1u);
  // Any edge into CANDIDATE: refused (checked on the pure function, no request makes one).
  pb::ModelVersionRecord v = *models_.FindVersion("nlp", "summarizer", 2);
  refused(CheckStageChange(v, pb::MODEL_CANDIDATE), "never becomes a candidate again");
  v.set_stage(pb::MODEL_PRODUCTION);
  refused(CheckStageChange(v, pb::MODEL_CANDIDATE), "never becomes a candidate again");
  // Unknown model or version: NOT_FOUND naming it.
  auto missing = models_.Promote("nlp", "summarizer", 9, "nina", "", 0, batch);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no version 9"), std::string::npos);
  EXPECT_EQ(models_.Archive("nlp", "nope", 1, "nina", "", 0, batch).status().code(), StatusCode::kNotFound);
}

TEST_F(ModelRegistryTest, EverythingSurvivesAReload) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  Promote(Request(TrainJob("job-2", "/out/b"), 0.8));
  Promote(Request(TrainJob("job-3", "/out/c"), 0.85));
  ASSERT_TRUE(models_.Archive("nlp", "summarizer", 3, "nina", "", 1, *t_.batch()).ok());
  t_.Commit();
  const auto before = models_.Versions("nlp", "summarizer");
  t_.Reopen();
  ModelRegistry reloaded;
  ASSERT_TRUE(reloaded.Load(*t_.store()).ok());
  const auto after = reloaded.Versions("nlp", "summarizer");
  ASSERT_EQ(after.size(), 3u);
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].SerializeAsString(), before[i].SerializeAsString());
  EXPECT_EQ(reloaded.Production("nlp", "summarizer")->version(), 2u);
  EXPECT_EQ(reloaded.FindModel("nlp", "summarizer")->latest_version(), 3u);
  // The next version continues the numbering; the comparison uses the reloaded production's recorded number.
  auto next = reloaded.RegisterAndPromoteIfBetter(Request(TrainJob("job-4", "/out/d"), 0.7), 2, *t_.batch());
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->version.version(), 4u);
  EXPECT_TRUE(next->promoted) << next->decision;
  EXPECT_DOUBLE_EQ(next->version.decision().production_value(), 0.8);
}

TEST_F(ModelRegistryTest, UncommittedChangesDoNotSurviveAReload) {
  ASSERT_TRUE(models_.RegisterAndPromoteIfBetter(Request(TrainJob("job-1", "/out/a"), 0.9), 0, *t_.batch()).ok());
  t_.Reopen();  // the round's batch was never committed (a crash before Flush)
  ModelRegistry reloaded;
  ASSERT_TRUE(reloaded.Load(*t_.store()).ok());
  EXPECT_EQ(reloaded.size(), 0u);
}

// ---- files, datasets, protection

TEST_F(ModelRegistryTest, RecordsTheVersionsFilesAndTheTrainingDataHashFromRealFiles) {
  TempDir dir;
  dir.Write("out/adapter_config.json", "{}");
  dir.Write("out/adapter_model.safetensors", "abc");
  dir.Write("out/.anneal-lock", "job 1");
  dir.Write("out/checkpoint-10/model.safetensors", "x");
  dir.Write("data/alpaca.json", "[{\"instruction\": \"hi\"}]");
  pb::JobRecord job = TrainJob("job-1", dir.path("out"), "nlp", "dataset_dir: " + dir.path("data") + "\n");
  job.set_spec_yaml("model_name_or_path: /models/base\ndataset: alpaca.json\ndataset_dir: " + dir.path("data") +
                    "\noutput_dir: " + dir.path("out") + "\n");
  const PromoteResult r = Promote(Request(job, 0.9));
  ASSERT_EQ(r.version.files_size(), 2) << r.version.files_note();  // no dot files, no checkpoint-N/
  EXPECT_EQ(r.version.files(0).path(), "adapter_config.json");
  EXPECT_EQ(r.version.files(1).path(), "adapter_model.safetensors");
  EXPECT_EQ(r.version.files(1).size_bytes(), 3u);
  EXPECT_EQ(r.version.files(1).sha256(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(r.version.total_bytes(), 5u);
  ASSERT_EQ(r.version.datasets_size(), 1);
  EXPECT_EQ(r.version.datasets(0).content_hash().rfind("sha256:", 0), 0u) << r.version.datasets(0).content_hash();
}

TEST_F(ModelRegistryTest, AnUnreadableDirectoryIsNotedNotFatal) {
  const PromoteResult r = Promote(Request(TrainJob("job-1", "/nonexistent/anneal/out"), 0.9));
  EXPECT_EQ(r.version.files_size(), 0);
  EXPECT_NE(r.version.files_note().find("not readable on the coordinator"), std::string::npos)
      << r.version.files_note();
  EXPECT_TRUE(r.version.datasets(0).content_hash().empty());
}

TEST_F(ModelRegistryTest, ProtectsAVersionsDirectoryAndRefusesOverlappingOutputDirs) {
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  EXPECT_TRUE(models_.Protects("/out/a"));
  EXPECT_TRUE(models_.Protects("/out/a/"));
  EXPECT_TRUE(models_.Protects("/out/a/checkpoint-10"));
  EXPECT_TRUE(models_.Protects("/out"));  // deleting a parent deletes the version
  EXPECT_FALSE(models_.Protects("/out/ab"));
  EXPECT_FALSE(models_.Protects("/out/b/checkpoint-10"));
  EXPECT_TRUE(models_.CheckOutputDir("/out/b").ok());
  for (const char* dir : {"/out/a", "/out/a/", "/out", "/out/a/retrain"}) {
    const Status st = models_.CheckOutputDir(dir);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << dir;
    EXPECT_NE(st.message().find("nlp/summarizer v1 (production)"), std::string::npos) << st.message();
  }
}

TEST_F(ModelRegistryTest, CheckpointRetentionNeverDeletesARegisteredVersionsFiles) {
  CheckpointRegistry checkpoints(t_.batch(), t_.store());
  checkpoints.SetProtector([this](const std::string& path) { return models_.Protects(path); });
  Promote(Request(TrainJob("job-1", "/out/a"), 0.9));
  auto commit = [&](const std::string& job, const std::string& dir, uint64_t step) {
    pb::CheckpointRecord c;
    c.set_job_id(job);
    c.set_step(step);
    c.set_path(dir + "/checkpoint-" + std::to_string(step));
    c.set_state(pb::CHECKPOINT_COMMITTED);
    checkpoints.RecordCommitted(c);
  };
  checkpoints.Track("job-1", {.save_total_limit = 1});
  checkpoints.Track("job-2", {.save_total_limit = 1});
  for (uint64_t step : {10, 20, 30}) {
    commit("job-1", "/out/a", step);
    commit("job-2", "/out/b", step);
  }
  EXPECT_TRUE(checkpoints.ApplyRetention("job-1").empty());   // inside the registered version: kept
  EXPECT_EQ(checkpoints.ApplyRetention("job-2").size(), 2u);  // an unregistered run: retention as usual
}

TEST(ModelName, Rules) {
  EXPECT_TRUE(CheckModelName("summarizer-v2.1_en").ok());
  for (const char* bad : {"", "-x", ".x", "a/b", "a b", "ä"}) {
    EXPECT_EQ(CheckModelName(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(CheckModelName(std::string(65, 'a')).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace anneal::coordinator
