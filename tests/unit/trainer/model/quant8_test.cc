// 8-bit QLoRA weights (trainer/model/quant8.h): the reference and fast matmuls agree, the LLM.int8 arithmetic by
// hand on a small case, tensor-parallel pieces, and a Linear with an 8-bit base. bitsandbytes itself is the peer
// in tests/parity/train/qlora8_parity.py.
#include "trainer/model/quant8.h"

#include <gtest/gtest.h>
#include <torch/nn/functional/linear.h>
#include <torch/torch.h>

#include "trainer/model/linear.h"

namespace anneal::model {
namespace {

double MaxAbs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Inputs with a few outlier columns (|x| >= 6), as LLM.int8 meets them.
torch::Tensor InputsWithOutliers(int64_t n, int64_t in) {
  torch::Tensor x = torch::randn({n, in});
  x.index_put_({0, 3}, 9.0);
  x.index_put_({n - 1, in - 5}, -7.5);
  return x;
}

TEST(Int8Quantization, RowwiseAbsmaxOfTheFp16WeightRoundedToInt8) {
  const torch::Tensor w = torch::tensor({{0.5f, -1.0f, 0.25f}, {2.0f, 0.0f, -0.7f}});
  auto [cb, scb] = QuantizeInt8Rowwise(w);
  EXPECT_EQ(cb.scalar_type(), torch::kInt8);
  EXPECT_EQ(scb.scalar_type(), torch::kFloat32);
  // Row 0: absmax 1 -> 0.5 * 127 = 63.5 rounds to 64 (half to even), 0.25 * 127 = 31.75 -> 32.
  EXPECT_TRUE(cb.equal(torch::tensor({{64, -127, 32}, {127, 0, -44}}, torch::kInt8))) << cb;
  EXPECT_TRUE(scb.equal(torch::tensor({1.0f, 2.0f})));
}

TEST(Int8Linear, FastEqualsReferenceForwardAndBackwardInBothMatmuls) {
  torch::manual_seed(3);
  auto w = Int8LinearWeight::Make(torch::randn({96, 80}) * 0.05, 0, 1, 0);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const torch::Tensor bias = torch::randn({96});
  for (Int8Matmul how : {Int8Matmul::kDequantized, Int8Matmul::kLlmInt8}) {
    torch::Tensor x = InputsWithOutliers(12, 80).view({3, 4, 80});
    std::vector<torch::Tensor> outs, grads;
    for (Int8Impl impl : {Int8Impl::kReference, Int8Impl::kFast}) {
      torch::Tensor xi = x.clone().requires_grad_(true);
      torch::Tensor y = Int8Linear(xi, *w, bias, {.how = how, .impl = impl});
      (y * torch::arange(96)).sum().backward();
      outs.push_back(y.detach());
      grads.push_back(xi.grad());
    }
    EXPECT_EQ(outs[0].sizes(), (std::vector<int64_t>{3, 4, 96}));
    EXPECT_LT(MaxAbs(outs[0], outs[1]), 1e-5);
    EXPECT_LT(MaxAbs(grads[0], grads[1]), 1e-4);
    // Both give the input the gradient through the dequantized weight.
    const torch::Tensor dx =
        torch::arange(96).to(torch::kFloat32).expand({3, 4, 96}).matmul(w->Dequantize(torch::kFloat32));
    EXPECT_LT(MaxAbs(grads[1], dx), 1e-4);
  }
}

TEST(Int8Linear, TilesRowsOfALargeWeightAsTheWholeOne) {
  torch::manual_seed(4);
  // 2^20 / 256 = 4096 rows a tile: 5000 rows take two tiles.
  auto w = Int8LinearWeight::Make(torch::randn({5000, 256}) * 0.05, 0, 1, 0);
  ASSERT_TRUE(w.ok());
  torch::Tensor x = torch::randn({3, 256}, torch::requires_grad());
  torch::Tensor xr = x.detach().clone().requires_grad_(true);
  torch::Tensor y = Int8Linear(x, *w, {}, {.how = Int8Matmul::kDequantized, .impl = Int8Impl::kFast});
  torch::Tensor yr = Int8Linear(xr, *w, {}, {.how = Int8Matmul::kDequantized, .impl = Int8Impl::kReference});
  EXPECT_LT(MaxAbs(y, yr), 1e-5);
  y.sum().backward();
  yr.sum().backward();
  EXPECT_LT(MaxAbs(x.grad(), xr.grad()), 1e-4);
}

TEST(Int8Linear, LlmInt8KeepsOutlierColumnsInFullPrecisionAndQuantizesTheRest) {
  // By hand: W = I (2x2 scaled), x = [[1, 8], [0.5, 0.25]] with threshold 6: column 1 is an outlier column.
  auto w = Int8LinearWeight::Make(torch::tensor({{1.0f, 0.0f}, {0.0f, 2.0f}}), 0, 1, 0);
  ASSERT_TRUE(w.ok());
  const torch::Tensor x = torch::tensor({{1.0f, 8.0f}, {0.5f, 0.25f}});
  const torch::Tensor y = Int8Linear(x, *w, {}, {.how = Int8Matmul::kLlmInt8});
  // Column 1 goes through x[:, 1] * W'[:, 1] exactly; column 0 through int8: row 0 absmax 1 (8 excluded),
  // row 1 absmax 0.5 (0.25 stays in the statistics) -> 127 each -> 127 * 127 * 1 * 1 * 6.200124e-05 ~ 1.
  EXPECT_NEAR(y[0][1].item<float>(), 16.0f, 1e-5);
  EXPECT_NEAR(y[1][1].item<float>(), 0.5f, 1e-5);
  EXPECT_NEAR(y[0][0].item<float>(), 1.0f, 1e-4);
  EXPECT_NEAR(y[1][0].item<float>(), 0.5f, 1e-4);
  // Without a threshold 8 dominates row 0: 1 -> round(127 / 8) = 16 -> 16 / 127 * 8 = 1.0079.
  const torch::Tensor plain = Int8Linear(x, *w, {}, {.how = Int8Matmul::kLlmInt8, .threshold = 0.0});
  EXPECT_NEAR(plain[0][0].item<float>(), 16.0f * 8.0f / 127.0f, 1e-4);
}

TEST(Int8Linear, ColumnPiecesWithTheRowMaximumReducedEqualTheWhole) {
  torch::manual_seed(6);
  const torch::Tensor full = torch::randn({32, 64}) * 0.05;
  auto whole = Int8LinearWeight::Make(full, 0, 1, 0);
  ASSERT_TRUE(whole.ok());
  const torch::Tensor x = InputsWithOutliers(5, 64);
  const torch::Tensor want = Int8Linear(x, *whole, {}, {.how = Int8Matmul::kLlmInt8});
  // Two column pieces: each keeps the rows' scales of the whole; the row maxima are taken over both pieces.
  const torch::Tensor row_max = std::get<0>(x.to(torch::kFloat16).abs().masked_fill(x.abs().ge(6.0), 0).max(1));
  torch::Tensor sum = torch::zeros_like(want);
  for (int64_t i = 0; i < 2; ++i) {
    auto piece = Int8LinearWeight::Make(full, 1, 2, i);
    ASSERT_TRUE(piece.ok());
    EXPECT_TRUE(piece->SCB.equal(whole->SCB));
    EXPECT_TRUE(piece->CB.equal(whole->CB.chunk(2, 1)[i]));
    const auto reduce = [&](at::Tensor& t) { t.copy_(row_max.to(torch::kFloat32)); };
    sum += Int8Linear(x.chunk(2, 1)[i], *piece, {}, {.how = Int8Matmul::kLlmInt8, .reduce_row_max = reduce});
  }
  EXPECT_LT(MaxAbs(sum, want), 1e-5);
  auto rows = Int8LinearWeight::Make(full, 0, 4, 1);
  ASSERT_TRUE(rows.ok());
  EXPECT_TRUE(rows->CB.equal(whole->CB.narrow(0, 8, 8)));
  EXPECT_TRUE(rows->SCB.equal(whole->SCB.narrow(0, 8, 8)));
  EXPECT_FALSE(Int8LinearWeight::Make(full, 1, 3, 0).ok()) << "64 columns do not cut into 3 pieces";
}

TEST(QuantizedLinear, EightBitBaseFollowsBitsandbytesChoiceOfMatmulAndTrainsLora) {
  torch::manual_seed(5);
  Linear lin = LinearFactory().Make({.in = 64, .out = 48, .bias = true, .role = "q_proj"}, torch::kFloat32);
  const torch::Tensor full = torch::randn({48, 64}) * 0.1;
  ASSERT_TRUE(lin->QuantizeBase(full, {.bits = 8}).ok());
  EXPECT_FALSE(lin->weight.defined());
  std::vector<std::string> buffers;
  for (const auto& b : lin->named_buffers()) buffers.push_back(b.key());
  EXPECT_EQ(buffers, (std::vector<std::string>{"weight_int8", "weight_int8_scb"}));
  EXPECT_EQ(lin->quantized_bytes(), 48 * 64 + 48 * 4);
  EXPECT_FALSE(lin->QuantizeBase(full, {.bits = 8}).ok()) << "quantizing twice is refused";
  lin->EnableLora({.rank = 4, .alpha = 8}, 7);
  {
    torch::NoGradGuard no_grad;
    lin->lora_B->weight.normal_(0, 0.1);
  }
  const torch::Tensor x = InputsWithOutliers(6, 64);
  const torch::Tensor lora = torch::matmul(torch::matmul(x, lin->lora_A->weight.t()), lin->lora_B->weight.t()) * 2.0;
  const Int8LinearWeight& w = *lin->quantized8();
  lin->train();  // CPU training: bnb's MatMul8bitFp
  const torch::Tensor deq = Int8Linear(x, w, lin->bias, {.how = Int8Matmul::kDequantized}) + lora;
  EXPECT_LT(MaxAbs(lin->forward(x).detach(), deq.detach()), 1e-6);
  lin->eval();  // eval: MatMul8bitLt
  const torch::Tensor int8 = Int8Linear(x, w, lin->bias, {.how = Int8Matmul::kLlmInt8}) + lora;
  EXPECT_LT(MaxAbs(lin->forward(x).detach(), int8.detach()), 1e-6);
  EXPECT_GT(MaxAbs(deq, int8), 1e-4) << "the two matmuls must differ here, or this test shows nothing";
  lin->train();
  lin->forward(x).sum().backward();
  EXPECT_TRUE(lin->lora_B->weight.grad().defined());
}

}  // namespace
}  // namespace anneal::model
