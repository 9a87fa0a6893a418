// The pipeline YAML: structure, DAG messages, references and refused keys (jobspec/pipeline.h).
#include "jobspec/pipeline.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace anneal::jobspec {
namespace {

const char* kGood = R"(name: weekly
steps:
  - name: train
    job:
      model_name_or_path: /models/base
      dataset: weekly
      output_dir: /out/weekly
  - name: eval
    needs: [train]
    job:
      kind: eval
      model_name_or_path: /models/base
      adapter_name_or_path: ${steps.train.output_dir}
      eval_dataset: heldout
      output_dir: ${steps.train.output_dir}/eval
  - name: promote
    needs: [eval]
    promote: {model: bot, train_step: train, eval_step: eval, metric: eval_loss, mode: min, margin: 0.01}
)";

StatusOr<PipelineSpec> Parse(const std::string& text, const std::map<std::string, std::string>& overrides = {}) {
  return ParsePipeline(text, "p.yaml", overrides);
}

void ExpectError(const std::string& text, const std::vector<std::string>& parts) {
  auto p = Parse(text);
  ASSERT_FALSE(p.ok()) << text;
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  for (const auto& part : parts) EXPECT_NE(p.status().message().find(part), std::string::npos) << p.status().message();
}

TEST(Pipeline, ParsesStepsKindsNeedsAndPromote) {
  auto p = Parse(kGood);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "weekly");
  ASSERT_EQ(p->steps.size(), 3u);
  EXPECT_EQ(p->steps[0].kind, StepKind::kTrain);
  EXPECT_EQ(p->steps[1].kind, StepKind::kEval);
  EXPECT_EQ(p->steps[1].needs, std::vector<std::string>{"train"});
  EXPECT_NE(p->steps[1].job_yaml.find("${steps.train.output_dir}"), std::string::npos);
  EXPECT_EQ(p->steps[2].kind, StepKind::kPromote);
  EXPECT_EQ(p->steps[2].promote.model, "bot");
  EXPECT_DOUBLE_EQ(p->steps[2].promote.margin, 0.01);
  EXPECT_FALSE(p->steps[2].promote.higher_is_better);
  EXPECT_EQ(p->steps[2].line, 16);  // "  - name: promote"
}

TEST(Pipeline, CycleIsRefusedNamingTheSteps) {
  ExpectError(R"(steps:
  - {name: a, needs: [b], job: {output_dir: /o/a}}
  - {name: b, needs: [a], job: {output_dir: /o/b}}
)",
              {"p.yaml:2", "step 'a'", "cycle", "a -> b -> a"});
}

TEST(Pipeline, SelfNeedIsACycle) {
  ExpectError("steps:\n  - {name: a, needs: [a], job: {output_dir: /o}}\n", {"step 'a'", "needs itself"});
}

TEST(Pipeline, UnknownNeedIsRefusedWithASuggestion) {
  ExpectError("steps:\n  - {name: train, job: {output_dir: /o}}\n  - {name: eval, needs: [trian], job: {kind: eval}}\n",
              {"p.yaml:3", "step 'eval'", "needs 'trian'", "did you mean 'train'"});
}

TEST(Pipeline, DuplicateStepNameIsRefused) {
  ExpectError("steps:\n  - {name: a, job: {output_dir: /o}}\n  - {name: a, job: {output_dir: /p}}\n",
              {"step 'a' is defined twice"});
}

TEST(Pipeline, CommandKeysAreRefused) {
  for (const char* key : {"run", "command", "script"}) {
    ExpectError(std::string("steps:\n  - name: a\n    ") + key + ": rm -rf /\n",
                {"key '" + std::string(key) + "'", "run no commands"});
  }
}

TEST(Pipeline, ExportStepsMergeATrainStepsAdapterAndCanBePromoted) {
  auto p = Parse(R"(steps:
  - {name: train, job: {output_dir: /o}}
  - name: merge
    needs: [train]
    job: {model_name_or_path: /m, adapter_name_or_path: "${steps.train.output_dir}", export_dir: /o/merged}
  - {name: eval, needs: [merge], job: {kind: eval, model_name_or_path: "${steps.merge.output_dir}", output_dir: /e}}
  - {name: promote, needs: [eval], promote: {model: m, train_step: merge, eval_step: eval}}
)");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->steps[1].kind, StepKind::kExport);  // export_dir without a kind, as LLaMA-Factory's export config
  EXPECT_EQ(StepKindName(p->steps[1].kind), "export");
  auto nested =
      Parse("steps:\n  - {name: x, kind: export, job: {kind: export, model_name_or_path: /m, export: {dir: /o}}}\n");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->steps[0].kind, StepKind::kExport);
  // The step's kind and its job's kind must agree.
  ExpectError("steps:\n  - {name: x, kind: export, job: {output_dir: /o}}\n",
              {"kind 'export' contradicts the job spec's kind 'train'"});
  ExpectError("steps:\n  - {name: x, kind: publish, job: {output_dir: /o}}\n",
              {"unknown kind 'publish' (train, eval, export, clean or promote)"});
}

TEST(Pipeline, UnknownStepKeyGetsASuggestion) {
  ExpectError("steps:\n  - {name: a, need: [b], job: {output_dir: /o}}\n",
              {"unknown key 'need'", "did you mean 'needs'"});
}

TEST(Pipeline, StepNeedsExactlyOneOfJobOrPromote) {
  ExpectError("steps:\n  - {name: a}\n", {"step 'a'", "exactly one of"});
}

TEST(Pipeline, KindContradictingTheJobSpecIsRefused) {
  ExpectError("steps:\n  - {name: a, kind: eval, job: {output_dir: /o}}\n", {"kind 'eval' contradicts", "'train'"});
}

TEST(Pipeline, JobFilePathIsRefusedWhereFilesAreNotOpened) {
  ExpectError("steps:\n  - {name: a, job: train.yaml}\n", {"step 'a'", "train.yaml", "anneal pipeline submit"});
}

TEST(Pipeline, ReferenceToANonAncestorIsRefused) {
  ExpectError(R"(steps:
  - {name: a, job: {output_dir: /o/a}}
  - {name: b, job: {output_dir: "${steps.a.output_dir}/b"}}
)",
              {"step 'b'", "${steps.a.output_dir}", "not among its needs", "needs: [a]"});
}

TEST(Pipeline, ReferenceToAnUnknownStepIsRefused) {
  ExpectError("steps:\n  - {name: a, job: {output_dir: \"${steps.zz.job_id}\"}}\n", {"step 'zz'", "not a step"});
}

TEST(Pipeline, UnknownReferenceFormIsRefused) {
  ExpectError("steps:\n  - {name: a, job: {output_dir: \"/o/${steps.a.colour}\"}}\n",
              {"unknown reference '${steps.a.colour}'", "${pipeline.id}"});
}

TEST(Pipeline, ReferenceToAPromoteStepIsRefused) {
  const std::string text =
      std::string(kGood) + "  - {name: after, needs: [promote], job: {output_dir: \"/o/${steps.promote.job_id}\"}}\n";
  ExpectError(text, {"step 'after'", "promote step, which runs no job"});
}

TEST(Pipeline, PromoteNeedsItsStepsAsAncestorsOfTheRightKind) {
  ExpectError(R"(steps:
  - {name: train, job: {output_dir: /o}}
  - {name: promote, promote: {model: m, train_step: train, eval_step: train}}
)",
              {"promote.train_step", "not among its needs"});
  ExpectError(R"(steps:
  - {name: train, job: {output_dir: /o}}
  - {name: promote, needs: [train], promote: {model: m, train_step: train, eval_step: train}}
)",
              {"promote.eval_step 'train' is not an eval job step"});
  ExpectError(R"(steps:
  - {name: ev, job: {kind: eval, output_dir: /o}}
  - {name: promote, needs: [ev], promote: {model: m, train_step: ev, eval_step: ev}}
)",
              {"promote.train_step 'ev' is not a train or export job step"});
  ExpectError("steps:\n  - {name: p, promote: {model: m, train_step: t}}\n", {"promote needs key 'eval_step'"});
  ExpectError("steps:\n  - {name: p, promote: {model: m, train_step: t, eval_step: e, mode: up}}\n",
              {"promote.mode", "min or max"});
}

TEST(Pipeline, OverridesReachJobStepsAndPromoteKeys) {
  auto p = Parse(kGood, {{"train.learning_rate", "1e-4"}, {"promote.margin", "0.5"}});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->steps[0].overrides, std::vector<std::string>{"learning_rate=1e-4"});
  EXPECT_DOUBLE_EQ(p->steps[2].promote.margin, 0.5);
  auto bad = Parse(kGood, {{"trian.learning_rate", "1"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no step 'trian'"), std::string::npos) << bad.status().message();
  auto nokey = Parse(kGood, {{"learning_rate", "1"}});
  ASSERT_FALSE(nokey.ok());
  EXPECT_NE(nokey.status().message().find("STEP.KEY"), std::string::npos);
}

TEST(Pipeline, MalformedYamlNamesTheLine) {
  ExpectError("steps:\n  - name: a\n    job: {output_dir: /o\n", {"p.yaml:", "malformed YAML"});
}

TEST(Pipeline, ReferencesAreFoundAndSubstituted) {
  auto refs = FindReferences(
      "a: ${pipeline.id}/${steps.t.metrics.eval_loss} ${pipeline.id} ${models.m.production.path}", "here");
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  ASSERT_EQ(refs->size(), 3u);
  EXPECT_EQ((*refs)[1].kind, Reference::Kind::kStepMetric);
  EXPECT_EQ((*refs)[1].target, "t");
  EXPECT_EQ((*refs)[1].key, "eval_loss");
  EXPECT_EQ((*refs)[2].kind, Reference::Kind::kModelProductionPath);
  EXPECT_EQ(SubstituteReferences("x ${pipeline.id} ${other} y", {{"pipeline.id", "pipe-000001"}}),
            "x pipe-000001 ${other} y");
  auto open = FindReferences("a: ${pipeline.id", "here");
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("unterminated"), std::string::npos);
}

TEST(Pipeline, TopologicalOrderPutsNeedsFirst) {
  auto p = Parse(R"(steps:
  - {name: c, needs: [b], job: {output_dir: /o/c}}
  - {name: a, job: {output_dir: /o/a}}
  - {name: b, needs: [a], job: {output_dir: /o/b}}
)");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<std::string> order;
  for (const auto* s : TopologicalOrder(*p)) order.push_back(s->name);
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));
  auto ancestors = Ancestors(*p, "c");
  std::sort(ancestors.begin(), ancestors.end());
  EXPECT_EQ(ancestors, (std::vector<std::string>{"a", "b"}));
}

TEST(Pipeline, FileJobsAreInlinedAndTheEmittedYamlParsesBack) {
  const auto dir = std::filesystem::temp_directory_path() / ("anneal-pipeline-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "train.yaml") << "model_name_or_path: /models/base\ndataset: d\noutput_dir: /out/x\n";
  std::ofstream(dir / "p.yaml") << "name: f\nsteps:\n  - {name: train, job: train.yaml}\n"
                                   "  - {name: eval, needs: [train], job: {kind: eval, output_dir: /o}}\n";
  auto p = ParsePipelineFile((dir / "p.yaml").string());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_NE(p->steps[0].job_yaml.find("/models/base"), std::string::npos);
  auto back = ParsePipeline(EmitPipeline(*p), "emitted");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << EmitPipeline(*p);
  ASSERT_EQ(back->steps.size(), 2u);
  EXPECT_EQ(back->steps[0].job_yaml, p->steps[0].job_yaml);
  EXPECT_EQ(back->steps[1].needs, p->steps[1].needs);
  std::ofstream(dir / "missing.yaml") << "steps:\n  - {name: t, job: nothere.yaml}\n";
  auto missing = ParsePipelineFile((dir / "missing.yaml").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nothere.yaml"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace anneal::jobspec
