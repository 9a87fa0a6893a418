// Expert-parallel dispatch over a real Gloo group (one thread per rank of this process, each with its own TCPStore
// client and process group on loopback): each rank holds num_experts / ep experts, routes its own tokens and
// sends every token slot to its expert's rank by all-to-all. Outputs and input gradients equal the single-process
// layer on the same tokens; each expert's gradient on its owner equals the single-process gradient summed over
// every rank's tokens (the all-to-all's backward brings every rank's contribution to the owner).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "common/net.h"
#include "trainer/model/moe.h"
#include "trainer/parallel/comm.h"

namespace anneal::model {
namespace {

constexpr int64_t kHidden = 16, kExperts = 6;

MoeLayerSpec Spec(const ExpertParallel& ep = {}) {
  return MoeLayerSpec{.hidden = kHidden,
                      .num_experts = kExperts,
                      .top_k = 2,
                      .expert_intermediate = 8,
                      .norm_topk_prob = true,
                      .shared_intermediate = 4,
                      .ep = ep};
}

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return 1e9;
  if (b.numel() == 0) return 0.0;  // a rank without tokens: empty on both sides
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

struct RankResult {
  std::string error;
  torch::Tensor y, x_grad;
  std::map<std::string, torch::Tensor> grads;  // by parameter name
};

// Rank `rank` of `ep`: copies the reference's parameters it holds (by name), runs x [1, N, C] through the layer
// and backward from sum(y * g).
void RunRank(int rank, int ep, int port, SparseMoe* reference, torch::Tensor x, torch::Tensor g, RankResult* out) {
  auto store = parallel::ConnectStore("127.0.0.1", port, rank, ep, std::chrono::seconds(30));
  if (!store.ok()) {
    out->error = store.status().ToString();
    return;
  }
  std::vector<int> ranks;
  for (int r = 0; r < ep; ++r) ranks.push_back(r);
  auto comm = parallel::Comm::Create(*store, "ep", ranks, rank, false, std::chrono::seconds(30));
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  SparseMoe moe(Spec({.size = ep, .rank = rank, .comm = comm->get()}), LinearFactory(),
                torch::TensorOptions().dtype(torch::kFloat32));
  const auto full = (*reference)->named_parameters();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : moe->named_parameters()) p.value().copy_(full[p.key()]);
  }
  x = x.clone().requires_grad_(true);
  out->y = moe->forward(x);
  (out->y * g).sum().backward();
  out->x_grad = x.grad();
  for (auto& p : moe->named_parameters()) out->grads[p.key()] = p.value().grad();
}

void ExpectExpertParallelEqualsOneProcess(int ep, const std::vector<int64_t>& tokens) {
  torch::manual_seed(5);
  SparseMoe reference(Spec(), LinearFactory(), torch::TensorOptions().dtype(torch::kFloat32));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : reference->parameters()) p.normal_(0.0, 0.3);
  }
  std::vector<torch::Tensor> xs, gs;
  for (int r = 0; r < ep; ++r) {
    xs.push_back(torch::randn({1, tokens[r], kHidden}));
    gs.push_back(torch::randn({1, tokens[r], kHidden}));
  }
  std::vector<RankResult> results(ep);
  const int port = FreeLoopbackPort().value();
  std::vector<std::thread> threads;
  for (int r = 1; r < ep; ++r) threads.emplace_back(RunRank, r, ep, port, &reference, xs[r], gs[r], &results[r]);
  RunRank(0, ep, port, &reference, xs[0], gs[0], &results[0]);
  for (auto& t : threads) t.join();

  // One process: every rank's tokens through the whole layer; the expert gradients summed over them.
  for (int r = 0; r < ep; ++r) {
    ASSERT_TRUE(results[r].error.empty()) << results[r].error;
    torch::Tensor x = xs[r].clone().requires_grad_(true);
    torch::Tensor y = reference->forward(x);
    (y * gs[r]).sum().backward();
    EXPECT_LT(RelErr(results[r].y, y), 1e-5) << "rank " << r;
    EXPECT_LT(RelErr(results[r].x_grad, x.grad()), 1e-5) << "rank " << r;
  }
  int compared = 0;
  for (int r = 0; r < ep; ++r) {
    EXPECT_EQ(results[r].grads.count("experts.0.up_proj.weight"), r == 0 ? 1u : 0u) << "rank " << r;
    for (const auto& [name, grad] : results[r].grads) {
      if (!RoutedExpertOf("model.layers.0.mlp." + name)) continue;  // router / shared expert: this rank's tokens
      const torch::Tensor want = reference->named_parameters()[name].grad();
      if (!want.defined()) continue;  // no token chose it
      ASSERT_TRUE(grad.defined()) << name;
      EXPECT_LT(RelErr(grad, want), 1e-5) << "rank " << r << " " << name;
      ++compared;
    }
  }
  EXPECT_GT(compared, 0);
}

TEST(ExpertParallel, TwoRanksGiveTheOneProcessOutputsAndGradients) {
  ExpectExpertParallelEqualsOneProcess(2, {23, 17});
}

TEST(ExpertParallel, ThreeRanksWithOneTokenOnOneRank) {
  // Rank 2 sends one token's two slots: most experts get nothing from it, some ranks receive nothing from it.
  ExpectExpertParallelEqualsOneProcess(3, {19, 11, 1});
}

TEST(ExpertParallel, ARankWithoutTokensStillTakesPartInBothAllToAlls) {
  ExpectExpertParallelEqualsOneProcess(2, {13, 0});
}

TEST(ExpertParallel, HoldsContiguousExpertsByGlobalName) {
  const ExpertParallel ep{.size = 3, .rank = 1, .comm = nullptr};
  EXPECT_EQ(ep.First(6), 2);
  EXPECT_TRUE(ep.Holds(3, 6));
  EXPECT_FALSE(ep.Holds(4, 6));
  EXPECT_EQ(RoutedExpertOf("model.layers.3.mlp.experts.15.up_proj.lora_A.weight"), 15);
  EXPECT_EQ(RoutedExpertOf("model.layers.3.mlp.shared_experts.up_proj.weight"), std::nullopt);
  EXPECT_EQ(RoutedExpertOf("model.layers.3.mlp.gate.weight"), std::nullopt);
}

}  // namespace
}  // namespace anneal::model
