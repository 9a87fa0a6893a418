// Decoder behaviour that needs no peer: forward + backward on CPU, save/load bit-exactness, LoRA merge,
// masks, the CUDA kernel against its reference (on CUDA machines).
#include "trainer/model/decoder.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "trainer/kernels/rmsnorm.h"
#include "trainer/model/generate.h"
#include "trainer/model/presets.h"

namespace anneal::model {
namespace {

namespace fs = std::filesystem;

CausalLM TinyModel(const std::string& arch = "llama", uint64_t seed = 1) {
  auto cfg = PresetConfig(arch, "tiny", 128);
  EXPECT_TRUE(cfg.ok());
  CausalLM lm(*cfg, torch::TensorOptions().dtype(torch::kFloat32));
  InitWeights(lm, seed);
  return lm;
}

TEST(CausalLM, ForwardAndBackwardOnCpu) {
  CausalLM lm = TinyModel();
  torch::Tensor ids = torch::randint(0, 128, {2, 16}, torch::kInt64);
  torch::Tensor hidden = lm->Forward({.input_ids = ids});
  EXPECT_EQ(hidden.sizes(), (std::vector<int64_t>{2, 16, 64}));
  auto [loss_sum, count] = lm->LossSum(hidden, ShiftLabels(ids));
  EXPECT_EQ(count, 2 * 15);
  torch::Tensor loss = loss_sum / count;
  // A random model predicts roughly uniformly: loss near ln(128).
  EXPECT_NEAR(loss.item<double>(), std::log(128.0), 0.5);
  loss.backward();
  for (auto& p : lm->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  EXPECT_GT(lm->model->embed_tokens->weight.grad().abs().sum().item<double>(), 0.0);
}

TEST(CausalLM, SaveThenLoadIsBitExact) {
  const fs::path dir = fs::temp_directory_path() / ("anneal-save-" + std::to_string(::getpid()));
  for (const char* arch : {"llama", "qwen2", "mistral"}) {
    CausalLM lm = TinyModel(arch, 3);
    ASSERT_TRUE(SaveCausalLM(lm, dir.string(), /*max_shard_bytes=*/64 * 1024).ok());
    auto back = LoadCausalLM(dir.string());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    auto a = lm->named_parameters(), b = (*back)->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (auto& item : a) EXPECT_TRUE(torch::equal(item.value(), b[item.key()])) << arch << " " << item.key();
    fs::remove_all(dir);
  }
}

TEST(CausalLM, WrongShapeInTheCheckpointIsNamed) {
  const fs::path dir = fs::temp_directory_path() / ("anneal-shape-" + std::to_string(::getpid()));
  CausalLM lm = TinyModel();
  ASSERT_TRUE(SaveCausalLM(lm, dir.string()).ok());
  // Rewrite config.json claiming a larger hidden size than the weights have.
  auto cfg = lm->config();
  cfg.intermediate_size = 200;
  CausalLM other(cfg, torch::TensorOptions());
  ASSERT_TRUE(SaveCausalLM(lm, dir.string()).ok());
  std::ofstream(dir / "config.json") << ModelConfigToJson(cfg).dump();
  auto back = LoadCausalLM(dir.string());
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("weight 'model.layers.0.mlp.gate_proj.weight' has shape [176, 64] but "
                                         "config.json implies [200, 64]"),
            std::string::npos)
      << back.status().message();
  fs::remove_all(dir);
}

TEST(CausalLM, KvCacheDecodingEqualsFullForward) {
  CausalLM lm = TinyModel("qwen2", 5);
  torch::NoGradGuard no_grad;
  torch::Tensor ids = torch::randint(0, 128, {1, 12}, torch::kInt64);
  torch::Tensor full = lm->Logits(lm->Forward({.input_ids = ids}));
  KvCache cache;
  cache.capacity = 12;
  torch::Tensor first = lm->Logits(lm->Forward({.input_ids = ids.narrow(1, 0, 8), .cache = &cache}));
  std::vector<torch::Tensor> steps = {first};
  for (int t = 8; t < 12; ++t)
    steps.push_back(lm->Logits(lm->Forward({.input_ids = ids.narrow(1, t, 1), .cache = &cache})));
  torch::Tensor inc = torch::cat(steps, 1);
  EXPECT_TRUE(torch::allclose(inc, full, 1e-5, 1e-5));
}

TEST(LinearLora, MergeEqualsUnmergedForwardAndUnmergeRestores) {
  LinearFactory f;
  Linear lin = f.Make({.in = 32, .out = 48, .bias = true, .role = "q_proj"}, torch::TensorOptions());
  torch::nn::init::normal_(lin->weight, 0, 0.02);
  lin->EnableLora({.rank = 4, .alpha = 8}, 11);
  torch::nn::init::normal_(lin->lora_B->weight, 0, 0.1);  // non-zero B so the adapter matters
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({3, 32});
  torch::Tensor before = lin->forward(x);
  torch::Tensor base = torch::nn::functional::linear(x, lin->weight, lin->bias);
  EXPECT_FALSE(torch::allclose(before, base));
  torch::Tensor w0 = lin->weight.clone();
  lin->MergeLora();
  EXPECT_TRUE(torch::allclose(lin->forward(x), before, 1e-5, 1e-6));
  lin->UnmergeLora();
  EXPECT_TRUE(torch::allclose(lin->weight, w0, 1e-6, 1e-7));
  EXPECT_DOUBLE_EQ(lin->lora_scaling(), 2.0);
}

TEST(AttentionMask, PaddingRowsAttendToThemselvesOnly) {
  ForwardInputs in;
  in.attention_mask = torch::tensor({0, 0, 1, 1}, torch::kInt64).view({1, 4});
  auto mask = BuildAttentionMask(in, 1, 4, 0, std::nullopt, torch::kCPU);
  ASSERT_TRUE(mask.has_value());
  torch::Tensor m = mask->view({4, 4}).to(torch::kInt64);
  torch::Tensor expected = torch::tensor({1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1}, torch::kInt64).view({4, 4});
  EXPECT_TRUE(torch::equal(m, expected)) << m;
}

TEST(AttentionMask, NoMaskWhenPlainCausalSuffices) {
  ForwardInputs in;
  in.attention_mask = torch::ones({2, 5}, torch::kInt64);
  EXPECT_FALSE(BuildAttentionMask(in, 2, 5, 0, 8, torch::kCPU).has_value());
  EXPECT_TRUE(BuildAttentionMask(in, 2, 5, 0, 3, torch::kCPU).has_value());  // the window bites
}

TEST(Generate, RejectsTokenIdsOutsideTheVocabulary) {
  CausalLM lm = TinyModel();
  auto out = Generate(lm, {1, 500}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(), "generate: prompt token id 500 is outside the vocabulary [0, 128)");
}

TEST(Generate, MinNewTokensKeepsTheStopTokenAwayUntilThen) {
  CausalLM lm = TinyModel();
  GenerateOptions free_run;
  free_run.max_new_tokens = 6;
  auto greedy = Generate(lm, {1, 2, 3}, free_run);
  ASSERT_TRUE(greedy.ok());
  // Make the first greedy token the stop token: without min_new_tokens generation ends at once.
  GenerateOptions stop = free_run;
  stop.stop_token_ids = {(*greedy)[0]};
  auto ended = Generate(lm, {1, 2, 3}, stop);
  ASSERT_TRUE(ended.ok());
  EXPECT_EQ(ended->size(), 1u);
  stop.min_new_tokens = 4;
  auto longer = Generate(lm, {1, 2, 3}, stop);
  ASSERT_TRUE(longer.ok());
  ASSERT_GE(longer->size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NE((*longer)[i], (*greedy)[0]) << "token " << i;
}

TEST(RmsNormKernel, MatchesTheReferenceOnCuda) {
  if (!kernels::HasCudaKernels() || !torch::cuda::is_available()) {
    GTEST_SKIP() << "no CUDA device here; runs on the GPU machine (scripts/device-build.sh)";
  }
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
    auto opts = torch::TensorOptions().dtype(dtype).device(torch::kCUDA);
    torch::Tensor x = torch::randn({37, 1000}, opts), w = torch::randn({1000}, opts);
    torch::Tensor ref = kernels::RmsNormReference(x, w, 1e-6).to(torch::kFloat32);
    torch::Tensor got = kernels::RmsNorm(x, w, 1e-6).to(torch::kFloat32);
    const double tol = dtype == torch::kFloat32 ? 1e-5 : 2e-2;
    EXPECT_TRUE(torch::allclose(got, ref, tol, tol)) << dtype << " max diff " << (got - ref).abs().max().item<double>();
  }
}

}  // namespace
}  // namespace anneal::model
