// MFU (trainer/report/mfu.h): parameter counts and FLOPs per token checked against hand computations for
// Llama-2-7B, and the peak table's lookups by CUDA device name.
#include "trainer/report/mfu.h"

#include <gtest/gtest.h>

namespace anneal::report {
namespace {

// meta-llama/Llama-2-7b-hf's config.json.
constexpr DecoderShape kLlama2_7b{
    .vocab = 32000, .hidden = 4096, .intermediate = 11008, .layers = 32, .heads = 32, .kv_heads = 32, .head_dim = 128};

TEST(ParameterCount, MatchesLlama2_7bsPublishedCount) {
  // 6,738,415,616 is what HF's model.num_parameters() reports for Llama-2-7b.
  EXPECT_EQ(ParameterCount(kLlama2_7b), 6738415616);
  // Less the input embedding (32000 x 4096), a lookup without a matmul.
  EXPECT_EQ(MatmulParameterCount(kLlama2_7b), 6738415616 - 32000 * 4096);
}

TEST(ParameterCount, GroupedQueryAttentionTiedEmbeddingsAndBiases) {
  // Qwen2-0.5B's shape: 24 layers, hidden 896, 14 heads of 64, 2 KV heads, MLP 4864, vocab 151936, tied, q/k/v bias.
  const DecoderShape qwen{.vocab = 151936,
                          .hidden = 896,
                          .intermediate = 4864,
                          .layers = 24,
                          .heads = 14,
                          .kv_heads = 2,
                          .head_dim = 64,
                          .tied_embeddings = true,
                          .qkv_bias = true};
  // Per layer: q 896*896+896, k and v 896*128+128 each, o 896*896, MLP 3*896*4864, two norms 2*896.
  const int64_t layer = (896 * 896 + 896) + 2 * (896 * 128 + 128) + 896 * 896 + 3 * 896 * 4864 + 2 * 896;
  EXPECT_EQ(ParameterCount(qwen), 24 * layer + 896 + 151936 * 896);
  EXPECT_EQ(ParameterCount(qwen), 494032768);                   // HF's count for Qwen2-0.5B
  EXPECT_EQ(MatmulParameterCount(qwen), ParameterCount(qwen));  // tied: the table is the LM head
}

TEST(TrainingFlopsPerToken, FullFineTuningIsPalms6NPlus12LHQT) {
  const int64_t n = 6607343616;
  // 6N + 12 * 32 layers * 32 heads * 128 * 4096 tokens = 39,644,061,696 + 6,442,450,944.
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(kLlama2_7b, n, 4096), 46086512640.0);
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(kLlama2_7b, ParameterCount(kLlama2_7b), 4096), 46086512640.0);  // capped
}

TEST(TrainingFlopsPerToken, FrozenWeightsCostForwardAndActivationGradientsOnly) {
  // LoRA rank 8 on q and v of every layer: 32 * 2 * (4096*8 + 8*4096) = 4,194,304 trained parameters.
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(kLlama2_7b, 4194304, 4096), 4.0 * 6607343616 + 2.0 * 4194304 + 6442450944);
  EXPECT_DOUBLE_EQ(TrainingFlopsPerToken(kLlama2_7b, 0, 1), 4.0 * 6607343616 + 12.0 * 32 * 32 * 128);
}

TEST(Mfu, IsModelFlopsOverTheGpusPeak) {
  // 8 H100s at 3000 tokens/s each for full fine-tuning of Llama-2-7B at 4096 tokens: about 14%.
  auto mfu = Mfu(46086512640.0, 8 * 3000.0, 989.4e12, 8);
  ASSERT_TRUE(mfu.has_value());
  EXPECT_NEAR(*mfu, 46086512640.0 * 3000 / 989.4e12, 1e-12);
  EXPECT_NEAR(*mfu, 0.13974, 1e-5);
  EXPECT_FALSE(Mfu(1e9, 0, 989.4e12, 1).has_value());  // nothing measured yet
  EXPECT_FALSE(Mfu(1e9, 100, 0, 1).has_value());
  EXPECT_FALSE(Mfu(1e9, 100, 1e12, 0).has_value());
}

TEST(PeakBf16Flops, KnownDevicesByTheirCudaNames) {
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 80GB HBM3"), 989.4e12);  // SXM
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 PCIe"), 756e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA H100 NVL"), 835e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA H200"), 989.4e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA GH200 480GB"), 989.4e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA A100 80GB PCIe"), 312e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA L40S"), 362e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA L40"), 181e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA L4"), 121e12);
  EXPECT_EQ(PeakBf16Flops("NVIDIA B200"), 2250e12);
}

TEST(PeakBf16Flops, UnknownDevicesGetNoPeak) {
  EXPECT_FALSE(PeakBf16Flops("Tesla V100-SXM2-16GB").has_value());  // no bf16 tensor cores
  EXPECT_FALSE(PeakBf16Flops("NVIDIA GeForce RTX 3090").has_value());
  EXPECT_FALSE(PeakBf16Flops("cpu").has_value());
  EXPECT_FALSE(PeakBf16Flops("").has_value());
  EXPECT_FALSE(PeakBf16Flops("NVIDIA A1000").has_value());  // A100 only as a whole word
}

}  // namespace
}  // namespace anneal::report
