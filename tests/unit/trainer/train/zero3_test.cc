// ZeRO-3's unit bookkeeping (TrainerOptimizer stage 3) over a real Gloo group of two ranks (two threads of this
// process): the decoder layers' trainable parameters keep their shape but no storage except between the layer
// hook's gather and free; a step through gather, backward, reduce-scatter and free equals plain AdamW on the
// summed gradients; FullParam / SetParam read and write the full value from the shards; the root unit
// (parameters outside decoder layers) is gathered by GatherRoot and freed by the step. The same with CPU offload
// (the optimizer, and the parameter shards: host tensors distinct from the device's even on a CPU device).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <thread>

#include "common/net.h"
#include "trainer/parallel/comm.h"
#include "trainer/parallel/flat_shard.h"
#include "trainer/train/grad_reducer.h"
#include "trainer/train/zero.h"

namespace anneal::train {
namespace {

StatusOr<std::shared_ptr<parallel::Comm>> ConnectPair(int rank, int port) {
  ASSIGN_OR_RETURN(auto store, parallel::ConnectStore("127.0.0.1", port, rank, 2, std::chrono::seconds(30)));
  return parallel::Comm::Create(store, "dp", {0, 1}, rank, false, std::chrono::seconds(30));
}

// Layer 0: a [2, 3]; layer 1: b [3]; root: n [2].
std::vector<optim::TrainableParam> Params() {
  return {{"model.layers.0.mlp.a", torch::linspace(-1.0, 1.0, 6).view({2, 3}).requires_grad_(true)},
          {"model.layers.1.mlp.b", torch::linspace(0.5, 2.0, 3).requires_grad_(true)},
          {"model.norm.weight", torch::linspace(-2.0, 3.0, 2).requires_grad_(true)}};
}

// coeff * sum(a * xa + b * xb + n * xn): each gradient coeff * x.
at::Tensor Loss(const std::vector<optim::TrainableParam>& params, double coeff) {
  const at::Tensor xa = torch::linspace(0.3, -0.7, 6).view({2, 3}), xb = torch::linspace(1.5, -0.25, 3),
                   xn = torch::linspace(0.125, 0.75, 2);
  return coeff * ((params[0].param * xa).sum() + (params[1].param * xb).sum() + (params[2].param * xn).sum());
}

constexpr optim::AdamWOptions kAdam{.lr = 0.1, .weight_decay = 0.01};

struct Result {
  std::string error;
  std::vector<size_t> bytes_after_setup;   // storage bytes of a, b, n
  std::vector<int64_t> numel_after_setup;  // a's shape survives
  size_t b_bytes_while_a_gathered = 1;
  at::Tensor a_gathered, full_b, after_set;
  std::vector<at::Tensor> stepped;  // a, b, n after one step, gathered
  std::vector<size_t> bytes_after_step;
  int64_t device_shard_bytes = -1, host_bytes = -1;
};

void RunRank(int rank, int port, Result* out, Offload offload = Offload::kNone) {
  auto comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  std::vector<optim::TrainableParam> params = Params();
  TrainerOptimizer opt(params, kAdam, comm->get(), /*stage=*/3, 1 << 20, offload);
  out->device_shard_bytes = opt.ShardedParamBytes();
  out->host_bytes = opt.HostBytes();
  for (const auto& p : params) out->bytes_after_setup.push_back(p.param.storage().nbytes());
  out->numel_after_setup = params[0].param.sizes().vec();
  auto hook = opt.LayerUseHook();
  hook(0, true);
  out->a_gathered = params[0].param.detach().clone();
  out->b_bytes_while_a_gathered = params[1].param.storage().nbytes();
  hook(0, false);
  out->full_b = opt.FullParam("model.layers.1.mlp.b");
  // One step as the trainer runs it: both layers gathered around the backward that uses them.
  GradientReducer reducer(params, comm->get(), 16, &opt.grad_params());
  reducer.Arm();
  opt.GatherRoot();
  hook(0, true);
  hook(1, true);
  Loss(params, rank + 1).backward();
  hook(1, false);
  hook(0, false);
  reducer.Finish();
  opt.Step(0.1);
  opt.ZeroGrad();
  for (const auto& p : params) out->bytes_after_step.push_back(p.param.storage().nbytes());
  opt.GatherAllLayers();
  for (const auto& p : params) out->stepped.push_back(p.param.detach().clone());
  opt.FreeAllLayers();
  opt.SetParam("model.layers.1.mlp.b", torch::tensor({7.0f, 8.0f, 9.0f}));
  out->after_set = opt.FullParam("model.layers.1.mlp.b");
}

TEST(ZeroThree, UnitOfNamesTheDecoderLayerOrTheRoot) {
  EXPECT_EQ(ZeroThreeUnitOf("model.layers.0.self_attn.q_proj.weight"), 0);
  EXPECT_EQ(ZeroThreeUnitOf("model.layers.17.mlp.down_proj.lora_A.weight"), 17);
  EXPECT_EQ(ZeroThreeUnitOf("model.embed_tokens.weight"), -1);
  EXPECT_EQ(ZeroThreeUnitOf("model.norm.weight"), -1);
  EXPECT_EQ(ZeroThreeUnitOf("lm_head.weight"), -1);
  EXPECT_EQ(ZeroThreeUnitOf("model.layers.x.weight"), -1);
  EXPECT_EQ(ZeroThreeUnitOf("model.layers.3"), -1);
}

void CheckStageThree(Offload offload) {
  std::array<Result, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunRank, 1, port, &results[1], offload);
  RunRank(0, port, &results[0], offload);
  r1.join();
  std::vector<optim::TrainableParam> ref = Params();
  const std::vector<at::Tensor> initial = {ref[0].param.detach().clone(), ref[1].param.detach().clone()};
  Loss(ref, 3.0).backward();
  optim::AdamW adam(ref, kAdam);
  adam.Step(0.1);
  for (int rank = 0; rank < 2; ++rank) {
    const Result& r = results[rank];
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.bytes_after_setup, (std::vector<size_t>{0, 0, 0})) << "rank " << rank << ": every unit freed";
    EXPECT_EQ(r.numel_after_setup, (std::vector<int64_t>{2, 3})) << "a freed parameter keeps its shape";
    EXPECT_TRUE(torch::equal(r.a_gathered, initial[0])) << "rank " << rank << " gathered " << r.a_gathered;
    EXPECT_EQ(r.b_bytes_while_a_gathered, 0u) << "only the layer in use is gathered";
    EXPECT_TRUE(torch::equal(r.full_b, initial[1])) << r.full_b;
    EXPECT_EQ(r.bytes_after_step, (std::vector<size_t>{0, 0, 0})) << "the step gathers nothing and frees the root";
    ASSERT_EQ(r.stepped.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(torch::allclose(r.stepped[i], ref[i].param.detach(), 1e-6, 1e-7))
          << "rank " << rank << " parameter " << i << ": " << r.stepped[i] << " vs " << ref[i].param.detach();
    }
    EXPECT_TRUE(torch::equal(r.after_set, torch::tensor({7.0f, 8.0f, 9.0f}))) << r.after_set;
    // Rank 0 owns a[0:3], b[0:2], n[0:1]; rank 1 a[3:6], b[2:3], n[1:2]: 6 and 5 fp32 elements.
    const int64_t owned = rank == 0 ? 6 : 5;
    if (offload == Offload::kNone) {
      EXPECT_EQ(r.device_shard_bytes, owned * 4);
      EXPECT_EQ(r.host_bytes, 0);
    } else {
      // On the host: the shards (AdamW's tensors) and two fp32 moments each.
      EXPECT_EQ(r.host_bytes, owned * 4 * 3) << "rank " << rank;
      EXPECT_EQ(r.device_shard_bytes, offload == Offload::kOptimizerAndParams ? 0 : owned * 4) << "rank " << rank;
    }
  }
}

TEST(ZeroThree, LayersHoldStorageOnlyWhileInUseAndTheStepEqualsPlainAdamW) {
  CheckStageThree(Offload::kNone);
}

TEST(ZeroThree, OffloadedOptimizerStepsOnHostCopiesAndEqualsPlainAdamW) {
  CheckStageThree(Offload::kOptimizer);
}

TEST(ZeroThree, OffloadedParameterShardsLeaveTheDeviceAndTheStepEqualsPlainAdamW) {
  CheckStageThree(Offload::kOptimizerAndParams);
}

// Prefetch: layer 0's gather starts layer 1's; layer 1's gather then only waits for it (the values are the
// gathered ones), and backward's descending order prefetches downwards. The step still equals plain AdamW.
struct PrefetchResult {
  std::string error;
  size_t b_bytes_while_a_gathered = 0;
  at::Tensor b_prefetched;
  int64_t gathers = 0, prefetched = 0;
  std::vector<at::Tensor> stepped;
};

void RunPrefetchRank(int rank, int port, PrefetchResult* out) {
  auto comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  std::vector<optim::TrainableParam> params = Params();
  TrainerOptimizer opt(params, kAdam, comm->get(), /*stage=*/3, 1 << 20);
  opt.SetPrefetch(true);
  GradientReducer reducer(params, comm->get(), 16, &opt.grad_params());
  auto hook = opt.LayerUseHook();
  reducer.Arm();
  opt.GatherRoot();
  hook(0, true);  // forward: prefetches layer 1
  out->b_bytes_while_a_gathered = params[1].param.storage().nbytes();
  hook(0, false);
  hook(1, true);
  out->b_prefetched = params[1].param.detach().clone();
  hook(1, false);
  hook(1, true);  // backward, descending: prefetches layer 0
  hook(0, true);
  Loss(params, rank + 1).backward();
  hook(0, false);
  hook(1, false);
  reducer.Finish();
  opt.Step(0.1);
  opt.ZeroGrad();
  out->gathers = opt.layer_gathers();
  out->prefetched = opt.prefetched_gathers();
  opt.GatherAllLayers();
  for (const auto& p : params) out->stepped.push_back(p.param.detach().clone());
  opt.FreeAllLayers();
}

TEST(ZeroThree, PrefetchGathersTheNextLayerWhileOneComputesAndChangesNoResult) {
  std::array<PrefetchResult, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunPrefetchRank, 1, port, &results[1]);
  RunPrefetchRank(0, port, &results[0]);
  r1.join();
  std::vector<optim::TrainableParam> ref = Params();
  const at::Tensor initial_b = ref[1].param.detach().clone();
  Loss(ref, 3.0).backward();
  optim::AdamW adam(ref, kAdam);
  adam.Step(0.1);
  for (int rank = 0; rank < 2; ++rank) {
    const PrefetchResult& r = results[rank];
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.b_bytes_while_a_gathered, 3u * 4) << "rank " << rank << ": layer 1 allocated by the prefetch";
    EXPECT_TRUE(torch::equal(r.b_prefetched, initial_b)) << r.b_prefetched;
    // Forward 0 (gathered), 1 (prefetched); backward 1 (gathered: the same layer turns round), 0 (prefetched).
    EXPECT_EQ(r.gathers, 4);
    EXPECT_EQ(r.prefetched, 2);
    ASSERT_EQ(r.stepped.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(torch::allclose(r.stepped[i], ref[i].param.detach(), 1e-6, 1e-7))
          << "rank " << rank << " parameter " << i << ": " << r.stepped[i] << " vs " << ref[i].param.detach();
    }
  }
}

// Gather buckets (resources.gather_bucket_size, DeepSpeed's allgather / stage3_prefetch_bucket_size): layers 0
// and 1 hold four [6] fp32 parameters each. Stage 3: gathering layer 0 with prefetch on issues one collective
// per bucket of layer 0 and of layer 1; stage 1: each owner broadcasts its four parameters per bucket.
struct GatherBucketResult {
  std::string error;
  int64_t stage3_collectives = -1, stage1_collectives = -1;
  bool gathered_equal = false, stepped_equal = false;
};

std::vector<optim::TrainableParam> EightParams() {
  std::vector<optim::TrainableParam> params;
  for (int i = 0; i < 8; ++i) {
    params.push_back(
        {c10::str("model.layers.", i / 4, ".mlp.p", i), torch::linspace(-1.0 + i, 1.0 + i, 6).requires_grad_(true)});
  }
  return params;
}

void RunGatherBucketRank(int rank, int port, int64_t bucket_bytes, GatherBucketResult* out) {
  auto comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  const std::vector<optim::TrainableParam> initial = EightParams();
  std::vector<optim::TrainableParam> params = EightParams();
  TrainerOptimizer three(params, kAdam, comm->get(), /*stage=*/3, bucket_bytes);
  three.SetPrefetch(true);
  three.LayerUseHook()(0, true);
  out->stage3_collectives = three.gather_collectives();
  out->gathered_equal = true;
  for (int i = 0; i < 4; ++i) out->gathered_equal &= torch::equal(params[i].param.detach(), initial[i].param);
  three.LayerUseHook()(0, false);
  std::vector<optim::TrainableParam> replicated = EightParams();
  TrainerOptimizer one(replicated, kAdam, comm->get(), /*stage=*/1, bucket_bytes);
  for (auto& p : replicated) p.param.mutable_grad() = torch::ones({6});
  one.Step(0.1);
  out->stage1_collectives = one.gather_collectives();
  std::vector<optim::TrainableParam> ref = EightParams();
  for (auto& p : ref) p.param.mutable_grad() = torch::ones({6});
  optim::AdamW(ref, kAdam).Step(0.1);
  out->stepped_equal = true;
  for (int i = 0; i < 8; ++i) out->stepped_equal &= torch::allclose(replicated[i].param, ref[i].param);
}

std::array<GatherBucketResult, 2> RunGatherBuckets(int64_t bucket_bytes) {
  std::array<GatherBucketResult, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunGatherBucketRank, 1, port, bucket_bytes, &results[1]);
  RunGatherBucketRank(0, port, bucket_bytes, &results[0]);
  r1.join();
  return results;
}

TEST(ZeroGatherBuckets, EveryBucketOfTheGatherBucketSizeIsOneCollective) {
  // {bucket elements as the job spec gives them, collectives of stage 3's gather + prefetch, of stage 1's step}.
  struct Case {
    int64_t elements;
    int64_t stage3, stage1;
  };
  for (const Case& c : {Case{12, 4, 4}, Case{6, 8, 8}, Case{24, 2, 2}, Case{0, 2, 2}}) {
    // 0: ddp_bucket_cap_mb (25 MiB) holds everything.
    const int64_t bytes = ResolveBucketBytes(0, c.elements, 25, 3, 64, 4).gather;
    EXPECT_EQ(bytes, c.elements == 0 ? int64_t{25} << 20 : c.elements * 4);
    for (const GatherBucketResult& r : RunGatherBuckets(bytes)) {
      ASSERT_TRUE(r.error.empty()) << r.error;
      EXPECT_EQ(r.stage3_collectives, c.stage3) << c.elements << " elements";
      EXPECT_EQ(r.stage1_collectives, c.stage1) << c.elements << " elements";
      EXPECT_TRUE(r.gathered_equal);
      EXPECT_TRUE(r.stepped_equal) << "stage 1's step in buckets equals plain AdamW";
    }
  }
}

TEST(ZeroGatherBuckets, AutoFollowsHFsDeepSpeedFillAndZeroTakesDdpBucketCapMb) {
  // HF's deepspeed integration: reduce_bucket_size hidden^2, stage3_prefetch_bucket_size int(0.9 hidden^2);
  // allgather_bucket_size (stages 1/2, not filled by HF) hidden^2. Elements times the parameters' bytes.
  EXPECT_EQ(ResolveBucketBytes(-1, -1, 25, 3, 4096, 2).reduce, int64_t{4096} * 4096 * 2);
  EXPECT_EQ(ResolveBucketBytes(-1, -1, 25, 3, 4096, 2).gather, int64_t{15099494} * 2);
  EXPECT_EQ(ResolveBucketBytes(-1, -1, 25, 2, 4096, 4).gather, int64_t{4096} * 4096 * 4);
  EXPECT_EQ(ResolveBucketBytes(0, 0, 25, 2, 4096, 2).reduce, int64_t{25} << 20);
  EXPECT_EQ(ResolveBucketBytes(0, 0, 0.5, 2, 4096, 2).gather, int64_t{1} << 19);
  EXPECT_EQ(ResolveBucketBytes(500000000, 50000000, 25, 3, 4096, 4).gather, 200000000);
}

// One rank (stage 0 in effect): the step runs on host copies; a parameter set afterwards (a checkpoint's) is
// what the next step starts from, so the host copy follows SetParam.
TEST(ZeroOffload, OneRankStepsOnHostCopiesThatFollowSetParam) {
  std::vector<optim::TrainableParam> params = Params(), ref = Params();
  TrainerOptimizer opt(params, kAdam, nullptr, /*stage=*/2, 1 << 20, Offload::kOptimizer);
  EXPECT_EQ(opt.offload(), Offload::kOptimizer);
  EXPECT_EQ(opt.HostBytes(), 11 * 4 * 3) << "11 fp32 elements: host copies and two moments";
  for (const auto& [key, t] : opt.StateTensors()) EXPECT_TRUE(t.device().is_cpu()) << key;
  const at::Tensor b = torch::tensor({7.0f, 8.0f, 9.0f});
  opt.SetParam("model.layers.1.mlp.b", b);
  {
    torch::NoGradGuard no_grad;
    ref[1].param.copy_(b);
  }
  Loss(params, 2.0).backward();
  Loss(ref, 2.0).backward();
  opt.Step(0.1);
  optim::AdamW adam(ref, kAdam);
  adam.Step(0.1);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(torch::equal(params[i].param.detach(), ref[i].param.detach()))
        << params[i].name << ": " << params[i].param << " vs " << ref[i].param;
  }
  opt.ZeroGrad();
  Loss(params, 1.0).backward();
  opt.Step(0.05);
  EXPECT_FALSE(torch::equal(params[1].param.detach(), ref[1].param.detach())) << "a second step moves it again";
}

}  // namespace
}  // namespace anneal::train
