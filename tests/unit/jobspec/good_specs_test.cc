// Valid job specs: both spellings, defaults, overrides, round trip through ToYaml, LLaMA-Factory's own
// example configs, and the cluster-fit check.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {
namespace {

const std::string kSourceDir = ANNEAL_SOURCE_DIR;

bool HasWarningContaining(const JobSpec& s, const std::string& text) {
  return std::any_of(s.warnings.begin(), s.warnings.end(),
                     [&](const std::string& w) { return w.find(text) != std::string::npos; });
}

constexpr const char* kMinimalFlat = R"(
model_name_or_path: /models/tiny
dataset: alpaca
output_dir: /tmp/out
)";

TEST(JobSpecParse, MinimalFlatSpecGetsEveryDefault) {
  auto spec = ParseJobSpec(kMinimalFlat, "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kTrain);
  EXPECT_EQ(spec->model.model_name_or_path, "/models/tiny");
  EXPECT_EQ(spec->data.dataset, std::vector<std::string>{"alpaca"});
  EXPECT_EQ(spec->train.output_dir, "/tmp/out");
  EXPECT_EQ(spec->finetuning.type, FinetuningType::kLora);
  EXPECT_EQ(spec->finetuning.lora_rank, 8);
  EXPECT_DOUBLE_EQ(spec->finetuning.lora_alpha, 16.0);
  EXPECT_EQ(spec->finetuning.lora_target, std::vector<std::string>{"all"});
  EXPECT_EQ(spec->data.template_name, "default");
  EXPECT_EQ(spec->data.cutoff_len, 2048);
  EXPECT_FALSE(spec->data.max_samples.has_value());
  EXPECT_DOUBLE_EQ(spec->train.learning_rate, 5e-5);
  EXPECT_DOUBLE_EQ(spec->train.num_train_epochs, 3.0);
  EXPECT_EQ(spec->train.max_steps, -1);
  EXPECT_EQ(spec->train.lr_scheduler_type, "linear");
  EXPECT_EQ(spec->train.eval_strategy, "no");
  EXPECT_EQ(spec->train.device, "auto");
  EXPECT_EQ(spec->resources.world_size(), 1);
  EXPECT_EQ(spec->resources.data_parallel(), 1);
  EXPECT_EQ(spec->resources.comm_timeout_s, 600);
  EXPECT_EQ(spec->scheduling.max_attempts, 3);
  EXPECT_TRUE(spec->warnings.empty());
}

TEST(JobSpecParse, LoraAlphaDefaultsToTwiceTheRank) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "lora_rank: 32\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_DOUBLE_EQ(spec->finetuning.lora_alpha, 64.0);
  auto given = ParseJobSpec(std::string(kMinimalFlat) + "lora_rank: 32\nlora_alpha: 8\n", "job.yaml");
  ASSERT_TRUE(given.ok());
  EXPECT_DOUBLE_EQ(given->finetuning.lora_alpha, 8.0);
}

TEST(JobSpecParse, FlatAndNestedSpellingsGiveTheSameSpec) {
  const char* flat = R"(
model_name_or_path: /m
adapter_name_or_path: /a
stage: sft
finetuning_type: lora
lora_rank: 16
lora_alpha: 24
lora_dropout: 0.1
lora_target: q_proj,v_proj
use_rslora: true
dataset: [alpaca, identity]
dataset_dir: /data
template: llama3
cutoff_len: 512
max_samples: 100
val_size: 0.1
packing: true
output_dir: /out
per_device_train_batch_size: 4
per_device_eval_batch_size: 8
gradient_accumulation_steps: 2
learning_rate: 1.0e-4
num_train_epochs: 1.5
lr_scheduler_type: cosine
warmup_ratio: 0.1
weight_decay: 0.01
adam_beta1: 0.8
adam_beta2: 0.95
adam_epsilon: 1.0e-6
max_grad_norm: 0.5
bf16: true
seed: 7
gradient_checkpointing: true
logging_steps: 5
save_steps: 100
save_total_limit: 2
metric_for_best_model: eval_loss
greater_is_better: false
eval_strategy: steps
eval_steps: 50
nodes: 2
gpus_per_node: 4
tensor_model_parallel_size: 2
pipeline_model_parallel_size: 2
priority: 5
max_attempts: 4
)";
  const char* nested = R"(
kind: train
model: {model_name_or_path: /m, adapter_name_or_path: /a}
finetuning:
  stage: sft
  type: lora
  lora_rank: 16
  lora_alpha: 24
  lora_dropout: 0.1
  lora_target: [q_proj, v_proj]
  use_rslora: true
data:
  dataset: alpaca, identity
  dataset_dir: /data
  template: llama3
  cutoff_len: 512
  max_samples: 100
  val_size: 0.1
  packing: true
train:
  output_dir: /out
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 8
  gradient_accumulation_steps: 2
  learning_rate: 1e-4
  num_train_epochs: 1.5
  lr_scheduler_type: cosine
  warmup_ratio: 0.1
  weight_decay: 0.01
  adam_beta1: 0.8
  adam_beta2: 0.95
  adam_epsilon: 1e-6
  max_grad_norm: 0.5
  bf16: true
  seed: 7
  gradient_checkpointing: true
  logging_steps: 5
  save_steps: 100
  save_total_limit: 2
  metric_for_best_model: eval_loss
  greater_is_better: false
  eval_strategy: steps
  eval_steps: 50
resources:
  nodes: 2
  gpus_per_node: 4
  parallel: {tensor: 2, pipeline: 2}
scheduling: {priority: 5, max_attempts: 4}
)";
  auto a = ParseJobSpec(flat, "flat.yaml");
  auto b = ParseJobSpec(nested, "nested.yaml");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(*a, *b) << ToYaml(*a) << "\n---\n" << ToYaml(*b);
  EXPECT_EQ(a->finetuning.lora_target, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(a->data.dataset, (std::vector<std::string>{"alpaca", "identity"}));
  EXPECT_EQ(a->data.max_samples, 100);
  EXPECT_EQ(a->resources.tensor_parallel, 2);
  EXPECT_EQ(a->resources.pipeline_parallel, 2);
  EXPECT_EQ(a->resources.data_parallel(), 2);
  EXPECT_DOUBLE_EQ(a->train.learning_rate, 1e-4);
}

TEST(JobSpecParse, NestedParallelKeysAndFlatResourceKeysAgree) {
  auto a = ParseJobSpec(std::string(kMinimalFlat) +
                            "resources: {gpus_per_node: 4, parallel: {tensor: 2, zero: 1, sequence_parallel: true, "
                            "expert: 2}}\n",
                        "a.yaml");
  auto b = ParseJobSpec(std::string(kMinimalFlat) +
                            "gpus_per_node: 4\ntensor_model_parallel_size: 2\nzero_stage: 1\nsequence_parallel: true\n"
                            "expert_model_parallel_size: 2\n",
                        "b.yaml");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  // A document with a section is in the nested spelling: activation checkpointing keeps Anneal's default (off);
  // a flat one is LLaMA-Factory's, where it is on.
  EXPECT_FALSE(a->train.gradient_checkpointing);
  EXPECT_TRUE(b->train.gradient_checkpointing);
  b->train.gradient_checkpointing = false;
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(a->resources.zero_stage, 1);
  EXPECT_TRUE(a->resources.sequence_parallel);
  EXPECT_EQ(a->resources.expert_parallel, 2);
}

TEST(JobSpecParse, IgnoredLlamaFactoryKeysBecomeWarnings) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) +
                               "dataloader_num_workers: 4\ndisable_tqdm: true\nlogging_dir: logs\n"
                               "evaluation_strategy: \"no\"\nddp_timeout: 180000000\n",
                           "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(HasWarningContaining(*spec, "key 'dataloader_num_workers' at job.yaml:5 is ignored"));
  EXPECT_TRUE(HasWarningContaining(*spec, "key 'disable_tqdm' at job.yaml:6 is ignored"));
  EXPECT_TRUE(HasWarningContaining(*spec, "key 'logging_dir' at job.yaml:7 is ignored: logs are kept by the agent"));
  EXPECT_TRUE(
      HasWarningContaining(*spec, "key 'evaluation_strategy' at job.yaml:8 is deprecated: use 'eval_strategy'"));
  EXPECT_EQ(spec->resources.comm_timeout_s, 180000000);
}

TEST(JobSpecParse, DoTrainFalseMeansAnEvalJob) {
  auto spec = ParseJobSpec("model_name_or_path: /m\noutput_dir: /o\ndo_train: false\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kEval);
}

TEST(JobSpecParse, ExportDirMeansAnExportJobWritingThere) {
  auto spec =
      ParseJobSpec("model_name_or_path: /m\nadapter_name_or_path: /a\nexport_dir: /e/\nexport_size: 2\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kExport);
  EXPECT_EQ(spec->train.output_dir, "/e/");  // the job's output is the export
  EXPECT_EQ(spec->export_.size_gb, 2);
  // do_train: false beside it is still an export; output_dir alone names the export directory too.
  auto no_train =
      ParseJobSpec("model_name_or_path: /m\ndo_train: false\nexport_dir: /e\noutput_dir: /e/\n", "job.yaml");
  ASSERT_TRUE(no_train.ok()) << no_train.status().ToString();
  EXPECT_EQ(no_train->kind, JobKind::kExport);
  auto nested = ParseJobSpec("kind: export\nmodel:\n  model_name_or_path: /m\ntrain:\n  output_dir: /e\n", "job.yaml");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->export_.dir, "/e");
}

TEST(JobSpecParse, OnlyAnExportJobWritesTheExportSection) {
  auto exported = ParseJobSpec("model_name_or_path: /m\nexport_dir: /e\nexport_size: 3\n", "job.yaml");
  ASSERT_TRUE(exported.ok()) << exported.status().ToString();
  const std::string text = ToYaml(*exported);
  EXPECT_NE(text.find("export:"), std::string::npos) << text;
  auto back = ParseJobSpec(text, "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << text;
  EXPECT_EQ(*back, *exported);
  auto trained = ParseJobSpec(kMinimalFlat, "job.yaml");
  ASSERT_TRUE(trained.ok());
  EXPECT_EQ(ToYaml(*trained).find("export:"), std::string::npos);
}

TEST(JobSpecParse, NullValuesKeepTheDefault) {
  auto spec =
      ParseJobSpec(std::string(kMinimalFlat) + "resume_from_checkpoint: null\nmax_samples:\ntrain:\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->train.resume_from_checkpoint, "");
  EXPECT_FALSE(spec->data.max_samples.has_value());
}

TEST(JobSpecParse, NeatPackingImpliesPacking) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "neat_packing: true\n", "job.yaml");
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(spec->data.packing);
}

TEST(JobSpecOverrides, FlatAndDottedOverridesReplaceFileValues) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "learning_rate: 1.0e-4\nlora_rank: 4\n", "job.yaml",
                           {"train.learning_rate=3e-4", "lora_rank=16", "dataset=a,b", "bf16=true",
                            "resources.parallel.tensor=1", "max_samples=null", "lora_target=[q_proj, k_proj]"});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_DOUBLE_EQ(spec->train.learning_rate, 3e-4);
  EXPECT_EQ(spec->finetuning.lora_rank, 16);
  EXPECT_DOUBLE_EQ(spec->finetuning.lora_alpha, 32.0);  // default follows the overridden rank
  EXPECT_EQ(spec->data.dataset, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(spec->train.bf16);
  EXPECT_EQ(spec->finetuning.lora_target, (std::vector<std::string>{"q_proj", "k_proj"}));
}

TEST(JobSpecOverrides, LaterOverrideWins) {
  auto spec = ParseJobSpec(kMinimalFlat, "job.yaml", {"seed=1", "train.seed=2"});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->train.seed, 2);
}

TEST(JobSpecOverrides, OverrideSuppliesARequiredKey) {
  auto spec = ParseJobSpec("dataset: d\noutput_dir: /o\n", "job.yaml", {"model_name_or_path=/models/x"});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model.model_name_or_path, "/models/x");
}

TEST(JobSpecRoundTrip, ToYamlParsesBackToTheSameSpec) {
  const char* rich = R"(
model_name_or_path: "/models/with: colon"
finetuning_type: freeze
freeze_trainable_layers: -3
freeze_trainable_modules: mlp,self_attn
dataset: [a, "b c"]
template: "no"
output_dir: "1234"
learning_rate: 0.00012345678901234
num_train_epochs: 0.1
max_steps: 77
warmup_ratio: 0.3333333333333333
max_samples: 5
val_size: 3
eval_strategy: steps
save_strategy: steps
optim: adamw_torch
flash_attn: sdpa
disable_gradient_checkpointing: true
bf16: true
device: cpu
nodes: 2
gpus_per_node: 3
pipeline_model_parallel_size: 3
scheduling: {name: "weird \"name\"", priority: -2}
)";
  auto spec = ParseJobSpec(rich, "rich.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  const std::string yaml = ToYaml(*spec);
  auto back = ParseJobSpec(yaml, "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << yaml;
  EXPECT_EQ(*back, *spec) << yaml;
  EXPECT_EQ(back->data.template_name, "no");
  EXPECT_EQ(back->train.output_dir, "1234");
  EXPECT_EQ(back->finetuning.freeze_trainable_layers, -3);

  // Defaults round-trip too, and the emitted text is the native nested spelling with every field.
  auto minimal = ParseJobSpec(kMinimalFlat, "job.yaml");
  ASSERT_TRUE(minimal.ok());
  const std::string text = ToYaml(*minimal);
  auto again = ParseJobSpec(text, "emitted.yaml");
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << text;
  EXPECT_EQ(*again, *minimal);
  for (const char* key : {"kind:", "model:", "finetuning:", "lora_alpha:", "data:", "template:", "max_samples:",
                          "train:", "learning_rate:", "eval:", "tasks:", "resources:", "tensor_parallel:",
                          "comm_timeout_s:", "scheduling:", "max_attempts:"}) {
    EXPECT_NE(text.find(key), std::string::npos) << key << " missing from\n" << text;
  }
}

TEST(JobSpecRoundTrip, WarningsAreNotPartOfTheYaml) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "disable_tqdm: true\n", "job.yaml");
  ASSERT_TRUE(spec.ok());
  ASSERT_EQ(spec->warnings.size(), 1u);
  JobSpec without = *spec;
  without.warnings.clear();
  // Same settings, same text: the trainer hashes it to recognize its own checkpoints.
  EXPECT_EQ(ToYaml(*spec), ToYaml(without));
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, without);
}

TEST(JobSpecExamples, LlamaFactoryLoraExampleParsesUnchanged) {
  auto spec = LoadJobSpecFile(kSourceDir + "/examples/llamafactory/llama3_lora_sft.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->finetuning.type, FinetuningType::kLora);
  EXPECT_EQ(spec->finetuning.lora_rank, 8);
  EXPECT_DOUBLE_EQ(spec->finetuning.lora_alpha, 16.0);
  EXPECT_EQ(spec->data.dataset, (std::vector<std::string>{"identity", "alpaca_en_demo"}));
  EXPECT_EQ(spec->data.template_name, "llama3");
  EXPECT_EQ(spec->data.max_samples, 1000);
  EXPECT_EQ(spec->train.gradient_accumulation_steps, 8);
  EXPECT_DOUBLE_EQ(spec->train.learning_rate, 1e-4);
  EXPECT_EQ(spec->train.lr_scheduler_type, "cosine");
  EXPECT_TRUE(spec->train.bf16);
  EXPECT_TRUE(spec->train.overwrite_output_dir);
  EXPECT_EQ(spec->resources.comm_timeout_s, 180000000);
  EXPECT_TRUE(HasWarningContaining(*spec, "'trust_remote_code'"));
  EXPECT_EQ(spec->data.preprocessing_num_workers, 16);
  EXPECT_TRUE(spec->train.gradient_checkpointing);  // LLaMA-Factory's default
  EXPECT_TRUE(spec->train.plot_loss);
  EXPECT_FALSE(HasWarningContaining(*spec, "'plot_loss'"));
}

TEST(JobSpecExamples, LlamaFactoryQloraExampleAsksForA4BitBase) {
  auto spec = LoadJobSpecFile(kSourceDir + "/examples/llamafactory/qwen3_lora_sft_otfq.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model.quantization_bit, 4);
  EXPECT_EQ(spec->model.quantization_method, "bnb");
  EXPECT_EQ(spec->model.quantization_type, "nf4");  // LLaMA-Factory's defaults
  EXPECT_TRUE(spec->model.double_quantization);
  EXPECT_EQ(spec->finetuning.type, FinetuningType::kLora);
  EXPECT_TRUE(spec->train.bf16);
  // The emitted spec keeps the keys (what the coordinator stores and the trainer reads).
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->model.quantization_bit, 4);
  // LLaMA-Factory's older spelling of the method.
  auto old = ParseJobSpec(
      "model_name_or_path: /m\ndataset: d\noutput_dir: /o\nquantization_bit: 4\n"
      "quantization_method: bitsandbytes\nquantization_type: fp4\ndouble_quantization: false\n",
      "job.yaml");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->model.quantization_method, "bnb");
  EXPECT_EQ(old->model.quantization_type, "fp4");
  EXPECT_FALSE(old->model.double_quantization);
}

TEST(JobSpecMoeKeys, MegatronSpellingsParseAndRoundTrip) {
  auto spec = ParseJobSpec(
      "model_name_or_path: /m\ndataset: d\noutput_dir: /o\nfinetuning_type: full\n"
      "moe_router_enable_expert_bias: true\nmoe_router_bias_update_rate: 0.01\nmoe_expert_capacity_factor: 1.25\n"
      "moe_token_drop_policy: position\nmoe_pad_expert_input_to_capacity: true\n",
      "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(spec->model.moe_router_enable_expert_bias);
  EXPECT_EQ(spec->model.moe_router_bias_update_rate, 0.01);
  EXPECT_EQ(spec->model.moe_expert_capacity_factor, 1.25);
  EXPECT_EQ(spec->model.moe_token_drop_policy, "position");
  EXPECT_TRUE(spec->model.moe_pad_expert_input_to_capacity);
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->model, spec->model);
  // Megatron-core's default: no capacity (null).
  auto none = ParseJobSpec("model_name_or_path: /m\ndataset: d\noutput_dir: /o\nmoe_expert_capacity_factor: null\n",
                           "job.yaml");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->model.moe_expert_capacity_factor, 0);
}

TEST(JobSpecExamples, EightBitQloraParses) {
  // LLaMA-Factory: quantization_bit: 8 -> BitsAndBytesConfig(load_in_8bit=True); the 4-bit keys stay unused.
  auto spec = ParseJobSpec("model_name_or_path: /m\ndataset: d\noutput_dir: /o\nquantization_bit: 8\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->model.quantization_bit, 8);
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->model.quantization_bit, 8);
}

TEST(JobSpecExamples, LlamaFactoryDpoExampleParsesUnchanged) {
  auto spec = LoadJobSpecFile(kSourceDir + "/examples/llamafactory/qwen3_lora_dpo.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->finetuning.stage, "dpo");
  EXPECT_EQ(spec->finetuning.type, FinetuningType::kLora);
  EXPECT_EQ(spec->finetuning.pref_loss, "sigmoid");
  EXPECT_DOUBLE_EQ(spec->finetuning.pref_beta, 0.1);
  EXPECT_EQ(spec->data.dataset, (std::vector<std::string>{"dpo_en_demo"}));
  EXPECT_EQ(spec->data.template_name, "qwen3_nothink");
  EXPECT_DOUBLE_EQ(spec->train.learning_rate, 5e-6);
  EXPECT_EQ(spec->train.report_to, "none");
  EXPECT_TRUE(spec->train.resume_from_checkpoint.empty());  // null: start from scratch
  EXPECT_TRUE(HasWarningContaining(*spec, "'save_only_model'"));
  EXPECT_TRUE(HasWarningContaining(*spec, "'dataloader_num_workers'"));
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->finetuning.stage, "dpo");
}

TEST(JobSpecExamples, LlamaFactoryFullExampleTakesItsZeroStageFromTheDeepSpeedConfig) {
  // The deepspeed path is relative to the working directory, as in LLaMA-Factory (run from the repository root).
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(kSourceDir);
  auto spec = LoadJobSpecFile("examples/llamafactory/llama3_full_sft.yaml");
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->finetuning.type, FinetuningType::kFull);
  EXPECT_DOUBLE_EQ(spec->train.learning_rate, 1e-5);
  EXPECT_EQ(spec->resources.zero_stage, 1);
}

TEST(JobSpecExamples, LlamaFactoryMergeLoraExampleIsAnExportJob) {
  auto spec = LoadJobSpecFile(kSourceDir + "/examples/llamafactory/llama3_lora_export.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kExport);
  EXPECT_EQ(spec->model.adapter_name_or_path, "/data/outputs/llama3-8b/lora/sft");
  EXPECT_EQ(spec->export_.dir, "/data/outputs/llama3_lora_sft");
  EXPECT_EQ(spec->train.output_dir, spec->export_.dir);
  EXPECT_EQ(spec->export_.size_gb, 5);
}

TEST(JobSpecExamples, EveryExampleInTheRepositoryIsValid) {
  for (const char* name : {"lora_sft_native.yaml", "tiny_cpu_lora.yaml", "eval_mmlu.yaml"}) {
    auto spec = LoadJobSpecFile(kSourceDir + "/examples/" + name);
    EXPECT_TRUE(spec.ok()) << name << ": " << spec.status().ToString();
  }
  auto native = LoadJobSpecFile(kSourceDir + "/examples/lora_sft_native.yaml");
  ASSERT_TRUE(native.ok());
  EXPECT_EQ(native->resources.data_parallel(), 8);
  EXPECT_EQ(native->resources.zero_stage, 0);
}

TEST(JobSpecFile, MissingFileIsNotFound) {
  auto spec = LoadJobSpecFile("/nonexistent/dir/job.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), StatusCode::kNotFound);
  EXPECT_NE(spec.status().message().find("/nonexistent/dir/job.yaml"), std::string::npos);
}

TEST(JobSpecFile, DirectoryIsRejected) {
  auto spec = LoadJobSpecFile(kSourceDir + "/examples");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("is a directory"), std::string::npos);
}

ClusterShape Cluster(int nodes, int slots) {
  return {nodes, slots, nodes * slots};
}

TEST(JobSpecCluster, FittingSpecIsAccepted) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "nodes: 2\ngpus_per_node: 4\ntensor_model_parallel_size: 4\n",
                           "job.yaml");
  ASSERT_TRUE(spec.ok());
  EXPECT_TRUE(CheckFitsCluster(*spec, Cluster(2, 4)).ok());
  EXPECT_TRUE(CheckFitsCluster(*spec, Cluster(3, 8)).ok());
}

TEST(JobSpecCluster, SpecsThatCanNeverRunAreRejected) {
  auto spec = ParseJobSpec(std::string(kMinimalFlat) + "nodes: 2\ngpus_per_node: 4\n", "job.yaml");
  ASSERT_TRUE(spec.ok());
  Status too_few_nodes = CheckFitsCluster(*spec, Cluster(1, 8));
  EXPECT_EQ(too_few_nodes.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_few_nodes.message().find("resources.nodes is 2 but the cluster has only 1 node(s)"), std::string::npos)
      << too_few_nodes.message();
  Status small_nodes = CheckFitsCluster(*spec, Cluster(4, 2));
  EXPECT_NE(small_nodes.message().find("gpus_per_node is 4 but the largest node has 2 slot(s)"), std::string::npos)
      << small_nodes.message();
  Status empty = CheckFitsCluster(*spec, Cluster(0, 0));
  EXPECT_NE(empty.message().find("no nodes registered"), std::string::npos) << empty.message();

  auto tp = ParseJobSpec(std::string(kMinimalFlat) + "nodes: 2\ngpus_per_node: 2\ntensor_model_parallel_size: 4\n",
                         "job.yaml");
  ASSERT_TRUE(tp.ok()) << tp.status().ToString();
  Status split = CheckFitsCluster(*tp, Cluster(2, 8));
  EXPECT_NE(split.message().find("tensor parallel (tp=4) does not fit in one node: gpus_per_node is 2"),
            std::string::npos)
      << split.message();
}

}  // namespace
}  // namespace anneal::jobspec
