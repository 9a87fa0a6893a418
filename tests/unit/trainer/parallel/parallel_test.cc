// The parallel layout's pure parts: ParallelDims (validation, rank order, groups, stage split), ParamLayout
// slicing, pipeline-stage models (which parameters a stage holds, and loading a stage's part of a full
// checkpoint), and the memory plan's arithmetic for ZeRO stages 0, 1 and 2. The collectives themselves run in
// tests/parity/parallel with real processes.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "trainer/model/decoder.h"
#include "trainer/model/presets.h"
#include "trainer/parallel/dims.h"
#include "trainer/parallel/memory_plan.h"
#include "trainer/parallel/sharding.h"
#include "trainer/train/state_io.h"

namespace anneal {
namespace {

namespace fs = std::filesystem;
using parallel::ModelShape;
using parallel::ParallelDims;

const ModelShape kShape{.heads = 8, .kv_heads = 4, .layers = 4, .intermediate = 64, .vocab = 128};

TEST(ParallelDims, DerivesDataParallelAndOrdersTensorParallelInnermost) {
  auto d = ParallelDims::Make(8, 2, 2, kShape);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->dp(), 2);
  // rank = pp * (dp * tp) + dp * tp + tp
  EXPECT_EQ(d->RankOf(1, 1, 1), 7);
  EXPECT_EQ(d->TpRank(5), 1);
  EXPECT_EQ(d->DpRank(5), 0);
  EXPECT_EQ(d->PpRank(5), 1);
  EXPECT_EQ(d->TpGroup(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(d->DpGroup(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(d->PpGroup(5), (std::vector<int>{1, 5}));
}

TEST(ParallelDims, NamesEveryViolatedConstraint) {
  const ModelShape odd{.heads = 6, .kv_heads = 3, .layers = 2, .intermediate = 50, .vocab = 101};
  auto d = ParallelDims::Make(10, 4, 3, odd);
  ASSERT_FALSE(d.ok());
  const std::string m = d.status().message();
  EXPECT_NE(m.find("world size 10 is not divisible by tensor 4 x pipeline 3"), std::string::npos) << m;
  EXPECT_NE(m.find("does not divide the 6 attention heads"), std::string::npos) << m;
  EXPECT_NE(m.find("3 kv heads"), std::string::npos) << m;
  EXPECT_NE(m.find("intermediate_size 50"), std::string::npos) << m;
  EXPECT_NE(m.find("vocab_size 101"), std::string::npos) << m;
  EXPECT_NE(m.find("pipeline parallel 3 exceeds the 2 layers"), std::string::npos) << m;
}

TEST(ParallelDims, AllowsReplicatedKvHeadsWhenTensorParallelIsAMultiple) {
  const ModelShape gqa{.heads = 8, .kv_heads = 2, .layers = 2, .intermediate = 64, .vocab = 128};
  EXPECT_TRUE(ParallelDims::Make(4, 4, 1, gqa).ok());
  EXPECT_FALSE(ParallelDims::Make(0, 1, 1, gqa).ok());
  EXPECT_FALSE(ParallelDims::Make(2, 0, 1, gqa).ok());
}

TEST(ParallelDims, CarvesExpertParallelFromDataParallel) {
  ModelShape moe = kShape;
  moe.routed_experts = 8;
  auto d = ParallelDims::Make(8, 1, 1, moe, /*ep=*/2);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->dp(), 8);
  EXPECT_EQ(d->ep(), 2);
  // dp_rank = edp_rank * ep + ep_rank: expert-parallel groups of consecutive data-parallel ranks.
  EXPECT_EQ(d->EpRank(5), 1);
  EXPECT_EQ(d->EdpRank(5), 2);
  EXPECT_EQ(d->EpGroup(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(d->EdpGroup(5), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_NE(d->ToString().find("ep=2"), std::string::npos) << d->ToString();
}

TEST(ParallelDims, NamesEveryViolatedExpertParallelConstraint) {
  ModelShape moe = kShape;
  moe.routed_experts = 6;
  auto d = ParallelDims::Make(8, 2, 2, moe, /*ep=*/4);
  ASSERT_FALSE(d.ok());
  const std::string m = d.status().message();
  EXPECT_NE(m.find("invalid parallel layout (tp=2, pp=2, ep=4, world=8)"), std::string::npos) << m;
  EXPECT_NE(m.find("expert parallel 4 does not divide the 6 routed experts"), std::string::npos) << m;
  EXPECT_NE(m.find("expert parallel 4 does not divide the data parallel size 2"), std::string::npos) << m;
  moe.expert_intermediate = 15;  // tp 2 cannot split an expert of width 15, nor a shared expert of width 9
  moe.shared_intermediate = 9;
  auto odd = ParallelDims::Make(8, 2, 2, moe, /*ep=*/4);
  ASSERT_FALSE(odd.ok());
  const std::string o = odd.status().message();
  EXPECT_NE(o.find("expert parallel 4 does not divide the 6 routed experts"), std::string::npos) << o;
  EXPECT_NE(o.find("tensor parallel 2 does not divide the routed experts' width (moe_intermediate_size 15"),
            std::string::npos)
      << o;
  EXPECT_NE(o.find("tensor parallel 2 does not divide the shared experts' width 9"), std::string::npos) << o;
  auto dense = ParallelDims::Make(4, 1, 1, kShape, 2);
  ASSERT_FALSE(dense.ok());
  EXPECT_NE(dense.status().message().find("expert parallel 2 needs a mixture-of-experts model (this one is dense)"),
            std::string::npos)
      << dense.status().message();
  EXPECT_NE(ParallelDims::Make(4, 1, 1, moe, 0).status().message().find("expert parallel size must be >= 1"),
            std::string::npos);
  EXPECT_TRUE(ParallelDims::Make(4, 1, 1, moe, 1).ok());  // ep 1: nothing asked of the model
}

TEST(ParallelDims, ComposesExpertParallelWithTensorAndPipelineParallel) {
  ModelShape moe = kShape;
  moe.routed_experts = 8;
  moe.expert_intermediate = 16;
  // tp 2 x pp 2 x dp 4, ep 2: rank = pp * 8 + dp * 2 + tp. Expert groups stay inside one (tp, pp) position.
  auto d = ParallelDims::Make(16, 2, 2, moe, /*ep=*/2);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->dp(), 4);
  // rank 13: pp 1, dp 2, tp 1 -> ep_rank 0, edp_rank 1.
  EXPECT_EQ(d->EpGroup(13), (std::vector<int>{13, 15}));
  EXPECT_EQ(d->EdpGroup(13), (std::vector<int>{9, 13}));
  EXPECT_EQ(d->TpGroup(13), (std::vector<int>{12, 13}));
  // tp 2 x ep 2 in a world of 4 and pp 2 x ep 2 in a world of 4.
  EXPECT_TRUE(ParallelDims::Make(4, 2, 1, moe, 2).ok());
  EXPECT_TRUE(ParallelDims::Make(4, 1, 2, moe, 2).ok());
}

TEST(ParallelDims, SplitsLayersEvenlyOverStages) {
  auto d = ParallelDims::Make(3, 1, 3, kShape);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->StageLayers(0, 4), (std::pair<int64_t, int64_t>{0, 1}));
  EXPECT_EQ(d->StageLayers(1, 4), (std::pair<int64_t, int64_t>{1, 2}));
  EXPECT_EQ(d->StageLayers(2, 4), (std::pair<int64_t, int64_t>{2, 4}));
}

TEST(ParamLayout, SlicesAndRestoresTheFullShape) {
  torch::Tensor full = torch::arange(24).view({4, 6});
  model::ParamLayout cols{.dim = 1, .shards = 3, .index = 2};
  EXPECT_TRUE(torch::equal(cols.Slice(full), full.narrow(1, 4, 2)));
  EXPECT_EQ(cols.FullShape(cols.Slice(full).sizes()), (std::vector<int64_t>{4, 6}));
  model::ParamLayout whole;
  EXPECT_TRUE(torch::equal(whole.Slice(full), full));
  EXPECT_TRUE(parallel::CountsOnce(whole, 0, 2));
  EXPECT_FALSE(parallel::CountsOnce(whole, 1, 2));  // a replicated tensor counts on the first rank only
  model::ParamLayout kv{.dim = 0, .shards = 2, .index = 0, .partial_grad = true};
  EXPECT_TRUE(parallel::CountsOnce(kv, 2, 4));  // ranks 2 and 3 hold piece 1: rank 2 counts it
  EXPECT_FALSE(parallel::CountsOnce(kv, 3, 4));
  EXPECT_TRUE(torch::equal(parallel::GatherFull(full, cols, nullptr), full));  // no group: as it is
}

model::ModelConfig TinyConfig() {
  auto cfg = model::PresetConfig("llama", "tiny", 128);
  EXPECT_TRUE(cfg.ok());
  cfg->num_hidden_layers = 4;
  return *cfg;
}

TEST(PipelineStage, HoldsOnlyItsLayersUnderHfNames) {
  model::CausalLM middle(TinyConfig(), torch::TensorOptions(), nullptr,
                         model::StageSpec{.layer_begin = 1, .layer_end = 3, .first = false, .last = false});
  std::set<std::string> layers;
  for (const auto& p : middle->named_parameters()) {
    const std::string& n = p.key();
    ASSERT_EQ(n.rfind("model.layers.", 0), 0u) << n;  // no embedding, norm or head
    layers.insert(n.substr(13, 1));
  }
  EXPECT_EQ(layers, (std::set<std::string>{"1", "2"}));
  EXPECT_THROW(middle->Embed(torch::zeros({1, 2}, torch::kInt64)), c10::Error);
  EXPECT_THROW(middle->Forward({.input_ids = torch::zeros({1, 2}, torch::kInt64)}), c10::Error);
}

TEST(PipelineStage, StagesTogetherComputeTheWholeModel) {
  const fs::path dir = fs::temp_directory_path() / ("anneal_stage_test_" + std::to_string(::getpid()));
  model::CausalLM whole(TinyConfig(), torch::TensorOptions());
  model::InitWeights(whole, 3);
  ASSERT_TRUE(model::SaveCausalLM(whole, dir.string()).ok());
  model::LoadOptions first_stage, last_stage;
  first_stage.stage = {.layer_begin = 0, .layer_end = 2, .first = true, .last = false};
  last_stage.stage = {.layer_begin = 2, .layer_end = 4, .first = false, .last = true};
  auto first = model::LoadCausalLM(dir.string(), first_stage);
  auto last = model::LoadCausalLM(dir.string(), last_stage);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 128, {2, 9}, torch::kInt64);
  model::ForwardInputs in{.input_ids = ids};
  torch::Tensor x = (*first)->RunLayers((*first)->Embed(ids), in, 0, 2);
  torch::Tensor staged = (*last)->FinalNorm((*last)->RunLayers(x, in, 2, 4));
  EXPECT_TRUE(torch::allclose(staged, whole->Forward(in), 1e-6, 1e-6));
  fs::remove_all(dir);
}

TEST(CheckStateFiles, NamesAShardWrittenOnANodeThisOneCannotSee) {
  const fs::path dir = fs::temp_directory_path() / ("anneal_state_files_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  train::Runtime rt;
  auto dims = ParallelDims::Make(4, 1, 2, kShape);  // pp 2 x dp 2
  ASSERT_TRUE(dims.ok());
  rt.dims = *dims;
  rt.zero = true;
  for (const char* f :
       {"trainable-stage0.safetensors", "trainable-stage1.safetensors", "optimizer-stage0-dp0.safetensors",
        "optimizer-stage0-dp1.safetensors", "optimizer-stage1-dp0.safetensors"}) {
    std::ofstream(dir / f) << "x";
  }
  Status st = train::CheckStateFiles(rt, dir.string());
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("optimizer-stage1-dp1.safetensors is missing"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("shared by every node"), std::string::npos) << st.message();
  std::ofstream(dir / "optimizer-stage1-dp1.safetensors") << "x";
  EXPECT_TRUE(train::CheckStateFiles(rt, dir.string()).ok());
  fs::remove_all(dir);
}

// bf16 compute (2 bytes), three trainable parameters of 600, 300 and 100 elements, data-parallel rank 1 of 2,
// buckets of 100 bytes; one micro-batch of 2 rows x 8 tokens, hidden 4, 3 layers.
parallel::MemoryPlanInput PlanInput(int stage) {
  parallel::MemoryPlanInput in;
  in.stage = stage;
  in.dp = 2;
  in.dp_rank = 1;
  in.held_params = 1000;
  in.param_bytes = 2;
  in.trainable = {600, 300, 100};
  in.trainable_bytes = 2;
  in.bucket_bytes = 100;
  in.micro_rows = 2;
  in.seq_len = 8;
  in.hidden = 4;
  in.layers = 3;
  return in;
}

TEST(MemoryPlan, StagesZeroOneAndTwoMatchTheHandComputedBytes) {
  // Activations: 2 * 8 * 4 values * 2 bytes = 128 per layer value; 17 per layer over 3 layers.
  const auto zero = parallel::PlanMemory(PlanInput(0));
  EXPECT_EQ(zero.parameters, 2000);
  EXPECT_EQ(zero.gradients, 2000);
  EXPECT_EQ(zero.optimizer, 1000 * 12) << "two fp32 moments and an fp32 master per element";
  EXPECT_EQ(zero.activations, 128 * 17 * 3);
  EXPECT_EQ(zero.total(), 2000 + 2000 + 12000 + 6528);
  // ZeRO-1: 600 goes to rank 0, then 300 and 100 to the less loaded rank 1.
  const auto one = parallel::PlanMemory(PlanInput(1));
  EXPECT_EQ(one.gradients, 2000);
  EXPECT_EQ(one.optimizer, 400 * 12);
  // ZeRO-2: rank 1 owns 300 + 150 + 50 elements; gradients are that plus three 100-byte buckets.
  const auto two = parallel::PlanMemory(PlanInput(2));
  EXPECT_EQ(two.parameters, 2000);
  EXPECT_EQ(two.gradients, 500 * 2 + 3 * 100);
  EXPECT_EQ(two.optimizer, 500 * 12);
}

TEST(MemoryPlan, StageThreeHoldsTheOwnedChunksOfShardedParametersPlusTheLargestLayer) {
  // The 600 and 300 element parameters are two decoder layers', the 100 the root unit's: all sharded.
  auto in = PlanInput(3);
  in.sharded_params = {600, 300, 100};
  in.largest_unit = 100 + 600;  // the root and the largest layer gathered at once
  const auto three = parallel::PlanMemory(in);
  // Rank 1 owns 300 + 150 + 50 and holds 700 gathered.
  EXPECT_EQ(three.parameters, (500 + 700) * 2);
  EXPECT_EQ(three.gradients, 500 * 2 + 3 * 100) << "as ZeRO-2";
  EXPECT_EQ(three.optimizer, 500 * 12);
  EXPECT_EQ(three.activations, 128 * (3 + 17)) << "every layer checkpointed under ZeRO-3";
  in.dp_rank = 0;
  EXPECT_EQ(parallel::PlanMemory(in).parameters, (500 + 700) * 2) << "rank 0 owns as much";
  in.dp = 4;
  in.dp_rank = 3;  // chunks of 150, 75, 25: rank 3 owns 150 + 75 + 25
  EXPECT_EQ(parallel::PlanMemory(in).parameters, (250 + 700) * 2);
}

TEST(MemoryPlan, AccumulationKeepsShardGradientsAndCheckpointingShrinksActivations) {
  auto in = PlanInput(2);
  in.accumulation = 2;
  EXPECT_EQ(parallel::PlanMemory(in).gradients, 500 * 2 + 3 * 100) << "each micro-batch reduce-scattered";
  in.stage = 1;
  EXPECT_EQ(parallel::PlanMemory(in).gradients, 2000) << "ZeRO-1: micro-batches sum into full gradients";
  in.stage = 2;
  in.checkpointing = true;
  EXPECT_EQ(parallel::PlanMemory(in).activations, 128 * (3 + 17)) << "layer inputs plus one layer recomputed";
  in = PlanInput(0);
  in.trainable_bytes = 4;  // fp32 trainable (LoRA adapters): no master copy
  EXPECT_EQ(parallel::PlanMemory(in).optimizer, 1000 * 8);
}

TEST(MemoryPlan, QloraCountsThe4BitBaseInTheParameters) {
  auto in = PlanInput(0);
  in.quantized_bytes = int64_t{3} << 20;  // packed 4-bit weights and their absmax
  const auto plan = parallel::PlanMemory(in);
  EXPECT_EQ(plan.parameters, 2000 + (int64_t{3} << 20));
  EXPECT_EQ(plan.quantized, int64_t{3} << 20);
  EXPECT_NE(plan.Describe().find("parameters 3.0 MiB (4-bit base 3.0 MiB), gradients"), std::string::npos)
      << plan.Describe();
  EXPECT_EQ(parallel::PlanMemory(PlanInput(0)).Describe().find("4-bit"), std::string::npos);
}

TEST(MemoryPlan, OffloadMovesTheOptimizerStateAndParameterShardsToTheHostAndOnlyDeviceBytesMustFit) {
  auto in = PlanInput(2);
  const auto device_only = parallel::PlanMemory(in);
  in.offload_optimizer = true;
  const auto two = parallel::PlanMemory(in);
  // Rank 1 updates 500 elements: 12 bytes of state each, plus host copies of the 500 bf16 values and gradients.
  EXPECT_EQ(two.optimizer, 500 * 12);
  EXPECT_TRUE(two.optimizer_on_host);
  EXPECT_EQ(two.host, 500 * 12 + 2 * 500 * 2);
  EXPECT_EQ(two.parameters, device_only.parameters);
  EXPECT_EQ(two.gradients, device_only.gradients) << "the reduced shard gradients are made on the device";
  EXPECT_EQ(two.total(), device_only.total() - 500 * 12);
  EXPECT_NE(two.Describe().find("optimizer state 0.0 MiB (host)"), std::string::npos) << two.Describe();
  EXPECT_NE(two.Describe().find("on the device, host memory 0.0 MiB"), std::string::npos) << two.Describe();
  EXPECT_TRUE(two.CheckFits(two.total(), "cuda:0").ok()) << "the host bytes are not the device's";
  EXPECT_FALSE(two.CheckFits(two.total() - 1, "cuda:0").ok());
  // Stage 3 with the parameters offloaded: the owned chunks (500) leave the device; the gathered 700 stay.
  in = PlanInput(3);
  in.sharded_params = {600, 300, 100};
  in.largest_unit = 700;
  in.offload_optimizer = in.offload_params = true;
  const auto three = parallel::PlanMemory(in);
  EXPECT_EQ(three.parameters, 700 * 2);
  EXPECT_EQ(three.host, 500 * 12 + 2 * 500 * 2);
  in.offload_params = false;
  EXPECT_EQ(parallel::PlanMemory(in).parameters, (500 + 700) * 2) << "optimizer offload keeps the shards";
  // Without offload the fit message names offload as a way out; the host plan says nothing of host memory.
  const Status too_big = device_only.CheckFits(1, "cuda:0");
  EXPECT_NE(too_big.message().find("or offload: optimizer"), std::string::npos) << too_big.message();
  EXPECT_EQ(device_only.Describe().find("host"), std::string::npos) << device_only.Describe();
}

TEST(MemoryPlan, OffloadedHostBytesOfEveryRankOnTheMachineMustFitMemAvailable) {
  auto in = PlanInput(2);
  in.offload_optimizer = true;
  const auto plan = parallel::PlanMemory(in);
  const int64_t host = 500 * 12 + 2 * 500 * 2;  // as above: 8000 bytes a rank
  ASSERT_EQ(plan.host, host);
  EXPECT_TRUE(plan.CheckHostFits(2 * host, 2, "node-a").ok());
  EXPECT_TRUE(plan.CheckHostFits(0, 8, "node-a").ok()) << "unknown available memory: no check";
  const Status short_by_one = plan.CheckHostFits(2 * host - 1, 2, "node-a");
  ASSERT_FALSE(short_by_one.ok());
  EXPECT_EQ(short_by_one.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(short_by_one.message().find("CPU offload needs host memory 0.0 MiB a rank x 2 rank(s) on node-a"),
            std::string::npos)
      << short_by_one.message();
  EXPECT_NE(short_by_one.message().find("(MemAvailable in /proc/meminfo)"), std::string::npos);
  // The figure injected as /proc/meminfo gives it (kB).
  const std::string meminfo = "MemTotal:       16384 kB\nMemFree:        1024 kB\nMemAvailable:      15 kB\n";
  EXPECT_EQ(parallel::MemAvailableBytes(meminfo), 15 * 1024);
  EXPECT_TRUE(plan.CheckHostFits(parallel::MemAvailableBytes(meminfo), 1, "node-a").ok()) << "8000 <= 15360";
  EXPECT_FALSE(plan.CheckHostFits(parallel::MemAvailableBytes(meminfo), 2, "node-a").ok()) << "2 x 8000 > 15360";
  EXPECT_EQ(parallel::MemAvailableBytes("MemTotal: 5 kB\n"), 0) << "no MemAvailable line: unknown";
  EXPECT_EQ(parallel::MemAvailableBytes("MemAvailable: kB\n"), 0);
}

TEST(MemoryPlan, APlanOverTheDeviceFailsNamingTheNumbers) {
  const auto plan = parallel::PlanMemory(PlanInput(0));
  EXPECT_TRUE(plan.CheckFits(plan.total(), "cuda:0").ok());
  EXPECT_TRUE(plan.CheckFits(0, "cpu").ok()) << "unknown device memory: no check";
  const Status too_big = plan.CheckFits(plan.total() - 1, "cuda:0");
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(too_big.message().find("memory plan (ZeRO-0): parameters 0.0 MiB"), std::string::npos) << too_big.message();
  EXPECT_NE(too_big.message().find("does not fit the 0.0 MiB of cuda:0: raise zero_stage"), std::string::npos)
      << too_big.message();
  EXPECT_EQ(parallel::MemoryPlan::MiB(int64_t{3} << 19), "1.5 MiB");
}

}  // namespace
}  // namespace anneal
