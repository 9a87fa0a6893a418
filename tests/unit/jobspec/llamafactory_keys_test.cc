// LLaMA-Factory keys that used to be accepted and ignored: each now behaves as in LLaMA-Factory or is refused
// with what to use instead (one test per key; the training-loop keys' behaviour is in tests/parity/train).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "jobspec/jobspec.h"

namespace anneal::jobspec {
namespace {

constexpr const char* kBase = "model_name_or_path: /m\ndataset: d\noutput_dir: /o\n";

bool HasWarningContaining(const JobSpec& s, const std::string& text) {
  for (const std::string& w : s.warnings) {
    if (w.find(text) != std::string::npos) return true;
  }
  return false;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A DeepSpeed JSON in a fresh directory.
class DeepSpeedConfig {
 public:
  explicit DeepSpeedConfig(const std::string& json) {
    dir_ = std::filesystem::temp_directory_path() /
           ("anneal-ds-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    std::ofstream(path()) << json;
  }
  ~DeepSpeedConfig() { std::filesystem::remove_all(dir_); }
  std::string path() const { return (dir_ / "ds.json").string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
};

StatusOr<JobSpec> WithDeepSpeed(const std::string& json) {
  DeepSpeedConfig ds(json);
  return ParseJobSpec(std::string(kBase) + "deepspeed: " + ds.path() + "\n", "job.yaml");
}

TEST(LlamaFactoryDeepSpeed, StageZeroIsPlainDataParallelAndStageOneIsZeroOne) {
  auto zero = WithDeepSpeed(R"({"train_batch_size": "auto", "zero_optimization": {"stage": 0}})");
  ASSERT_TRUE(zero.ok()) << zero.status().ToString();
  EXPECT_EQ(zero->resources.zero_stage, 0);
  auto one =
      WithDeepSpeed(R"({"bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 1, "overlap_comm": false}})");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->resources.zero_stage, 1);
  auto none = WithDeepSpeed(R"({"gradient_clipping": "auto"})");  // DeepSpeed's default stage is 0
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->resources.zero_stage, 0);
}

// The keys and values of LLaMA-Factory's examples/deepspeed/ds_z2_config.json (its bucket sizes, communication
// switches, fp16 loss-scale settings, comms and monitor sections), which its README passes unchanged.
constexpr const char* kLlamaFactoryZ2 = R"({
  "train_batch_size": "auto",
  "train_micro_batch_size_per_gpu": "auto",
  "gradient_accumulation_steps": "auto",
  "gradient_clipping": "auto",
  "zero_allow_untested_optimizer": true,
  "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
           "hysteresis": 2, "min_loss_scale": 1},
  "bf16": {"enabled": "auto"},
  "zero_optimization": {"stage": 2, "allgather_partitions": true, "allgather_bucket_size": 5e8,
                        "overlap_comm": false, "reduce_scatter": true, "reduce_bucket_size": 5e8,
                        "contiguous_gradients": true, "round_robin_gradients": true},
  "comms_config": {"verbose": false},
  "monitor_config": {"enabled": true, "tag": "DeepSpeedMonitor", "csv_monitor": {"enabled": false}}
})";

TEST(LlamaFactoryDeepSpeed, LlamaFactorysStageTwoConfigIsZeroTwo) {
  auto spec = WithDeepSpeed(kLlamaFactoryZ2);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->resources.zero_stage, 2);
  auto auto_buckets = WithDeepSpeed(
      R"({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto", "allgather_bucket_size": "auto"}})");
  ASSERT_TRUE(auto_buckets.ok()) << auto_buckets.status().ToString();
  EXPECT_EQ(auto_buckets->resources.zero_stage, 2);
}

TEST(LlamaFactoryDeepSpeed, BucketSizesBecomeTheResourceBucketsWithDeepSpeedsDefaults) {
  auto z2 = WithDeepSpeed(kLlamaFactoryZ2);  // 5e8 elements for both
  ASSERT_TRUE(z2.ok()) << z2.status().ToString();
  EXPECT_EQ(z2->resources.reduce_bucket_size, 500000000);
  EXPECT_EQ(z2->resources.gather_bucket_size, 500000000);
  // Stage 3 gathers by stage3_prefetch_bucket_size; allgather_bucket_size is stage 1/2's.
  auto z3 = WithDeepSpeed(
      R"({"zero_optimization": {"stage": 3, "reduce_bucket_size": 1000, "allgather_bucket_size": 7,
                                "stage3_prefetch_bucket_size": 300}})");
  ASSERT_TRUE(z3.ok()) << z3.status().ToString();
  EXPECT_EQ(z3->resources.reduce_bucket_size, 1000);
  EXPECT_EQ(z3->resources.gather_bucket_size, 300);
  // "auto" (LLaMA-Factory's ds_z3_config.json) stays auto: the trainer resolves it from hidden_size.
  auto lf3 = WithDeepSpeed(ReadFile(std::string(ANNEAL_SOURCE_DIR) + "/examples/deepspeed/ds_z3_config.json"));
  ASSERT_TRUE(lf3.ok()) << lf3.status().ToString();
  EXPECT_EQ(lf3->resources.reduce_bucket_size, -1);
  EXPECT_EQ(lf3->resources.gather_bucket_size, -1);
  // Absent: DeepSpeed's defaults (reduce and allgather 5e8, stage-3 prefetch 5e7).
  auto bare = WithDeepSpeed(R"({"zero_optimization": {"stage": 3}})");
  ASSERT_TRUE(bare.ok()) << bare.status().ToString();
  EXPECT_EQ(bare->resources.reduce_bucket_size, 500000000);
  EXPECT_EQ(bare->resources.gather_bucket_size, 50000000);
  // Without a deepspeed key the buckets follow ddp_bucket_cap_mb (0).
  auto native = ParseJobSpec(std::string(kBase) + "zero_stage: 2\n", "job.yaml");
  ASSERT_TRUE(native.ok()) << native.status().ToString();
  EXPECT_EQ(native->resources.reduce_bucket_size, 0);
  EXPECT_EQ(native->resources.gather_bucket_size, 0);
}

TEST(LlamaFactoryDeepSpeed, AFractionalBucketSizeIsRefusedByName) {
  auto spec = WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "reduce_bucket_size": 2.5}})");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("has zero_optimization.reduce_bucket_size '2.5': expected a whole "
                                         "number of elements"),
            std::string::npos)
      << spec.status().message();
}

TEST(BucketSizes, TheNativeSpellingTakesElementsOrAutoAndCannotRepeatTheDeepSpeedFile) {
  auto native = ParseJobSpec(std::string(kBase) + "reduce_bucket_size: 4096\ngather_bucket_size: auto\n", "job.yaml");
  ASSERT_TRUE(native.ok()) << native.status().ToString();
  EXPECT_EQ(native->resources.reduce_bucket_size, 4096);
  EXPECT_EQ(native->resources.gather_bucket_size, -1);
  auto round_trip = ParseJobSpec(ToYaml(*native), "again.yaml");
  ASSERT_TRUE(round_trip.ok()) << round_trip.status().ToString();
  EXPECT_EQ(*round_trip, *native);
  auto negative = ParseJobSpec(std::string(kBase) + "reduce_bucket_size: -5\n", "job.yaml");
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("expected an integer >= 0 or \"auto\", got '-5'"), std::string::npos)
      << negative.status().message();
  DeepSpeedConfig ds(R"({"zero_optimization": {"stage": 2}})");
  auto both = ParseJobSpec(std::string(kBase) + "reduce_bucket_size: 4096\ndeepspeed: " + ds.path() + "\n", "job.yaml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("sets resources.reduce_bucket_size too, which is already given as "
                                         "'reduce_bucket_size' at job.yaml:4"),
            std::string::npos)
      << both.status().message();
}

TEST(LlamaFactoryDeepSpeed, LlamaFactorysStageThreeConfigIsZeroThree) {
  // examples/deepspeed/ds_z3_config.json is LLaMA-Factory's file unchanged (stage3_* sizes, sub_group_size,
  // stage3_gather_16bit_weights_on_model_save: memory and transport only).
  auto spec = WithDeepSpeed(ReadFile(std::string(ANNEAL_SOURCE_DIR) + "/examples/deepspeed/ds_z3_config.json"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->resources.zero_stage, 3);
  auto no_persistence =
      WithDeepSpeed(R"({"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}})");
  ASSERT_TRUE(no_persistence.ok()) << no_persistence.status().ToString();
}

TEST(LlamaFactoryDeepSpeed, AStageThreeSizeThatIsNotANumberIsRefusedByName) {
  auto spec = WithDeepSpeed(R"({"zero_optimization": {"stage": 3, "stage3_max_live_parameters": -1}})");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("has zero_optimization.stage3_max_live_parameters '-1': expected a "
                                         "positive number of elements or \"auto\""),
            std::string::npos)
      << spec.status().message();
  EXPECT_NE(spec.status().message().find("key 'deepspeed' at job.yaml:4"), std::string::npos);
}

TEST(LlamaFactoryDeepSpeed, LlamaFactorysOffloadConfigsOffloadToTheHost) {
  // examples/deepspeed/ds_z{2,3}_offload_config.json are LLaMA-Factory's files unchanged (pin_memory: true).
  auto two = WithDeepSpeed(ReadFile(std::string(ANNEAL_SOURCE_DIR) + "/examples/deepspeed/ds_z2_offload_config.json"));
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_EQ(two->resources.zero_stage, 2);
  EXPECT_EQ(two->resources.offload, "optimizer");
  auto three =
      WithDeepSpeed(ReadFile(std::string(ANNEAL_SOURCE_DIR) + "/examples/deepspeed/ds_z3_offload_config.json"));
  ASSERT_TRUE(three.ok()) << three.status().ToString();
  EXPECT_EQ(three->resources.zero_stage, 3);
  EXPECT_EQ(three->resources.offload, "optimizer+params");
  auto none = WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}})");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->resources.offload, "none");
  // offload_param alone: the step runs where the shards live, so the optimizer is offloaded too.
  auto params = WithDeepSpeed(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})");
  ASSERT_TRUE(params.ok()) << params.status().ToString();
  EXPECT_EQ(params->resources.offload, "optimizer+params");
}

TEST(LlamaFactoryDeepSpeed, NvmeOffloadAnUnknownOffloadKeyAndOffloadBelowItsStageAreRefusedByName) {
  auto nvme = WithDeepSpeed(
      R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/nvme"}}})");
  ASSERT_FALSE(nvme.ok());
  EXPECT_NE(nvme.status().message().find("offloads to nvme (zero_optimization.offload_param.device), which is not "
                                         "built"),
            std::string::npos)
      << nvme.status().message();
  EXPECT_NE(nvme.status().message().find("key 'deepspeed' at job.yaml:4"), std::string::npos);
  auto unknown =
      WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "turbo": 1}}})");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("has zero_optimization.offload_optimizer.turbo, which Anneal does not "
                                            "know"),
            std::string::npos)
      << unknown.status().message();
  auto params_at_two = WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})");
  ASSERT_FALSE(params_at_two.ok());
  EXPECT_NE(params_at_two.status().message().find("offloads parameters with zero_optimization.stage 2: DeepSpeed "
                                                  "offloads parameters only under stage 3"),
            std::string::npos)
      << params_at_two.status().message();
  auto optimizer_at_zero =
      WithDeepSpeed(R"({"zero_optimization": {"stage": 0, "offload_optimizer": {"device": "cpu"}}})");
  ASSERT_FALSE(optimizer_at_zero.ok());
  EXPECT_NE(optimizer_at_zero.status().message().find("offloads the optimizer with zero_optimization.stage 0"),
            std::string::npos)
      << optimizer_at_zero.status().message();
  auto disk = WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "disk"}}})");
  ASSERT_FALSE(disk.ok());
  EXPECT_NE(disk.status().message().find("has zero_optimization.offload_optimizer.device 'disk': expected \"cpu\" "
                                         "or \"none\""),
            std::string::npos)
      << disk.status().message();
}

TEST(LlamaFactoryDeepSpeed, AnOffloadingConfigAndAnExplicitOffloadAreTheSameSettingTwice) {
  DeepSpeedConfig ds(R"({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})");
  auto both = ParseJobSpec(std::string(kBase) + "offload: optimizer\ndeepspeed: " + ds.path() + "\n", "job.yaml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("key 'deepspeed' at job.yaml:5 sets resources.offload too, which is "
                                         "already given as 'offload' at job.yaml:4"),
            std::string::npos)
      << both.status().message();
  // What `anneal submit` sends: the stage and offload as overrides, which replace the file.
  auto sent = ParseJobSpec(std::string(kBase) + "deepspeed: /only/on/the/laptop.json\n", "job.yaml",
                           {"resources.zero_stage=3", "resources.offload=optimizer+params"});
  ASSERT_TRUE(sent.ok()) << sent.status().ToString();
  EXPECT_EQ(sent->resources.offload, "optimizer+params");
}

TEST(Offload, TheNativeSpellingNeedsItsZeroStage) {
  auto optimizer = ParseJobSpec(std::string(kBase) + "zero_stage: 1\noffload: optimizer\n", "job.yaml");
  ASSERT_TRUE(optimizer.ok()) << optimizer.status().ToString();
  EXPECT_EQ(optimizer->resources.offload, "optimizer");
  auto nested =
      ParseJobSpec(std::string(kBase) + "resources:\n  zero_stage: 3\n  offload: optimizer+params\n", "job.yaml");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->resources.offload, "optimizer+params");
  auto unsharded = ParseJobSpec(std::string(kBase) + "offload: optimizer\n", "job.yaml");
  ASSERT_FALSE(unsharded.ok());
  EXPECT_NE(unsharded.status().message().find("job.yaml: 'offload' at job.yaml:4 with 'resources.zero_stage' "
                                              "(default): offloading the optimizer needs zero_stage 1, 2 or 3 (as "
                                              "DeepSpeed's offload_optimizer)"),
            std::string::npos)
      << unsharded.status().message();
  auto params = ParseJobSpec(std::string(kBase) + "zero_stage: 2\noffload: optimizer+params\n", "job.yaml");
  ASSERT_FALSE(params.ok());
  EXPECT_NE(params.status().message().find("offloading the parameters needs zero_stage 3 (as DeepSpeed's "
                                           "offload_param); raise zero_stage or set offload: optimizer"),
            std::string::npos)
      << params.status().message();
  auto bad = ParseJobSpec(std::string(kBase) + "zero_stage: 3\noffload: nvme\n", "job.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("offload"), std::string::npos) << bad.status().message();
}

TEST(LlamaFactoryDeepSpeed, ABucketSizeThatIsNotAPositiveNumberIsRefusedByName) {
  auto spec = WithDeepSpeed(R"({"zero_optimization": {"stage": 2, "reduce_bucket_size": "big"}})");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find(
                "has zero_optimization.reduce_bucket_size 'big': expected a positive number of elements or \"auto\""),
            std::string::npos)
      << spec.status().message();
}

TEST(LlamaFactoryDeepSpeed, ADeepSpeedOptimizerAndExplicitSpecValuesAreRefused) {
  auto offload = WithDeepSpeed(R"({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}})");
  ASSERT_TRUE(offload.ok()) << offload.status().ToString();
  EXPECT_EQ(offload->resources.offload, "optimizer");
  auto no_offload = WithDeepSpeed(R"({"zero_optimization": {"stage": 1, "offload_param": {"device": "none"}}})");
  EXPECT_TRUE(no_offload.ok()) << no_offload.status().ToString();
  auto optimizer = WithDeepSpeed(R"({"optimizer": {"type": "AdamW"}})");
  ASSERT_FALSE(optimizer.ok());
  EXPECT_NE(optimizer.status().message().find("defines its own optimizer"), std::string::npos);
  auto micro = WithDeepSpeed(R"({"train_micro_batch_size_per_gpu": 4})");
  ASSERT_FALSE(micro.ok());
  EXPECT_NE(micro.status().message().find(
                "sets train_micro_batch_size_per_gpu to '4': write \"auto\" there and set per_device_train_batch_size"),
            std::string::npos)
      << micro.status().message();
}

TEST(LlamaFactoryDeepSpeed, MissingOrCorruptJsonNamesThePath) {
  auto missing = ParseJobSpec(std::string(kBase) + "deepspeed: /nonexistent/ds_z1.json\n", "job.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(
                "key 'deepspeed' at job.yaml:4: cannot read the DeepSpeed config /nonexistent/ds_z1.json"),
            std::string::npos)
      << missing.status().message();
  DeepSpeedConfig corrupt(R"({"zero_optimization": {"stage": 1)");
  auto bad = ParseJobSpec(std::string(kBase) + "deepspeed: " + corrupt.path() + "\n", "job.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("the DeepSpeed config " + corrupt.path() + " is not valid JSON"),
            std::string::npos)
      << bad.status().message();
}

TEST(LlamaFactoryDeepSpeed, DeepSpeedAndZeroStageTogetherAreTheSameSettingTwice) {
  DeepSpeedConfig ds(R"({"zero_optimization": {"stage": 1}})");
  auto both = ParseJobSpec(std::string(kBase) + "zero_stage: 1\ndeepspeed: " + ds.path() + "\n", "job.yaml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("the same setting is already given as 'zero_stage' at job.yaml:4"),
            std::string::npos)
      << both.status().message();
}

TEST(LlamaFactoryDeepSpeed, AnOverrideOfTheStageMeansTheFileIsNeverRead) {
  // What the coordinator sees: the raw text (a path valid only on the submitting machine) and the CLI's override.
  auto spec = ParseJobSpec(std::string(kBase) + "deepspeed: /only/on/the/laptop.json\n", "job.yaml",
                           {"resources.zero_stage=1"});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->resources.zero_stage, 1);
}

TEST(LlamaFactoryGradientCheckpointing, OnInAFlatDocumentUnlessDisabled) {
  auto flat = ParseJobSpec(kBase, "job.yaml");
  ASSERT_TRUE(flat.ok());
  EXPECT_TRUE(flat->train.gradient_checkpointing);
  auto disabled = ParseJobSpec(std::string(kBase) + "disable_gradient_checkpointing: true\n", "job.yaml");
  ASSERT_TRUE(disabled.ok()) << disabled.status().ToString();
  EXPECT_FALSE(disabled->train.gradient_checkpointing);
  auto not_disabled = ParseJobSpec(std::string(kBase) + "disable_gradient_checkpointing: false\n", "job.yaml");
  ASSERT_TRUE(not_disabled.ok());
  EXPECT_TRUE(not_disabled->train.gradient_checkpointing);
  // The native nested spelling keeps Anneal's default.
  auto nested =
      ParseJobSpec("model: {model_name_or_path: /m}\ndata: {dataset: d}\ntrain: {output_dir: /o}\n", "n.yaml");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_FALSE(nested->train.gradient_checkpointing);
  auto both = ParseJobSpec(std::string(kBase) + "gradient_checkpointing: true\ndisable_gradient_checkpointing: true\n",
                           "job.yaml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("the same setting is already given"), std::string::npos);
}

TEST(LlamaFactoryOptim, TorchAdamWNamesAreHonouredOthersRefused) {
  auto fused = ParseJobSpec(std::string(kBase) + "optim: adamw_torch_fused\n", "job.yaml");
  ASSERT_TRUE(fused.ok());
  EXPECT_EQ(fused->train.optim, Optimizer::kAdamWTorchFused);
  auto plain = ParseJobSpec(std::string(kBase) + "optim: adamw_torch\n", "job.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->train.optim, Optimizer::kAdamWTorch);
  EXPECT_TRUE(plain->warnings.empty());
  auto eight_bit = ParseJobSpec(std::string(kBase) + "optim: adamw_8bit\n", "job.yaml");
  ASSERT_FALSE(eight_bit.ok());
  EXPECT_NE(eight_bit.status().message().find(
                "key 'optim' at job.yaml:4: expected one of adamw_torch, adamw_torch_fused (the trainer's optimizer is "
                "torch's AdamW; adamw_hf is gone from transformers 5 and others are not built: use adamw_torch), got "
                "'adamw_8bit'"),
            std::string::npos)
      << eight_bit.status().message();
}

TEST(LlamaFactoryFlashAttn, SdpaValuesRunDisabledIsRefused) {
  auto sdpa = ParseJobSpec(std::string(kBase) + "flash_attn: sdpa\n", "job.yaml");
  ASSERT_TRUE(sdpa.ok());
  EXPECT_EQ(sdpa->model.flash_attn, Attention::kSdpa);
  EXPECT_TRUE(sdpa->warnings.empty());
  auto fa2 = ParseJobSpec(std::string(kBase) + "flash_attn: fa2\n", "job.yaml");
  ASSERT_TRUE(fa2.ok());
  EXPECT_TRUE(HasWarningContaining(*fa2, "key 'flash_attn' at job.yaml:4: 'fa2' runs PyTorch SDPA"));
  auto eager = ParseJobSpec(std::string(kBase) + "flash_attn: disabled\n", "job.yaml");
  ASSERT_FALSE(eager.ok());
  EXPECT_NE(eager.status().message().find("(disabled, eager attention, is not built: use auto"), std::string::npos)
      << eager.status().message();
}

TEST(LlamaFactoryFp16, TrueIsRefusedWithBf16AsTheAlternative) {
  auto fp16 = ParseJobSpec(std::string(kBase) + "fp16: true\n", "job.yaml");
  ASSERT_FALSE(fp16.ok());
  EXPECT_NE(fp16.status().message().find("'fp16' at job.yaml:4 is not supported: float16 training needs a dynamic "
                                         "loss scaler, which is not built; use bf16: true"),
            std::string::npos)
      << fp16.status().message();
  EXPECT_TRUE(ParseJobSpec(std::string(kBase) + "fp16: false\n", "job.yaml").ok());
}

TEST(LlamaFactoryStage, PtPacksByDefaultAndRefusesSftOnlyKeys) {
  auto pt = ParseJobSpec(std::string(kBase) + "stage: pt\n", "job.yaml");
  ASSERT_TRUE(pt.ok()) << pt.status().ToString();
  EXPECT_EQ(pt->finetuning.stage, "pt");
  EXPECT_TRUE(pt->data.packing);  // LLaMA-Factory: packing defaults to stage == pt
  auto unpacked = ParseJobSpec(std::string(kBase) + "stage: pt\npacking: false\n", "job.yaml");
  ASSERT_TRUE(unpacked.ok());
  EXPECT_FALSE(unpacked->data.packing);
  auto back = ParseJobSpec(ToYaml(*pt), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, *pt);
  for (const char* key : {"train_on_prompt", "mask_history", "neat_packing"}) {
    auto bad = ParseJobSpec(std::string(kBase) + "stage: pt\n" + key + ": true\n", "job.yaml");
    ASSERT_FALSE(bad.ok()) << key;
    EXPECT_NE(bad.status().message().find(std::string("key '") + key +
                                          "' at job.yaml:5: only for stage sft, but "
                                          "'stage' at job.yaml:4 is pt"),
              std::string::npos)
        << bad.status().message();
  }
  for (const char* key : {"neat_packing", "train_on_prompt", "mask_history"}) {
    auto bad = ParseJobSpec(std::string(kBase) + "stage: dpo\n" + key + ": true\n", "job.yaml");
    ASSERT_FALSE(bad.ok()) << key;
    EXPECT_NE(bad.status().message().find("'stage' at job.yaml:4 is dpo (dpo trains on the answers of preference "
                                          "pairs)"),
              std::string::npos)
        << bad.status().message();
  }
  // LLaMA-Factory's pairwise processor never packs: packing is ignored with a warning, not silently.
  auto dpo =
      ParseJobSpec(std::string(kBase) + "stage: dpo\npacking: true\npref_loss: ipo\npref_beta: 0.3\n", "job.yaml");
  ASSERT_TRUE(dpo.ok()) << dpo.status().message();
  EXPECT_FALSE(dpo->data.packing);
  EXPECT_EQ(dpo->finetuning.pref_loss, "ipo");
  EXPECT_EQ(dpo->finetuning.pref_beta, 0.3);
  ASSERT_EQ(dpo->warnings.size(), 1u);
  EXPECT_NE(dpo->warnings[0].find("stage dpo does not pack preference pairs"), std::string::npos);
  // additional_target adds modules to LoRA; LLaMA-Factory ignores it for full and freeze, Anneal says so.
  auto full = ParseJobSpec(std::string(kBase) + "finetuning_type: full\nadditional_target: embed_tokens\n", "job.yaml");
  ASSERT_TRUE(full.ok()) << full.status().message();
  ASSERT_EQ(full->warnings.size(), 1u);
  EXPECT_NE(full->warnings[0].find("it adds modules to LoRA, and this job is full"), std::string::npos);
  // Stage rm (reward modeling) reads the same pairs: packing ignored the same way, sft-only keys refused.
  auto rm = ParseJobSpec(std::string(kBase) + "stage: rm\npacking: true\n", "job.yaml");
  ASSERT_TRUE(rm.ok()) << rm.status().message();
  EXPECT_EQ(rm->finetuning.stage, "rm");
  EXPECT_FALSE(rm->data.packing);
  ASSERT_EQ(rm->warnings.size(), 1u);
  EXPECT_NE(rm->warnings[0].find("stage rm does not pack preference pairs"), std::string::npos);
  auto rm_prompt = ParseJobSpec(std::string(kBase) + "stage: rm\ntrain_on_prompt: true\n", "job.yaml");
  ASSERT_FALSE(rm_prompt.ok());
  EXPECT_NE(rm_prompt.status().message().find("is rm (rm scores the answers of preference pairs)"), std::string::npos)
      << rm_prompt.status().message();
  auto ppo = ParseJobSpec(std::string(kBase) + "stage: ppo\n", "job.yaml");
  ASSERT_FALSE(ppo.ok());
  EXPECT_NE(ppo.status().message().find("ppo is not built yet"), std::string::npos);
  auto kto =
      ParseJobSpec(std::string(kBase) + "stage: kto\nkto_chosen_weight: 1.5\nkto_rejected_weight: 0.5\n", "job.yaml");
  ASSERT_TRUE(kto.ok()) << kto.status().ToString();
  EXPECT_EQ(kto->finetuning.kto_chosen_weight, 1.5);
  EXPECT_EQ(kto->finetuning.kto_rejected_weight, 0.5);
}

TEST(LlamaFactoryTrainLoopKeys, SaveAndEvalStrategiesAreRepresentedForTheTrainer) {
  // What the trainer does with them is tests/parity/train (checkpoint and eval steps); here: the values parse.
  auto epoch =
      ParseJobSpec(std::string(kBase) + "save_strategy: epoch\nval_size: 0.1\neval_strategy: epoch\n", "job.yaml");
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  EXPECT_EQ(epoch->train.save_strategy, SaveStrategy::kEpoch);
  EXPECT_EQ(epoch->train.eval_strategy, "epoch");
  auto none = ParseJobSpec(std::string(kBase) + "save_strategy: \"no\"\n", "job.yaml");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->train.save_strategy, SaveStrategy::kNo);
  auto end_only = ParseJobSpec(std::string(kBase) + "save_steps: 0\n", "job.yaml");
  ASSERT_TRUE(end_only.ok()) << end_only.status().ToString();
  EXPECT_EQ(end_only->train.save_steps, 0);
  EXPECT_EQ(end_only->train.save_strategy, SaveStrategy::kSteps);
  auto best = ParseJobSpec(std::string(kBase) + "save_strategy: best\n", "job.yaml");
  ASSERT_FALSE(best.ok());
  EXPECT_NE(best.status().message().find("(best is not built: use steps with keep_best)"), std::string::npos);
}

TEST(LlamaFactoryEvalDataset, ReplacesTheValSizeSplitAndBothTogetherAreRefused) {
  auto eval_set = ParseJobSpec(std::string(kBase) + "eval_dataset: held_out\neval_strategy: steps\n", "job.yaml");
  ASSERT_TRUE(eval_set.ok()) << eval_set.status().ToString();
  EXPECT_EQ(eval_set->data.eval_dataset, std::vector<std::string>{"held_out"});
  auto both = ParseJobSpec(std::string(kBase) + "val_size: 0.1\neval_dataset: held_out\n", "job.yaml");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("'val_size' at job.yaml:4 and 'eval_dataset' at job.yaml:5 are both given"),
            std::string::npos)
      << both.status().message();
}

TEST(LlamaFactoryReportTo, NoneTensorboardAndAllAreAcceptedAsStringOrList) {
  const std::pair<std::string, std::string> cases[] = {{"none", "none"},       {"tensorboard", "tensorboard"},
                                                       {"all", "tensorboard"}, {"[tensorboard]", "tensorboard"},
                                                       {"[none]", "none"},     {"\"tensorboard, all\"", "tensorboard"},
                                                       {"[]", "none"}};
  for (const auto& [value, stored] : cases) {
    auto spec = ParseJobSpec(std::string(kBase) + "report_to: " + value + "\n", "job.yaml");
    ASSERT_TRUE(spec.ok()) << value << ": " << spec.status().ToString();
    EXPECT_EQ(spec->train.report_to, stored) << value;
    EXPECT_TRUE(spec->warnings.empty()) << value << ": not ignored any more";
  }
  auto nested = ParseJobSpec(
      "model: {model_name_or_path: /m}\ndata: {dataset: d}\n"
      "train: {output_dir: /o, report_to: tensorboard, plot_loss: true}\n",
      "job.yaml");
  ASSERT_TRUE(nested.ok()) << nested.status().ToString();
  EXPECT_EQ(nested->train.report_to, "tensorboard");
  EXPECT_TRUE(nested->train.plot_loss);
  auto defaults = ParseJobSpec(kBase, "job.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->train.report_to, "none");
  EXPECT_FALSE(defaults->train.plot_loss);
}

TEST(LlamaFactoryReportTo, OutsideServicesAreRefusedNamingTheKeyAndWhatIsSupported) {
  for (const std::string value : {"wandb", "mlflow", "[tensorboard, wandb]", "comet_ml", "swanlab", "clearml"}) {
    auto spec = ParseJobSpec(std::string(kBase) + "report_to: " + value + "\n", "job.yaml");
    ASSERT_FALSE(spec.ok()) << value;
    const std::string m = spec.status().message();
    EXPECT_NE(m.find("key 'report_to' at job.yaml:4: expected none, tensorboard or all (= tensorboard)"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("wandb, mlflow and other services are not supported: they would send the job's metrics "
                     "outside the cluster"),
              std::string::npos)
        << m;
  }
  auto both = ParseJobSpec(std::string(kBase) + "report_to: [none, tensorboard]\n", "job.yaml");
  ASSERT_FALSE(both.ok()) << "none and tensorboard contradict each other";
  EXPECT_NE(both.status().message().find("got a list"), std::string::npos) << both.status().message();
}

TEST(LlamaFactoryPlotLoss, IsAFlagNowHonoured) {
  auto on = ParseJobSpec(std::string(kBase) + "plot_loss: true\n", "job.yaml");
  ASSERT_TRUE(on.ok());
  EXPECT_TRUE(on->train.plot_loss);
  EXPECT_TRUE(on->warnings.empty());
  auto bad = ParseJobSpec(std::string(kBase) + "plot_loss: sometimes\n", "job.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("key 'plot_loss' at job.yaml:4: expected true or false, got 'sometimes'"),
            std::string::npos)
      << bad.status().message();
}

TEST(LlamaFactoryPissa, KeysAreReadWithLlamaFactorysDefaults) {
  auto plain = ParseJobSpec(kBase, "job.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->finetuning.pissa_init);
  EXPECT_EQ(plain->finetuning.pissa_iter, 16);  // LLaMA-Factory's default
  EXPECT_FALSE(plain->finetuning.pissa_convert);
  auto spec = ParseJobSpec(std::string(kBase) + "pissa_init: true\npissa_iter: -1\npissa_convert: true\n", "job.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_TRUE(spec->finetuning.pissa_init);
  EXPECT_EQ(spec->finetuning.pissa_iter, -1);
  EXPECT_TRUE(spec->finetuning.pissa_convert);
  auto back = ParseJobSpec(ToYaml(*spec), "emitted.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->finetuning, spec->finetuning);
  EXPECT_FALSE(ParseJobSpec(std::string(kBase) + "pissa_iter: -2\n", "job.yaml").ok());
}

TEST(LlamaFactoryPissa, CombinationsLlamaFactoryRefusesAreRefusedNamingBothKeys) {
  const std::pair<const char*, const char*> cases[] = {
      {"finetuning_type: full\n", "PiSSA cannot be used with 'finetuning_type' at job.yaml:"},
      {"stage: kto\n", "PiSSA cannot be used with 'stage' at job.yaml:"},
      {"stage: dpo\n", "PiSSA cannot be used with 'stage' at job.yaml:"},
      {"quantization_bit: 8\n", "PiSSA cannot be used with 'quantization_bit' at job.yaml:"},
      {"zero_stage: 3\n", "PiSSA cannot be used with 'zero_stage' at job.yaml:"},
      {"use_dora: true\n", "PiSSA cannot be used with 'use_dora' at job.yaml:"},
      {"adapter_name_or_path: /a\n", "PiSSA cannot be used with 'adapter_name_or_path' at job.yaml:"},
  };
  for (const auto& [extra, want] : cases) {
    auto spec = ParseJobSpec(std::string(kBase) + "pissa_init: true\n" + extra, "job.yaml");
    ASSERT_FALSE(spec.ok()) << extra;
    EXPECT_NE(spec.status().message().find("key 'pissa_init' at job.yaml:4: " + std::string(want)), std::string::npos)
        << spec.status().message();
  }
  // dpo without a reference model (orpo, simpo) may use PiSSA, as in LLaMA-Factory.
  EXPECT_TRUE(ParseJobSpec(std::string(kBase) + "pissa_init: true\nstage: dpo\npref_loss: orpo\n", "job.yaml").ok());
}

}  // namespace
}  // namespace anneal::jobspec
