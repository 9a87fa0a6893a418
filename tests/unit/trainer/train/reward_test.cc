// Stage rm's pure pieces (trainer/train/reward.h) against plain scalar references: the score gather at each row's
// last non-pad token, the pairwise loss, the value head's forward, initialisation and files. The trained whole is
// checked against LLaMA-Factory's PairwiseTrainer code by tests/parity/train/rm_parity.py.
#include "trainer/train/reward.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "trainer/model/safetensors.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;

TEST(PairScores, TakesEachRowsValueAtItsLastNonPadTokenChosenRowsFirst) {
  // 2 pairs: rows 0, 1 chosen, rows 2, 3 rejected; right padding of different lengths.
  const torch::Tensor values = torch::arange(16, torch::kFloat32).view({4, 4});
  const torch::Tensor mask = torch::tensor({{1, 1, 1, 0}, {1, 1, 1, 1}, {1, 0, 0, 0}, {1, 1, 0, 0}}, torch::kLong);
  auto [chosen, rejected] = PairScores(values, mask);
  ASSERT_EQ(chosen.sizes(), torch::IntArrayRef({2}));
  EXPECT_EQ(chosen[0].item<float>(), 2.0f);     // row 0, position 2
  EXPECT_EQ(chosen[1].item<float>(), 7.0f);     // row 1, position 3
  EXPECT_EQ(rejected[0].item<float>(), 8.0f);   // row 2, position 0
  EXPECT_EQ(rejected[1].item<float>(), 13.0f);  // row 3, position 1
}

TEST(PairScores, WithoutAMaskTakesTheLastPosition) {
  const torch::Tensor values = torch::arange(6, torch::kFloat32).view({2, 3});
  auto [chosen, rejected] = PairScores(values, torch::Tensor());
  EXPECT_EQ(chosen[0].item<float>(), 2.0f);
  EXPECT_EQ(rejected[0].item<float>(), 5.0f);
}

TEST(PairScores, GradientReachesOnlyTheScoredPositions) {
  torch::Tensor values = torch::zeros({2, 3}, torch::kFloat32).requires_grad_(true);
  const torch::Tensor mask = torch::tensor({{1, 1, 0}, {1, 0, 0}}, torch::kLong);
  auto [chosen, rejected] = PairScores(values, mask);
  (chosen.sum() - rejected.sum()).backward();
  const torch::Tensor want = torch::tensor({{0.0f, 1.0f, 0.0f}, {-1.0f, 0.0f, 0.0f}});
  EXPECT_TRUE(torch::equal(values.grad(), want)) << values.grad();
}

TEST(PairwiseRankingLoss, IsTheMeanNegativeLogSigmoidOfTheMargin) {
  const torch::Tensor chosen = torch::tensor({1.5f, -0.25f, 0.0f});
  const torch::Tensor rejected = torch::tensor({0.5f, 0.75f, 0.0f});
  double want = 0;
  for (double d : {1.0, -1.0, 0.0}) want += std::log1p(std::exp(-d));
  EXPECT_NEAR(PairwiseRankingLoss(chosen, rejected).item<double>(), want / 3, 1e-6);
}

TEST(ValueHead, IsALinearMapOfTheHiddenStatesInFloat32) {
  ValueHead head = ValueHead::Initial(3, /*seed=*/7, /*dropout=*/0.5, torch::kCPU);
  const torch::Tensor hidden = torch::randn({2, 4, 3}, torch::kFloat64);
  const torch::Tensor values = head.Values(hidden, /*training=*/false);  // eval: no dropout
  ASSERT_EQ(values.sizes(), torch::IntArrayRef({2, 4}));
  EXPECT_EQ(values.scalar_type(), torch::kFloat32);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 4; ++t) {
      double want = head.bias()[0].item<double>();
      for (int64_t h = 0; h < 3; ++h) want += head.weight()[0][h].item<double>() * hidden[b][t][h].item<double>();
      EXPECT_NEAR(values[b][t].item<double>(), want, 1e-5);
    }
  }
  // Training: dropout zeroes about half of the inputs (a different result), scaling the rest by 2.
  torch::manual_seed(0);
  EXPECT_FALSE(torch::allclose(head.Values(hidden, /*training=*/true), values));
}

TEST(ValueHead, InitialisationIsSeededWithinTheLinearDefaultBound) {
  const ValueHead a = ValueHead::Initial(64, 3, 0.1, torch::kCPU), b = ValueHead::Initial(64, 3, 0.1, torch::kCPU);
  const ValueHead c = ValueHead::Initial(64, 4, 0.1, torch::kCPU);
  EXPECT_TRUE(torch::equal(a.weight(), b.weight()));
  EXPECT_TRUE(torch::equal(a.bias(), b.bias()));
  EXPECT_FALSE(torch::equal(a.weight(), c.weight()));
  EXPECT_LE(a.weight().abs().max().item<double>(), 1.0 / 8);
  EXPECT_LE(a.bias().abs().max().item<double>(), 1.0 / 8);
  // The same draws as torch.Generator().manual_seed(3): weight then bias, uniform in +-1/sqrt(64).
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor w = torch::empty({1, 64}).uniform_(-0.125, 0.125, gen);
  const torch::Tensor bias = torch::empty({1}).uniform_(-0.125, 0.125, gen);
  EXPECT_TRUE(torch::equal(a.weight(), w));
  EXPECT_TRUE(torch::equal(a.bias(), bias));
  auto params = a.Params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].name, "v_head.summary.weight");
  EXPECT_TRUE(params[0].decay);
  EXPECT_EQ(params[1].name, "v_head.summary.bias");
  EXPECT_FALSE(params[1].decay);  // HF: no weight decay for biases
}

class ValueHeadFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("anneal-reward-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteConfig(const std::string& json) { std::ofstream(dir_ / "config.json") << json; }
  fs::path dir_;
};

TEST_F(ValueHeadFiles, DropoutComesFromTheModelConfigWithTrlsDefault) {
  WriteConfig(R"({"hidden_size": 4})");
  EXPECT_EQ(*SummaryDropout(dir_.string()), 0.1);
  WriteConfig(R"({"hidden_size": 4, "summary_dropout_prob": 0.0})");
  EXPECT_EQ(*SummaryDropout(dir_.string()), 0.0);
  WriteConfig(R"({"hidden_size": 4, "summary_dropout_prob": 1.5})");
  auto bad = SummaryDropout(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("summary_dropout_prob 1.5 is not a probability"), std::string::npos);
}

TEST_F(ValueHeadFiles, WrittenHeadIsReadBackAndAWrongShapeIsRefused) {
  WriteConfig(R"({"hidden_size": 4})");
  const ValueHead written = ValueHead::Initial(4, 11, 0.1, torch::kCPU);
  ASSERT_TRUE(WriteValueHead(written.Named(), dir_.string()).ok());
  auto read = ValueHead::ForModel(dir_.string(), "", 4, /*seed=*/99, torch::kCPU);
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_TRUE(torch::equal(read->weight(), written.weight()));
  EXPECT_TRUE(torch::equal(read->bias(), written.bias()));
  auto wrong = ValueHead::ForModel(dir_.string(), "", 8, 99, torch::kCPU);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("'v_head.summary.weight' has shape [1, 4]"), std::string::npos)
      << wrong.status().message();
  // Nothing to write without v_head tensors.
  EXPECT_FALSE(WriteValueHead({{"lm_head.weight", torch::zeros({2, 2})}}, dir_.string()).ok());
}

TEST_F(ValueHeadFiles, APickledHeadIsRefusedByName) {
  WriteConfig(R"({"hidden_size": 4})");
  std::ofstream(dir_ / "value_head.bin") << "pickle";
  auto bad = ValueHead::ForModel(dir_.string(), "", 4, 1, torch::kCPU);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("value_head.bin: a pickled value head is not read"), std::string::npos);
}

}  // namespace
}  // namespace anneal::train
