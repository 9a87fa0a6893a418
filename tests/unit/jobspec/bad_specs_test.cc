// Invalid job specs: one table row per mistake, each with the message (substring) a user must see. Every
// message names the source and line (or the override), the key and what is allowed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {
namespace {

// Lines 1-3 of most rows; what a row appends starts at line 4.
constexpr const char* kBase = "model_name_or_path: /m\ndataset: d\noutput_dir: /o\n";

struct BadSpec {
  const char* name;
  std::string yaml;
  std::vector<std::string> overrides;
  std::string message;  // expected substring of the error
};

// gtest prints the row's name instead of its bytes.
void PrintTo(const BadSpec& row, std::ostream* os) {
  *os << row.name;
}

std::string Base(const std::string& more) {
  return kBase + more;
}

const std::vector<BadSpec>& Table() {
  static const std::vector<BadSpec> table = {
      // ---- unknown keys, with the closest known key ----
      {"UnknownFlatKey",
       Base("lora_rnak: 8\n"),
       {},
       "unknown key 'lora_rnak' at job.yaml:4 (did you mean 'lora_rank'?)"},
      {"UnknownNestedKey",
       Base("train:\n  learnin_rate: 1.0e-4\n"),
       {},
       "unknown key 'train.learnin_rate' at job.yaml:5 (did you mean 'train.learning_rate'?)"},
      {"KeyInTheWrongSection",
       Base("train:\n  lora_rank: 8\n"),
       {},
       "unknown key 'train.lora_rank' at job.yaml:5 (did you mean 'finetuning.lora_rank'?)"},
      {"UnknownKeyWithNothingClose",
       Base("zzzzqqqq: 1\n"),
       {},
       "unknown key 'zzzzqqqq' at job.yaml:4 (see docs/job-spec.md for the accepted keys)"},
      {"MisspelledSection",
       Base("trian:\n  seed: 1\n"),
       {},
       "unknown key 'trian' at job.yaml:4 (did you mean 'train'?)"},
      {"NonScalarKey", Base("? [a, b]\n: 1\n"), {}, "job.yaml:4: keys must be plain names, got a list"},
      // ---- wrong types ----
      {"IntegerGivenAWord",
       Base("lora_rank: eight\n"),
       {},
       "key 'lora_rank' at job.yaml:4: expected a positive integer, got 'eight'"},
      {"IntegerGivenAFraction",
       Base("lora_rank: 8.5\n"),
       {},
       "key 'lora_rank' at job.yaml:4: expected a positive integer, got '8.5'"},
      {"IntegerOverflow",
       Base("lora_rank: 99999999999\n"),
       {},
       "key 'lora_rank' at job.yaml:4: expected a positive integer, got '99999999999'"},
      {"NumberGivenAWord",
       Base("learning_rate: fast\n"),
       {},
       "key 'learning_rate' at job.yaml:4: expected a positive number, got 'fast'"},
      {"BoolGivenAWord", Base("bf16: maybe\n"), {}, "key 'bf16' at job.yaml:4: expected true or false, got 'maybe'"},
      {"ListGivenAMapping",
       Base("eval_dataset: {a: 1}\n"),
       {},
       "key 'eval_dataset' at job.yaml:4: expected a list (or comma-separated string), got a mapping"},
      {"StringGivenAList",
       Base("dataset_dir: [a, b]\n"),
       {},
       "key 'dataset_dir' at job.yaml:4: expected a non-empty string, got a list"},
      {"SectionGivenAScalar",
       Base("train: 5\n"),
       {},
       "key 'train' at job.yaml:4: expected a mapping of train keys, got '5'"},
      // ---- ranges ----
      {"LoraRankZero",
       Base("lora_rank: 0\n"),
       {},
       "key 'lora_rank' at job.yaml:4: expected a positive integer, got '0'"},
      {"LoraDropoutOne",
       Base("lora_dropout: 1\n"),
       {},
       "key 'lora_dropout' at job.yaml:4: expected a number in [0, 1), got '1'"},
      {"LoraDropoutNegative",
       Base("finetuning:\n  lora_dropout: -0.1\n"),
       {},
       "key 'finetuning.lora_dropout' at job.yaml:5: expected a number in [0, 1), got '-0.1'"},
      {"LearningRateZero",
       Base("learning_rate: 0\n"),
       {},
       "key 'learning_rate' at job.yaml:4: expected a positive number, got '0'"},
      {"EpochsNegative",
       Base("num_train_epochs: -1\n"),
       {},
       "key 'num_train_epochs' at job.yaml:4: expected a number >= 0, got '-1'"},
      {"NothingToTrain",
       Base("num_train_epochs: 0\n"),
       {},
       "job.yaml: nothing to train: 'num_train_epochs' at job.yaml:4 is 0 and max_steps is not set"},
      {"MaxStepsZero",
       Base("max_steps: 0\n"),
       {},
       "key 'max_steps' at job.yaml:4: expected -1 or a positive integer, got '0'"},
      {"CutoffLenZero",
       Base("cutoff_len: 0\n"),
       {},
       "key 'cutoff_len' at job.yaml:4: expected a positive integer, got '0'"},
      {"WarmupRatioOne",
       Base("warmup_ratio: 1.0\n"),
       {},
       "key 'warmup_ratio' at job.yaml:4: expected a number in [0, 1), got '1.0'"},
      {"ValSizeNegative",
       Base("val_size: -0.1\n"),
       {},
       "key 'val_size' at job.yaml:4: expected a number >= 0, got '-0.1'"},
      {"ValSizeFractionalCount",
       Base("val_size: 2.5\n"),
       {},
       "'val_size' at job.yaml:4: expected a fraction below 1 or a whole count of examples, got 2.5"},
      {"NodesZero", Base("nodes: 0\n"), {}, "key 'nodes' at job.yaml:4: expected a positive integer, got '0'"},
      {"MaxAttemptsZero",
       Base("scheduling:\n  max_attempts: 0\n"),
       {},
       "key 'scheduling.max_attempts' at job.yaml:5: expected a positive integer, got '0'"},
      {"FreezeLayersZero",
       Base("freeze_trainable_layers: 0\n"),
       {},
       "key 'freeze_trainable_layers' at job.yaml:4: expected a non-zero integer, got '0'"},
      // ---- allowed values ----
      {"FinetuningTypeUnknown",
       Base("finetuning_type: qlora\n"),
       {},
       "key 'finetuning_type' at job.yaml:4: expected one of lora, full, freeze, got 'qlora'"},
      {"SchedulerUnknown",
       Base("lr_scheduler_type: polynomial\n"),
       {},
       "key 'lr_scheduler_type' at job.yaml:4: expected one of linear, cosine, constant, constant_with_warmup, got "
       "'polynomial'"},
      {"EvalStrategyUnknown",
       Base("eval_strategy: sometimes\n"),
       {},
       "key 'eval_strategy' at job.yaml:4: expected one of no, steps, epoch, got 'sometimes'"},
      {"KindUnknown",
       Base("kind: predict\n"),
       {},
       "key 'kind' at job.yaml:4: expected one of train, eval, export, clean, got 'predict'"},
      {"DeviceUnknown",
       Base("train:\n  device: tpu\n"),
       {},
       "key 'train.device' at job.yaml:5: expected one of auto, cpu, cuda, got 'tpu'"},
      {"ZeroStageFour",
       Base("resources:\n  parallel:\n    zero: 4\n"),
       {},
       "key 'resources.parallel.zero' at job.yaml:6: expected 0, 1, 2 or 3, got '4'"},
      {"TemplateEmpty",
       Base("template: \"\"\n"),
       {},
       "key 'template' at job.yaml:4: expected a non-empty string, got ''"},
      {"StageUnsupported",
       Base("stage: ppo\n"),
       {},
       "key 'stage' at job.yaml:4: expected one of sft, pt, dpo, rm, kto (ppo is not built yet: use sft, pt, dpo, rm "
       "or kto), got 'ppo'"},
      {"KtoWeightNegative",
       Base("stage: kto\nkto_rejected_weight: -1\n"),
       {},
       "key 'kto_rejected_weight' at job.yaml:5: expected a non-negative number, got '-1'"},
      {"PrefLossUnsupported",
       Base("stage: dpo\npref_loss: kto_pair\n"),
       {},
       "key 'pref_loss' at job.yaml:5: expected one of sigmoid, hinge, ipo, orpo, simpo, got 'kto_pair'"},
      {"LoraPlusWithFullTuning",
       Base("finetuning_type: full\nloraplus_lr_ratio: 16\n"),
       {},
       "key 'loraplus_lr_ratio' at job.yaml:5: LoRA+ is only for finetuning_type lora (this job is full); remove the "
       "key"},
      {"EvalJobWithStageDpo",
       Base("kind: eval\nstage: dpo\n"),
       {},
       "'stage' at job.yaml:5 is dpo but this is an eval job, whose tasks (loss, perplexity, mmlu, generate) read "
       "plain datasets: use stage: sft for kind: eval"},
      {"EvalJobWithStageRm",
       Base("kind: eval\nstage: rm\n"),
       {},
       "'stage' at job.yaml:5 is rm but this is an eval job, whose tasks (loss, perplexity, mmlu, generate) read "
       "plain datasets: use stage: sft for kind: eval; a rm training job evaluates its pairwise loss and accuracy"},
      {"LoadBestModelWithStageRm",
       Base("stage: rm\nload_best_model_at_end: true\n"),
       {},
       "'load_best_model_at_end' at job.yaml:5: stage rm does not support load_best_model_at_end (as LLaMA-Factory)"},
      {"AdditionalTargetUnknown",
       Base("additional_target: norm\n"),
       {},
       "key 'additional_target' at job.yaml:4: expected a list (or comma-separated string) of embed_tokens, lm_head, "
       "got 'norm'"},
      {"NeftuneNegative",
       Base("neftune_noise_alpha: -1\n"),
       {},
       "key 'neftune_noise_alpha' at job.yaml:4: expected a non-negative number or null, got '-1'"},
      {"PrefBetaNotPositive",
       Base("stage: dpo\npref_beta: 0\n"),
       {},
       "key 'pref_beta' at job.yaml:5: expected a positive number, got '0'"},
      {"LoraTargetUnknown",
       Base("lora_target: q_proj,qkv\n"),
       {},
       "key 'lora_target' at job.yaml:4: expected a list (or comma-separated string) of all, q_proj, k_proj, v_proj, "
       "o_proj, gate_proj, up_proj, down_proj, q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj, got 'q_proj,qkv'"},
      {"EvalTaskUnknown",
       Base("eval:\n  tasks: [loss, bleu]\n"),
       {},
       "key 'eval.tasks' at job.yaml:5: expected a list (or comma-separated string) of loss, mmlu, generate, got a "
       "list"},
      // ---- given twice ----
      {"FlatAndNestedBothGiven",
       Base("learning_rate: 1.0e-4\ntrain:\n  learning_rate: 2.0e-4\n"),
       {},
       "key 'train.learning_rate' at job.yaml:6: the same setting is already given as 'learning_rate' at job.yaml:4; "
       "give it once"},
      {"SameKeyTwice",
       Base("seed: 1\nseed: 2\n"),
       {},
       "key 'seed' at job.yaml:5: the same setting is already given as 'seed' at job.yaml:4"},
      {"OldAndNewEvalStrategyNames",
       Base("evaluation_strategy: \"no\"\neval_strategy: \"no\"\n"),
       {},
       "key 'eval_strategy' at job.yaml:5: the same setting is already given as 'evaluation_strategy' at job.yaml:4"},
      {"ParallelAliasAndFlatBothGiven",
       Base("tensor_model_parallel_size: 1\nresources: {parallel: {tensor: 1}}\n"),
       {},
       "key 'resources.parallel.tensor' at job.yaml:5: the same setting is already given as "
       "'tensor_model_parallel_size' at job.yaml:4"},
      // ---- required keys ----
      {"MissingModel", "dataset: d\noutput_dir: /o\n", {}, "job.yaml: missing required key 'model_name_or_path'"},
      {"MissingOutputDir", "model_name_or_path: /m\ndataset: d\n", {}, "job.yaml: missing required key 'output_dir'"},
      {"MissingDatasetForTrain",
       "model_name_or_path: /m\noutput_dir: /o\n",
       {},
       "job.yaml: missing required key 'dataset' (nested: data.dataset): a train job needs training data"},
      // ---- combinations ----
      {"ParallelSizesDoNotDivideTheWorld",
       Base("gpus_per_node: 4\ntensor_model_parallel_size: 3\n"),
       {},
       "impossible parallel layout: tensor parallel (tp=3) x pipeline parallel (pp=1) = 3 does not divide the world "
       "size 4 (nodes 1 x gpus_per_node 4)"},
      {"PipelineTooLargeForTheWorld",
       Base("nodes: 2\ngpus_per_node: 2\npipeline_model_parallel_size: 8\n"),
       {},
       "tensor parallel (tp=1) x pipeline parallel (pp=8) = 8 does not divide the world size 4 (nodes 2 x "
       "gpus_per_node 2)"},
      {"Fp16",
       Base("bf16: true\nfp16: true\n"),
       {},
       "job.yaml: 'fp16' at job.yaml:5 is not supported: float16 training needs a dynamic loss scaler, which is not "
       "built; use bf16: true"},
      {"EvalStrategyWithoutEvalSet",
       Base("eval_strategy: steps\n"),
       {},
       "'eval_strategy' at job.yaml:4 is 'steps' but there is no evaluation set: set val_size (e.g. 0.1) or "
       "eval_dataset"},
      {"MmluWithoutTaskDir",
       "kind: eval\nmodel_name_or_path: /m\noutput_dir: /o\neval:\n  tasks: mmlu\n",
       {},
       "eval task 'mmlu' needs 'eval.task_dir'"},
      {"DoTrainFalseContradictsKindTrain",
       Base("kind: train\ndo_train: false\n"),
       {},
       "key 'do_train' at job.yaml:5: do_train: false contradicts key 'kind' at job.yaml:4 (kind: train)"},
      // ---- export jobs ----
      {"ExportKeyInATrainJob",
       Base("kind: train\nexport_size: 2\n"),
       {},
       "key 'export_size' at job.yaml:5: export keys belong to an export job (kind: export), this job is kind: train"},
      {"ExportDirBesideDoTrainTrue",
       "model_name_or_path: /m\ndo_train: true\nexport_dir: /e\n",
       {},
       "key 'do_train' at job.yaml:2: do_train: true contradicts key 'export_dir' at job.yaml:3 (an export job)"},
      {"ExportDirAndOutputDirDiffer",
       "model_name_or_path: /m\nexport_dir: /e\noutput_dir: /o\n",
       {},
       "key 'export_dir' at job.yaml:2 and key 'output_dir' at job.yaml:3 name different directories"},
      {"ExportWithoutADestination",
       "kind: export\nmodel_name_or_path: /m\n",
       {},
       "job.yaml: missing required key 'export_dir' (nested: export.dir; or output_dir)"},
      {"ExportOnSeveralRanks",
       "model_name_or_path: /m\nexport_dir: /e\ngpus_per_node: 2\n",
       {},
       "an export job runs one process: nodes x gpus_per_node must be 1 (got 1 x 2)"},
      {"ExportOnTheGpuRefused", "model_name_or_path: /m\nexport_dir: /e\nexport_device: auto\n", {}, "'export_device'"},
      {"QuantizedExportRefused",
       "model_name_or_path: /m\nexport_dir: /e\nexport_quantization_bit: 4\n",
       {},
       "quantized (GPTQ) export is not built"},
      // ---- QLoRA (quantization_bit) ----
      {"EightBitFullFinetuningRefused",
       Base("finetuning_type: full\nquantization_bit: 8\n"),
       {},
       "'quantization_bit' at job.yaml:5 asks for a quantized base, whose weights are frozen, but "
       "'finetuning_type' at job.yaml:4 is full: quantization is only compatible with LoRA"},
      {"QuantizationBitThreeRefused",
       Base("quantization_bit: 3\n"),
       {},
       "key 'quantization_bit' at job.yaml:4: expected 4 or 8 (bitsandbytes) or null"},
      {"QuantizationMethodHqqRefused",
       Base("quantization_bit: 4\nquantization_method: hqq\n"),
       {},
       "key 'quantization_method' at job.yaml:5: expected bnb (bitsandbytes, quantized at load; gptq, awq, aqlm, "
       "quanto, eetq, hqq, fp8 and mxfp4 are not built: use bnb), got 'hqq'"},
      {"QuantizationTypeInt4Refused",
       Base("quantization_bit: 4\nquantization_type: int4\n"),
       {},
       "key 'quantization_type' at job.yaml:5: expected one of nf4, fp4"},
      {"QuantizedFullFinetuningRefused",
       Base("finetuning_type: full\nquantization_bit: 4\n"),
       {},
       "'quantization_bit' at job.yaml:5 asks for a quantized base, whose weights are frozen, but "
       "'finetuning_type' at job.yaml:4 is full: quantization is only compatible with LoRA"},
      {"QuantizedFreezeRefused",
       Base("finetuning_type: freeze\nquantization_bit: 4\n"),
       {},
       "is freeze: quantization is only compatible with LoRA"},
      {"QuantizedMergeExportRefused",
       "model_name_or_path: /m\nexport_dir: /e\nquantization_bit: 4\n",
       {},
       "'quantization_bit' at job.yaml:3 is set on an export job: an adapter cannot be merged into a quantized "
       "model"},
      // ---- documents that are not specs ----
      {"MalformedYaml", Base("lora_rank: [8\n"), {}, "job.yaml:5:1: malformed YAML:"},
      {"BadIndentation", "model_name_or_path: /m\n  dataset: d\n", {}, "job.yaml:2:10: malformed YAML:"},
      {"EmptyDocument", "", {}, "job.yaml: the job spec is empty"},
      {"OnlyComments", "# nothing here\n", {}, "job.yaml: the job spec is empty"},
      {"TopLevelList", "- a\n- b\n", {}, "job.yaml:1: the job spec must be a mapping of keys, got a list"},
      {"TopLevelScalar", "hello\n", {}, "job.yaml:1: the job spec must be a mapping of keys, got 'hello'"},
      // ---- overrides ----
      {"OverrideWithoutEquals", kBase, {"lora_rank"}, "override 'lora_rank': expected key=value"},
      {"OverrideUnknownKey",
       kBase,
       {"lora_rnak=8"},
       "override 'lora_rnak=8': unknown key 'lora_rnak' (did you mean 'lora_rank'?)"},
      {"OverrideBadValue",
       kBase,
       {"lora_rank=eight"},
       "key 'lora_rank' in override 'lora_rank=eight': expected a positive integer, got 'eight'"},
      {"OverrideBadNestedValue",
       kBase,
       {"train.learning_rate=-1"},
       "key 'train.learning_rate' in override 'train.learning_rate=-1': expected a positive number, got '-1'"},
      {"OverrideMalformedValue", kBase, {"dataset=[a"}, "override 'dataset=[a': malformed value:"},
      // ---- not UTF-8 (found by bench/fuzz/jobspec_fuzz.cc: yaml-cpp's emitter rewrote the byte, so the resolved
      // spec named another model path than the one submitted) ----
      {"InvalidUtf8InAValue",
       Base("template: llama\xb1\n"),
       {},
       "job.yaml:4:16: byte 0xB1 is not valid UTF-8 (a job spec is UTF-8 text)"},
      {"TruncatedUtf8AtTheEnd", Base("template: x\xe2\x82"), {}, "job.yaml:4:12: byte 0xE2 is not valid UTF-8"},
      {"OverlongUtf8", Base("# \xc0\xaf\n"), {}, "job.yaml:4:3: byte 0xC0 is not valid UTF-8"},
      {"InvalidUtf8InAnOverride", kBase, {"template=\xff"}, "override 'template=\xff': byte 0xFF is not valid UTF-8"},
      {"OverrideOfASection", kBase, {"train=1"}, "override 'train=1': 'train' is a section"},
      // ---- early stopping and load_best_model_at_end (as HF's Trainer requires them) ----
      {"EarlyStoppingWithoutEvaluation",
       Base("early_stopping_steps: 2\n"),
       {},
       "needs evaluations during training: set eval_strategy"},
      {"EarlyStoppingOnTrainingLoss",
       Base("val_size: 0.1\neval_strategy: steps\nearly_stopping_steps: 2\nmetric_for_best_model: loss\n"),
       {},
       "the only metric evaluated during training is eval_loss"},
      {"LoadBestWithSavesBetweenEvaluations",
       Base("val_size: 0.1\neval_strategy: steps\neval_steps: 4\nsave_steps: 6\nload_best_model_at_end: true\n"),
       {},
       "save_steps (6) must be a multiple of eval_steps (4)"},
      {"LoadBestWithOtherSaveStrategy",
       Base("val_size: 0.1\neval_strategy: epoch\nload_best_model_at_end: true\n"),
       {},
       "save_strategy must equal eval_strategy ('epoch')"},
      {"OverrideMakesParallelImpossible",
       kBase,
       {"gpus_per_node=1", "tensor_model_parallel_size=2"},
       "tensor parallel (tp=2) x pipeline parallel (pp=1) = 2 does not divide the world size 1 (nodes 1 x "
       "gpus_per_node 1)"},
      // ---- mixture-of-experts balancing ----
      {"ExpertBiasWithLora",
       Base("moe_router_enable_expert_bias: true\n"),
       {},
       "'moe_router_enable_expert_bias' at job.yaml:4 with 'finetuning.type' (default) lora is not built: the bias "
       "it trains is a buffer of the base model"},
      {"ExpertBiasRateNotPositive",
       Base("finetuning_type: full\nmoe_router_bias_update_rate: 0\n"),
       {},
       "moe_router_bias_update_rate"},
      {"CapacityFactorNegative", Base("moe_expert_capacity_factor: -1\n"), {}, "moe_expert_capacity_factor"},
      {"UnknownDropPolicy", Base("moe_token_drop_policy: random\n"), {}, "moe_token_drop_policy"},
  };
  return table;
}

class BadSpecTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(BadSpecTest, IsRejectedWithAClearMessage) {
  const BadSpec& row = GetParam();
  auto spec = ParseJobSpec(row.yaml, "job.yaml", row.overrides);
  ASSERT_FALSE(spec.ok()) << "accepted:\n" << row.yaml;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find(row.message), std::string::npos)
      << "got:      " << spec.status().message() << "\nexpected: " << row.message;
}

INSTANTIATE_TEST_SUITE_P(JobSpecValidation, BadSpecTest, ::testing::ValuesIn(Table()),
                         [](const ::testing::TestParamInfo<BadSpec>& info) { return std::string(info.param.name); });

TEST(JobSpecValidation, TableCoversAtLeastThirtyFiveMistakes) {
  EXPECT_GE(Table().size(), 35u);
}

}  // namespace
}  // namespace anneal::jobspec
