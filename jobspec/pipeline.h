// Pipeline: the YAML of a pipeline run (docs/pipelines.md), parsed and validated, and its ${...} references.
//
// A pipeline is a list of named steps forming a DAG through `needs:`. A step is one of
//   - a job: `job:` holds a job spec (jobspec.h; inline mapping, or a file path read by the client), whose
//     `kind` (train, the default, eval, export: also when the spec gives export_dir without a kind, as a
//     LLaMA-Factory export config does, or clean: `data clean` writing a dataset into its output_dir that a later
//     step reads with dataset_dir: ${steps.NAME.output_dir}) is the step's kind;
//   - the built-in promote step: `promote:` holds model, train_step (a train or export step), eval_step, metric,
//     mode (min|max),
//     margin, and optionally production_eval_step (the step that evaluated the production version).
// No step runs a command: `run:`, `command:`, `script:` are refused. An export step merges an adapter into its
// base model (an HF model for serving); the promote step's train_step may name it, so the registry version is the
// merged model.
//
//   name: weekly-retrain
//   steps:
//     - name: train
//       job: {model_name_or_path: /models/base, dataset: weekly, output_dir: /data/nlp/outputs/weekly}
//     - name: eval
//       needs: [train]
//       job: {kind: eval, model_name_or_path: /models/base, adapter_name_or_path: "${steps.train.output_dir}",
//             eval_dataset: heldout, output_dir: "${steps.train.output_dir}/eval"}
//     - name: promote
//       needs: [eval]
//       promote: {model: support-bot, train_step: train, eval_step: eval, metric: eval_loss, mode: min}
//
// References (substituted in a job step's spec text when its job is created):
//   ${pipeline.id}                      the run's id
//   ${steps.NAME.output_dir}            the job's output directory      (NAME an ancestor via needs)
//   ${steps.NAME.job_id}                the job's id
//   ${steps.NAME.metrics.KEY}           the last value of KEY the job reported
//   ${models.NAME.production.path}      the files of the production version of registry model NAME
// A reference to another step must name an ancestor (a step reached through `needs`, transitively), so its
// value exists when the job is created. The promote step's train_step / eval_step must be ancestors too.
//
// Errors: INVALID_ARGUMENT naming source:line, the step and the key (unknown keys get a "did you mean").
//
// Thread-safety: pure functions over values (ParsePipelineFile reads files).
//
// Example:
//   ASSIGN_OR_RETURN(PipelineSpec p, ParsePipeline(text, "weekly.yaml", {"train.learning_rate=1e-4"}));
//   for (const PipelineStep& s : p.steps) ...;  // in the YAML's order; TopologicalOrder(p) gives a run order
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::jobspec {

enum class StepKind { kTrain, kEval, kExport, kClean, kPromote };
std::string_view StepKindName(StepKind kind);  // "train", "eval", "export", "clean", "promote"

struct PromoteSpec {
  std::string model;       // registry model name (the run's team)
  std::string train_step;  // registers this step's output_dir (a train step, or an export step: a merged model)
  std::string eval_step;   // judges with this step's metrics
  std::string metric = "eval_loss";
  bool higher_is_better = false;     // mode: max (accuracy) / min (loss, the default)
  double margin = 0.0;               // promoted only when better by more than this
  std::string production_eval_step;  // optional: the step that evaluated the production version

  bool operator==(const PromoteSpec&) const = default;
};

struct PipelineStep {
  std::string name;
  StepKind kind = StepKind::kTrain;
  std::vector<std::string> needs;
  std::string job_yaml;                // job steps: the job spec text (references unresolved)
  std::vector<std::string> overrides;  // job steps: job spec overrides "key=value" (from --set STEP.key=value)
  PromoteSpec promote;                 // kind promote
  int line = 0;                        // 1-based line of the step in the pipeline YAML

  bool operator==(const PipelineStep&) const = default;
};

struct PipelineSpec {
  std::string name;
  std::vector<PipelineStep> steps;  // in the YAML's order

  const PipelineStep* Find(std::string_view step) const;
};

struct ParsePipelineOptions {
  // A `job:` given as a file path is read (relative to base_dir). False (the coordinator): refused, naming the
  // step: the client inlines files before submitting.
  bool open_files = false;
  std::string base_dir;
};

// Parses and validates the structure: keys, kinds, the DAG (no cycle, no unknown need, no duplicate name),
// references (known forms, ancestors only), the promote step's settings. `overrides` are "STEP.KEY=VALUE":
// job spec keys of a job step (checked when the spec is parsed), or promote keys of a promote step. Job specs
// themselves are parsed by the caller (the coordinator substitutes references first: ValidatePipelineJobs).
StatusOr<PipelineSpec> ParsePipeline(std::string_view yaml_text, std::string_view source,
                                     const std::map<std::string, std::string>& overrides = {},
                                     const ParsePipelineOptions& options = {});
// Reads the file and parses it with files opened relative to its directory (the client).
StatusOr<PipelineSpec> ParsePipelineFile(const std::string& path,
                                         const std::map<std::string, std::string>& overrides = {});
// The self-contained YAML of a parsed pipeline (every job spec inline; overrides not applied): what
// `anneal pipeline submit` sends. ParsePipeline(EmitPipeline(p)) gives p back (lines aside).
std::string EmitPipeline(const PipelineSpec& pipeline);

// One ${...} reference in a job step's spec text.
struct Reference {
  enum class Kind { kPipelineId, kStepOutputDir, kStepJobId, kStepMetric, kModelProductionPath };
  std::string text;  // without ${ }: "steps.train.output_dir"
  Kind kind = Kind::kPipelineId;
  std::string target;  // the step or model name
  std::string key;     // kStepMetric: the metric
};
// Every reference in `text`, once each, in order of appearance; INVALID_ARGUMENT naming `where` and the text
// for an unknown form or an unterminated ${.
StatusOr<std::vector<Reference>> FindReferences(std::string_view text, std::string_view where);
// `text` with each ${REF} whose REF is a key of `values` replaced by its value (others are left as they are).
std::string SubstituteReferences(std::string_view text, const std::map<std::string, std::string>& values);

// Steps in an order where every step comes after its needs (YAML order among independent steps).
std::vector<const PipelineStep*> TopologicalOrder(const PipelineSpec& pipeline);
// The names of the steps `step` depends on, directly or transitively.
std::vector<std::string> Ancestors(const PipelineSpec& pipeline, std::string_view step);

}  // namespace anneal::jobspec
