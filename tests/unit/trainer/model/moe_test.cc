// The mixture-of-experts layer: sorted dispatch against the dense reference, routing, the load-balancing loss.
#include "trainer/model/moe.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "trainer/model/config.h"
#include "trainer/model/decoder.h"

namespace anneal::model {
namespace {

double RelErr(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item<double>();
}

SparseMoe MakeMoe(bool norm_topk, int64_t shared = 0) {
  torch::manual_seed(3);
  MoeLayerSpec spec{.hidden = 16,
                    .num_experts = 6,
                    .top_k = 2,
                    .expert_intermediate = 8,
                    .norm_topk_prob = norm_topk,
                    .shared_intermediate = shared};
  SparseMoe moe(spec, LinearFactory(), torch::TensorOptions().dtype(torch::kFloat32));
  torch::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.normal_(0.0, 0.3);
  return moe;
}

// Values and gradients of the sorted dispatch equal every-expert-on-every-token masked by the routing weights.
void ExpectDispatchEqualsDense(bool norm_topk) {
  SparseMoe moe = MakeMoe(norm_topk);
  torch::Tensor x = torch::randn({37, 16}).requires_grad_(true);
  Routing r = moe->Route(x);
  torch::Tensor grad_out = torch::randn({37, 16});

  torch::Tensor sorted = moe->Dispatch(x, r);
  auto sorted_grads = torch::autograd::grad({sorted}, {x, moe->gate->weight, moe->Expert(4)->down_proj->weight},
                                            {grad_out}, /*retain_graph=*/true);
  torch::Tensor dense = moe->DenseReference(x, r);
  auto dense_grads = torch::autograd::grad({dense}, {x, moe->gate->weight, moe->Expert(4)->down_proj->weight},
                                           {grad_out}, /*retain_graph=*/true);
  EXPECT_LT(RelErr(sorted, dense), 1e-5);
  for (size_t i = 0; i < sorted_grads.size(); ++i) EXPECT_LT(RelErr(sorted_grads[i], dense_grads[i]), 1e-5) << i;
  EXPECT_GT(dense.abs().max().item<double>(), 0.0);  // the comparison compares something
}

TEST(SparseMoe, SortedDispatchEqualsDenseReference) {
  ExpectDispatchEqualsDense(false);
}
TEST(SparseMoe, SortedDispatchEqualsDenseReferenceWithNormalizedTopK) {
  ExpectDispatchEqualsDense(true);
}

TEST(SparseMoe, RoutingPicksTheLargestProbabilitiesAndNormalizes) {
  SparseMoe moe = MakeMoe(true);
  torch::Tensor x = torch::randn({9, 16});
  Routing r = moe->Route(x);
  ASSERT_EQ(r.experts.sizes(), (std::vector<int64_t>{9, 2}));
  EXPECT_LT((r.weights.sum(-1) - 1).abs().max().item<double>(), 1e-6);
  torch::Tensor probs = torch::softmax(r.logits, -1);
  torch::Tensor best = std::get<1>(probs.max(-1));
  EXPECT_TRUE(r.experts.select(1, 0).equal(best));
  SparseMoe plain = MakeMoe(false);
  Routing rp = plain->Route(x);
  EXPECT_LT((rp.weights - probs.gather(1, rp.experts)).abs().max().item<double>(), 1e-6);
}

TEST(SparseMoe, SharedExpertIsAddedToEveryToken) {
  SparseMoe moe = MakeMoe(false, /*shared=*/12);
  ASSERT_TRUE(moe->shared_expert);
  torch::Tensor x = torch::randn({2, 5, 16});
  torch::Tensor flat = x.reshape({10, 16});
  torch::Tensor expected = moe->DenseReference(flat, moe->Route(flat)) + moe->shared_expert->forward(flat);
  EXPECT_LT(RelErr(moe->forward(x).reshape({10, 16}), expected), 1e-5);
}

TEST(SparseMoe, NoTokensGiveAnEmptyOutput) {
  SparseMoe moe = MakeMoe(true);
  torch::Tensor y = moe->forward(torch::zeros({1, 0, 16}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 0, 16}));
}

TEST(SparseMoe, CollectsRouterLogitsOnlyWhileTraining) {
  SparseMoe moe = MakeMoe(false);
  std::vector<torch::Tensor> logits;
  moe->CollectRouterLogits(&logits);
  moe->eval();
  moe->forward(torch::randn({1, 3, 16}));
  EXPECT_TRUE(logits.empty());
  moe->train();
  moe->forward(torch::randn({1, 3, 16}));
  ASSERT_EQ(logits.size(), 1u);
  EXPECT_EQ(logits[0].sizes(), (std::vector<int64_t>{3, 6}));
}

TEST(LoadBalancingLoss, KnownValues) {
  // Two experts, top-1. Both tokens prefer expert 0: f = (1, 0), P_0 = sigmoid(1): loss = 2 * sigmoid(1).
  const double s = 1.0 / (1.0 + std::exp(-1.0));
  torch::Tensor same = torch::tensor({{1.0f, 0.0f}, {1.0f, 0.0f}});
  EXPECT_NEAR(LoadBalancingLoss({same}, 2, 1, {}).item<double>(), 2 * s, 1e-6);
  // Balanced: f = P = (1/2, 1/2): loss = 1, the minimum.
  torch::Tensor balanced = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});
  EXPECT_NEAR(LoadBalancingLoss({balanced}, 2, 1, {}).item<double>(), 1.0, 1e-6);
  // Averaged over layers as one pool of rows: (2s*2 + 1*2 ... ) -> f = (3/4, 1/4), P_0 = (2s + s + (1 - s)) / 4.
  const double p0 = (3 * s + (1 - s)) / 4;
  EXPECT_NEAR(LoadBalancingLoss({same, balanced}, 2, 1, {}).item<double>(), 2 * (0.75 * p0 + 0.25 * (1 - p0)), 1e-6);
  // A mask leaves the padded second token of `balanced` out: only token 0 (expert 0, P_0 = s) counts.
  torch::Tensor mask = torch::tensor({{1, 0}});
  EXPECT_NEAR(LoadBalancingLoss({balanced}, 2, 1, mask).item<double>(), 2 * s, 1e-6);
  EXPECT_EQ(LoadBalancingLoss({}, 2, 1, {}).item<double>(), 0.0);
}

TEST(LoadBalancingLoss, GradientReachesTheRouterLogits) {
  torch::Tensor logits = torch::randn({8, 4}).requires_grad_(true);
  LoadBalancingLoss({logits}, 4, 2, {}).backward();
  ASSERT_TRUE(logits.grad().defined());
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0.0);
}

SparseMoe MakeDeepseekMoe(RouterKind router, bool group_limited) {
  torch::manual_seed(5);
  MoeLayerSpec spec{.hidden = 16,
                    .num_experts = 8,
                    .top_k = 3,
                    .expert_intermediate = 8,
                    .norm_topk_prob = router == RouterKind::kDeepseekSigmoid,
                    .shared_intermediate = 16,
                    .router = router,
                    .routed_scaling_factor = 2.5,
                    .group_limited = group_limited,
                    .n_group = 4,
                    .topk_group = 2,
                    .shared_name = "shared_experts"};
  SparseMoe moe(spec, LinearFactory(), torch::TensorOptions().dtype(torch::kFloat32));
  torch::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.normal_(0.0, 0.3);
  if (moe->e_score_correction_bias.defined()) moe->e_score_correction_bias.normal_(0.0, 0.3);
  return moe;
}

// Which of the 4 groups (of 2 experts) each token's experts fall in, as a [N, 4] bool.
torch::Tensor GroupsUsed(const torch::Tensor& experts) {
  return torch::zeros({experts.size(0), 4}, torch::kInt64).scatter(1, experts.div(2, "floor"), 1).to(torch::kBool);
}

TEST(SparseMoe, DeepseekV2GroupLimitedRoutingStaysInTheBestGroups) {
  SparseMoe moe = MakeDeepseekMoe(RouterKind::kDeepseekSoftmax, /*group_limited=*/true);
  EXPECT_FALSE(moe->e_score_correction_bias.defined());
  ASSERT_TRUE(moe->named_children().contains("shared_experts"));
  torch::Tensor x = torch::randn({50, 16});
  Routing r = moe->Route(x);
  torch::Tensor probs = torch::softmax(r.logits, -1);                      // [N, 8]
  torch::Tensor group_best = std::get<0>(probs.view({50, 4, 2}).max(-1));  // [N, 4]
  torch::Tensor kept =
      torch::zeros({50, 4}, torch::kInt64).scatter(1, std::get<1>(group_best.topk(2, -1)), 1).to(torch::kBool);
  // Every chosen expert lies in one of the two kept groups, and its weight is its probability times 2.5.
  EXPECT_FALSE(GroupsUsed(r.experts).logical_and(kept.logical_not()).any().item<bool>());
  EXPECT_LT((r.weights - probs.gather(1, r.experts) * 2.5).abs().max().item<double>(), 1e-6);
  // Greedy routing takes the global top-3 instead; some token picks differently.
  SparseMoe greedy = MakeDeepseekMoe(RouterKind::kDeepseekSoftmax, /*group_limited=*/false);
  Routing g = greedy->Route(x);
  torch::Tensor global_top = std::get<0>(std::get<1>(probs.topk(3, -1)).sort(-1));
  EXPECT_TRUE(std::get<0>(g.experts.sort(-1)).equal(global_top));
  EXPECT_FALSE(std::get<0>(r.experts.sort(-1)).equal(global_top));
}

TEST(SparseMoe, DeepseekV3SigmoidRoutingUsesTheBiasForChoiceOnly) {
  SparseMoe moe = MakeDeepseekMoe(RouterKind::kDeepseekSigmoid, /*group_limited=*/false);
  ASSERT_TRUE(moe->e_score_correction_bias.defined());
  // The bias is a buffer of the router, named as HF names it, and not a parameter.
  EXPECT_TRUE(moe->gate->named_buffers().contains("e_score_correction_bias"));
  EXPECT_FALSE(moe->gate->named_parameters().contains("e_score_correction_bias"));
  torch::Tensor x = torch::randn({50, 16});
  Routing r = moe->Route(x);
  torch::Tensor scores = r.logits.sigmoid();
  torch::Tensor choice = scores + moe->e_score_correction_bias;                          // [N, 8]
  torch::Tensor group_score = std::get<0>(choice.view({50, 4, 2}).topk(2, -1)).sum(-1);  // [N, 4]
  torch::Tensor kept =
      torch::zeros({50, 4}, torch::kInt64).scatter(1, std::get<1>(group_score.topk(2, -1)), 1).to(torch::kBool);
  EXPECT_FALSE(GroupsUsed(r.experts).logical_and(kept.logical_not()).any().item<bool>());
  // Weights: the unbiased scores of the chosen experts, normalised, times 2.5.
  torch::Tensor w = scores.gather(1, r.experts);
  EXPECT_LT((r.weights - w / w.sum(-1, true) * 2.5).abs().max().item<double>(), 1e-6);
  // The bias changes the choice: without it some token routes elsewhere.
  torch::Tensor bias = moe->e_score_correction_bias.clone();
  {
    torch::NoGradGuard no_grad;
    moe->e_score_correction_bias.zero_();
  }
  EXPECT_FALSE(std::get<0>(moe->Route(x).experts.sort(-1)).equal(std::get<0>(r.experts.sort(-1))));
  {
    torch::NoGradGuard no_grad;
    moe->e_score_correction_bias.copy_(bias);
  }
  // Sorted dispatch equals the dense reference for these routers too.
  EXPECT_LT(RelErr(moe->Dispatch(x, r), moe->DenseReference(x, r)), 1e-5);
}

// Auxiliary-loss-free balancing: an armed forward adds each token's k routed slots, weighted by its mask value.
TEST(SparseMoe, ArmedForwardCountsRoutedSlotsWithoutPadding) {
  SparseMoe moe = MakeDeepseekMoe(RouterKind::kDeepseekSigmoid, /*group_limited=*/false);
  moe->train();
  moe->CountLoad(true);
  torch::Tensor x = torch::randn({2, 5, 16});
  torch::Tensor mask = torch::ones({2, 5}, torch::kInt64);
  mask.index_put_({1, torch::indexing::Slice(3, 5)}, 0);
  moe->ArmLoadCount(mask);
  moe->forward(x);
  moe->DisarmLoadCount();
  torch::Tensor experts = moe->Route(x.reshape({10, 16})).experts;  // [10, 3]
  torch::Tensor want = torch::zeros({8});
  for (int64_t n = 0; n < 10; ++n) {
    if (mask.reshape({-1})[n].item<int64_t>() == 0) continue;
    for (int64_t j = 0; j < 3; ++j) want[experts[n][j].item<int64_t>()] += 1;
  }
  torch::Tensor load = moe->TakeLoad();
  EXPECT_TRUE(load.equal(want)) << load << want;
  EXPECT_EQ(load.sum().item<double>(), 8 * 3);  // 8 tokens, 3 slots each
  // Disarmed: nothing more is counted, and the take left zeros.
  moe->forward(x);
  EXPECT_EQ(moe->TakeLoad().abs().sum().item<double>(), 0.0);
}

// Megatron-core's get_updated_expert_bias on known loads: overloaded experts down, idle up, exactly average none.
TEST(SparseMoe, ExpertBiasMovesTowardsTheMeanLoad) {
  SparseMoe moe = MakeDeepseekMoe(RouterKind::kDeepseekSigmoid, /*group_limited=*/false);
  torch::Tensor before = moe->e_score_correction_bias.clone();
  torch::Tensor load = torch::tensor({10.f, 0.f, 4.f, 4.f, 2.f, 6.f, 3.f, 3.f});  // mean 4
  moe->UpdateExpertBias(load, 0.01);
  torch::Tensor step = torch::tensor({-0.01f, 0.01f, 0.f, 0.f, 0.01f, -0.01f, 0.01f, 0.01f});
  EXPECT_TRUE(moe->e_score_correction_bias.equal(before + step)) << moe->e_score_correction_bias - before;
  // A softmax router has no bias to count for.
  SparseMoe v2 = MakeDeepseekMoe(RouterKind::kDeepseekSoftmax, /*group_limited=*/true);
  EXPECT_THROW(v2->CountLoad(true), c10::Error);
}

// A tiny DeepSeek-V3 (layer 0 dense, layer 1 sparse: 8 experts, top-2) to check what CausalLM counts.
CausalLM TinyDeepseekV3() {
  auto config = ParseModelConfig(nlohmann::json::parse(R"({
    "model_type": "deepseek_v3", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64,
    "first_k_dense_replace": 1, "kv_lora_rank": 8, "q_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4,
    "v_head_dim": 4, "moe_intermediate_size": 8, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 4, "topk_group": 2, "norm_topk_prob": true, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "topk_method": "noaux_tc", "rms_norm_eps": 1e-6, "rope_theta": 10000,
    "tie_word_embeddings": false})"),
                                 "config.json");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  torch::manual_seed(7);
  CausalLM lm(*config, torch::TensorOptions().dtype(torch::kFloat32));
  torch::NoGradGuard no_grad;
  for (auto& p : lm->parameters()) p.normal_(0.0, 0.3);
  return lm;
}

// Counted once per training micro-batch: activation checkpointing's recomputation adds nothing, and neither do
// evaluation or a forward without gradients (a preference reference pass).
TEST(CausalLMExpertLoad, EachTrainingForwardCountsOnce) {
  CausalLM lm = TinyDeepseekV3();
  SparseMoeImpl* moe = lm->model->layers[1]->as<DecoderLayerImpl>()->moe.get();
  ASSERT_NE(moe, nullptr);
  moe->CountLoad(true);
  torch::Tensor ids = torch::randint(0, 32, {2, 6});
  torch::Tensor mask = torch::ones({2, 6}, torch::kInt64);
  mask.index_put_({1, torch::indexing::Slice(4, 6)}, 0);
  auto train_step = [&](bool checkpointing) {
    lm->train();
    lm->SetActivationCheckpointing(checkpointing);
    lm->Forward({.input_ids = ids, .attention_mask = mask}).sum().backward();
    return moe->TakeLoad();
  };
  torch::Tensor plain = train_step(false);
  EXPECT_EQ(plain.sum().item<double>(), 10 * 2);  // 10 tokens (2 padding left out), 2 slots each
  torch::Tensor checkpointed = train_step(true);
  EXPECT_TRUE(checkpointed.equal(plain)) << checkpointed << plain;
  {
    torch::NoGradGuard no_grad;
    lm->Forward({.input_ids = ids, .attention_mask = mask});  // training mode, no gradients
    lm->eval();
    lm->Forward({.input_ids = ids, .attention_mask = mask});
  }
  EXPECT_EQ(moe->TakeLoad().abs().sum().item<double>(), 0.0);
}

// Megatron-core's capacity: ceil(N * k / E * factor) slots per expert; probs keeps the highest weights, and a
// dropped slot contributes nothing (as its weight zeroed).
TEST(SparseMoe, CapacityKeepsTheHighestWeightsAndDropsTheRest) {
  SparseMoe moe = MakeMoe(/*norm_topk=*/false);  // 6 experts, k 2
  torch::Tensor x = torch::randn({4, 16});
  Routing r = moe->Route(x);
  // Hand-made routing: expert 2 gets tokens 0, 1, 2; expert 0 tokens 0 and 3; the others one token or none.
  r.experts = torch::tensor({2, 0, 2, 1, 2, 3, 5, 0}, torch::kInt64).view({4, 2});
  r.weights = torch::tensor({0.5f, 0.3f, 0.9f, 0.3f, 0.7f, 0.3f, 0.4f, 0.3f}).view({4, 2});
  moe->SetCapacity({.factor = 1.2, .policy = TokenDropPolicy::kProbs});  // ceil(8 / 6 * 1.2) = 2 slots per expert
  torch::Tensor kept = moe->CapacityMask(r);
  torch::Tensor want = torch::ones({4, 2}, torch::kBool);
  want[0][0] = false;  // expert 2's lowest weight
  EXPECT_TRUE(kept.equal(want)) << kept;
  moe->SetCapacity({.factor = 1.2, .policy = TokenDropPolicy::kPosition});
  EXPECT_EQ(moe->CapacityMask(r).sum().item<int64_t>(), 7);  // which of expert 2's tokens: torch.topk's choice
  r.kept = kept;
  Routing zeroed = r;
  zeroed.kept = torch::Tensor();
  zeroed.weights = r.weights * kept;
  EXPECT_LT(RelErr(moe->Dispatch(x, r), moe->Dispatch(x, zeroed)), 1e-6);
}

}  // namespace
}  // namespace anneal::model
