// ZeRO-3's unit bookkeeping (TrainerOptimizer stage 3) over a real Gloo group of two ranks (two threads of this
// process): the decoder layers' trainable parameters keep their shape but no storage except between the layer
// hook's gather and free; a step through gather, backward, reduce-scatter and free equals plain AdamW on the
// summed gradients; FullParam / SetParam read and write the full value from the shards; the root unit
// (parameters outside decoder layers) is gathered by GatherRoot and freed by the step.
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
};

void RunRank(int rank, int port, Result* out) {
  auto comm = ConnectPair(rank, port);
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  std::vector<optim::TrainableParam> params = Params();
  TrainerOptimizer opt(params, kAdam, comm->get(), /*stage=*/3, 1 << 20);
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

TEST(ZeroThree, LayersHoldStorageOnlyWhileInUseAndTheStepEqualsPlainAdamW) {
  std::array<Result, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunRank, 1, port, &results[1]);
  RunRank(0, port, &results[0]);
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
  }
}

}  // namespace
}  // namespace anneal::train
