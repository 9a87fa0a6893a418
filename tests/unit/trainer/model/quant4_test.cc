// 4-bit weights (QLoRA): the layout on hand-checked values, pieces of a tensor-parallel split dequantizing to the
// whole tensor's values, the fused dequantize-and-matmul against the plain reference (forward and input
// gradient), and a quantized Linear under LoRA. Byte equality with bitsandbytes itself is
// tests/parity/train/qlora_parity.py's quant4 case.
#include "trainer/model/quant4.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/model/linear.h"

namespace anneal::model {
namespace {

double MaxRel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

TEST(Quant4, PacksTheNearestNf4CodeTwoPerByteHighNibbleFirst) {
  // One block of 64: -2 is the absmax (code 0 = -1), 2 * 0.0796 is NF4 code 8, 0 is code 7, 2 is code 15.
  torch::Tensor w = torch::zeros({64});
  w[0] = -2.0f;
  w[1] = 2.0f * 0.07958029955625534f;
  w[3] = 2.0f;
  Quant4Tensor q = Quantize4bit(w, {.type = Quant4Type::kNf4, .double_quant = false});
  ASSERT_EQ(q.packed.numel(), 32);
  EXPECT_EQ(q.packed[0].item<int>(), 0x08);  // elements 0 (code 0) and 1 (code 8)
  EXPECT_EQ(q.packed[1].item<int>(), 0x7F);  // elements 2 (code 7) and 3 (code 15)
  EXPECT_EQ(q.packed[2].item<int>(), 0x77);
  ASSERT_EQ(q.absmax.scalar_type(), torch::kFloat32);
  EXPECT_EQ(q.absmax[0].item<float>(), 2.0f);
  torch::Tensor back = Dequantize4bit(q, torch::kFloat32);
  EXPECT_EQ(back[0].item<float>(), -2.0f);
  EXPECT_EQ(back[1].item<float>(), 2.0f * 0x1.45f5fep-4f);
  EXPECT_EQ(back[3].item<float>(), 2.0f);
}

TEST(Quant4, DoubleQuantizationStoresTheAbsmaxAroundTheirMeanIn8Bit) {
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({40, 64 * 16});  // 640 blocks: three second-level blocks, the last partial
  Quant4Tensor plain = Quantize4bit(w, {.double_quant = false});
  Quant4Tensor dq = Quantize4bit(w, {.double_quant = true});
  EXPECT_TRUE(torch::equal(plain.packed, dq.packed)) << "the 4-bit values do not depend on the absmax storage";
  ASSERT_EQ(dq.absmax.scalar_type(), torch::kUInt8);
  ASSERT_EQ(dq.absmax2.numel(), 3);
  EXPECT_FLOAT_EQ(dq.offset, plain.absmax.mean().item<float>());
  // The 8-bit absmax are within the dynamic map's resolution of the fp32 ones.
  EXPECT_LT(MaxRel(BlockAbsmax(dq), plain.absmax), 2e-2);
  EXPECT_LT(MaxRel(Dequantize4bit(dq, torch::kFloat32), w), 0.2);  // 4 bits: about a tenth of the absmax
}

TEST(Quant4, PartialLastBlockAndOddSizesQuantizeLikeTheirOwnBlock) {
  torch::manual_seed(1);
  torch::Tensor w = torch::randn({3, 33});  // 99 elements: one full block and a partial one of 35
  Quant4Tensor q = Quantize4bit(w, {.type = Quant4Type::kFp4, .double_quant = false});
  ASSERT_EQ(q.packed.numel(), 50);
  ASSERT_EQ(q.absmax.numel(), 2);
  EXPECT_FLOAT_EQ(q.absmax[1].item<float>(), w.reshape(-1).narrow(0, 64, 35).abs().max().item<float>());
  EXPECT_EQ(Dequantize4bit(q, torch::kFloat32).sizes(), w.sizes());
}

// Every tensor-parallel piece dequantizes to its slice of the whole tensor's values (the double-quantized absmax
// included: a piece's blocks keep their place in the full tensor's second-level blocks).
TEST(QuantizedLinearWeight, PiecesDequantizeToTheWholeTensorsValues) {
  torch::manual_seed(2);
  torch::Tensor w = torch::randn({48, 64 * 12});  // 576 blocks: pieces straddle the 256-block groups
  for (bool double_quant : {true, false}) {
    const Quant4Options o{.type = Quant4Type::kNf4, .double_quant = double_quant};
    const torch::Tensor whole = Dequantize4bit(Quantize4bit(w, o), torch::kFloat32);
    for (int64_t dim : {0, 1}) {
      for (int64_t shards : {1, 2, 3}) {
        for (int64_t index = 0; index < shards; ++index) {
          auto piece = QuantizedLinearWeight::Make(w, dim, shards, index, o);
          ASSERT_TRUE(piece.ok()) << piece.status().message();
          EXPECT_TRUE(torch::equal(piece->Dequantize(torch::kFloat32), whole.chunk(shards, dim)[index]))
              << "dim " << dim << " shards " << shards << " index " << index << " double " << double_quant;
          EXPECT_TRUE(torch::equal(piece->DequantizeRows(5, 9, torch::kFloat32),
                                   whole.chunk(shards, dim)[index].narrow(0, 5, 4)));
          // bf16 rounds the same fp32 values; the generic ATen path (other dtypes) computes the same values.
          EXPECT_TRUE(torch::equal(piece->DequantizeRows(5, 9, torch::kBFloat16),
                                   whole.chunk(shards, dim)[index].narrow(0, 5, 4).to(torch::kBFloat16)));
          EXPECT_TRUE(torch::equal(piece->DequantizeRows(5, 9, torch::kFloat64),
                                   whole.chunk(shards, dim)[index].narrow(0, 5, 4).to(torch::kFloat64)));
        }
      }
    }
  }
}

// A width that is not a multiple of 64: bnb's blocks run across rows, and a piece of whole rows (which may start
// inside a block) keeps them.
TEST(QuantizedLinearWeight, FlatBlocksAcrossRowsDequantizeToTheWholeTensorsValues) {
  torch::manual_seed(7);
  torch::Tensor w = torch::randn({45, 96});  // 67.5 blocks: the last one partial; pieces of 15 rows start mid-block
  for (bool double_quant : {true, false}) {
    const Quant4Options o{.type = Quant4Type::kNf4, .double_quant = double_quant};
    const torch::Tensor whole = Dequantize4bit(Quantize4bit(w, o), torch::kFloat32);
    for (int64_t shards : {1, 3}) {
      for (int64_t index = 0; index < shards; ++index) {
        auto piece = QuantizedLinearWeight::Make(w, 0, shards, index, o);
        ASSERT_TRUE(piece.ok()) << piece.status().message();
        EXPECT_EQ(piece->absmax.dim(), 1);
        const torch::Tensor want = whole.chunk(shards, 0)[index];
        EXPECT_TRUE(torch::equal(piece->Dequantize(torch::kFloat32), want)) << shards << " " << index;
        EXPECT_TRUE(
            torch::equal(piece->DequantizeRows(2, 7, torch::kBFloat16), want.narrow(0, 2, 5).to(torch::kBFloat16)));
        EXPECT_TRUE(
            torch::equal(piece->DequantizeRows(2, 7, torch::kFloat64), want.narrow(0, 2, 5).to(torch::kFloat64)));
      }
    }
  }
  // The fused matmul tiles such a weight too (2^20 / 96 rows a tile: two tiles).
  auto q = QuantizedLinearWeight::Make(torch::randn({12000, 96}) * 0.05, 0, 1, 0, {});
  ASSERT_TRUE(q.ok());
  const torch::Tensor x = torch::randn({3, 96});
  EXPECT_LT(MaxRel(Quant4Linear(x, *q, {}, Quant4Matmul::kFused), Quant4Linear(x, *q, {}, Quant4Matmul::kReference)),
            1e-5);
}

TEST(QuantizedLinearWeight, RefusesColumnPiecesOffThe64BlockAndOddWidths) {
  auto columns = QuantizedLinearWeight::Make(torch::randn({8, 128}), 1, 4, 0, {});
  ASSERT_FALSE(columns.ok());
  EXPECT_NE(columns.status().message().find("multiple of 64 (bitsandbytes' block), got 32 of 128"), std::string::npos)
      << columns.status().message();
  auto flat_columns = QuantizedLinearWeight::Make(torch::randn({8, 192}), 1, 2, 0, {});
  EXPECT_FALSE(flat_columns.ok()) << "96 columns a piece: blocks would cross the pieces";
  auto odd = QuantizedLinearWeight::Make(torch::randn({8, 97}), 0, 1, 0, {});
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("an even input width"), std::string::npos) << odd.status().message();
  EXPECT_TRUE(QuantizedLinearWeight::Make(torch::randn({8, 96}), 0, 2, 1, {}).ok()) << "whole rows: the flat layout";
}

// The fused matmul (tiles of W's rows, forward and backward) against the reference (W dequantized whole).
TEST(Quant4Linear, FusedEqualsTheReferenceForwardAndInputGradient) {
  torch::manual_seed(3);
  // 4200 x 256: kQuant4TileElements / 256 = 4096 rows a tile, so two tiles, the second partial.
  const torch::Tensor w = torch::randn({4200, 256}) * 0.05;
  auto q = QuantizedLinearWeight::Make(w, 0, 1, 0, {});
  ASSERT_TRUE(q.ok());
  const torch::Tensor bias = torch::randn({4200});
  const torch::Tensor x0 = torch::randn({2, 5, 256});
  torch::Tensor grads[2], outs[2];
  for (int k = 0; k < 2; ++k) {
    torch::Tensor x = x0.clone().requires_grad_(true);
    torch::Tensor y = Quant4Linear(x, *q, bias, k == 0 ? Quant4Matmul::kReference : Quant4Matmul::kFused);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 4200}));
    (y * torch::linspace(-1, 1, 4200)).sum().backward();
    outs[k] = y.detach();
    grads[k] = x.grad();
  }
  EXPECT_LT(MaxRel(outs[1], outs[0]), 1e-5);
  EXPECT_LT(MaxRel(grads[1], grads[0]), 1e-5);
  // The reference is the plain linear layer on the dequantized weight.
  EXPECT_TRUE(torch::allclose(outs[0], torch::nn::functional::linear(x0, q->Dequantize(torch::kFloat32), bias)));
}

TEST(Quant4Linear, Bf16InputsDequantizeToBf16) {
  torch::manual_seed(4);
  auto q = QuantizedLinearWeight::Make(torch::randn({64, 128}).to(torch::kBFloat16), 0, 1, 0, {});
  ASSERT_TRUE(q.ok());
  const torch::Tensor x = torch::randn({3, 128}).to(torch::kBFloat16);
  torch::Tensor ref = Quant4Linear(x, *q, {}, Quant4Matmul::kReference);
  torch::Tensor fused = Quant4Linear(x, *q, {}, Quant4Matmul::kFused);
  EXPECT_EQ(fused.scalar_type(), torch::kBFloat16);
  EXPECT_LT(MaxRel(fused.to(torch::kFloat32), ref.to(torch::kFloat32)), 1e-2);
}

// The CUDA dequantization kernel gives the CPU's values bit for bit, and the fused matmul on the GPU the CPU
// reference's within tolerance. Runs on a GPU machine (scripts/device-bench.sh runs trainer_test there).
TEST(Quant4Linear, CudaKernelEqualsTheCpuDequantizationAndReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the dequantization kernel is not run here";
  const torch::Device gpu(torch::kCUDA, 0);
  torch::manual_seed(6);
  const torch::Tensor w = torch::randn({96, 64 * 10}) * 0.05;  // 960 blocks: four 256-block groups
  const torch::Tensor narrow = torch::randn({90, 96}) * 0.05;  // the flat layout: blocks across rows
  for (bool double_quant : {true, false}) {
    for (int64_t dim : {0, 1, 2}) {  // 2: row pieces of the flat layout
      auto piece = QuantizedLinearWeight::Make(dim == 2 ? narrow : w, dim == 2 ? 0 : dim, dim == 2 ? 3 : 2, 1,
                                               {.type = Quant4Type::kFp4, .double_quant = double_quant});
      ASSERT_TRUE(piece.ok());
      QuantizedLinearWeight on_gpu = *piece;
      on_gpu.packed = piece->packed.to(gpu);
      on_gpu.absmax = piece->absmax.to(gpu);
      if (double_quant) on_gpu.absmax2 = piece->absmax2.to(gpu);
      for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
        EXPECT_TRUE(torch::equal(on_gpu.DequantizeRows(3, 25, dtype).cpu(), piece->DequantizeRows(3, 25, dtype)))
            << "dim " << dim << " double " << double_quant << " dtype " << dtype;
      }
      const torch::Tensor x = torch::randn({4, 7, piece->cols});
      torch::Tensor xg = x.to(gpu).requires_grad_(true);
      torch::Tensor y = Quant4Linear(xg, on_gpu, {}, Quant4Matmul::kFused);
      y.sum().backward();
      torch::Tensor xc = x.clone().requires_grad_(true);
      torch::Tensor ref = Quant4Linear(xc, *piece, {}, Quant4Matmul::kReference);
      ref.sum().backward();
      EXPECT_LT(MaxRel(y.detach().cpu(), ref.detach()), 1e-4);
      EXPECT_LT(MaxRel(xg.grad().cpu(), xc.grad()), 1e-4);
    }
  }
}

// A quantized Linear: no dense weight parameter, the 4-bit buffers, the base frozen, LoRA trained on top.
TEST(QuantizedLinear, DropsTheDenseWeightAndTrainsOnlyLoraThroughTheDequantizedBase) {
  torch::manual_seed(5);
  Linear lin = LinearFactory().Make({.in = 128, .out = 64, .bias = true, .role = "q_proj"}, torch::kFloat32);
  const torch::Tensor full = torch::randn({64, 128}) * 0.1;
  ASSERT_TRUE(lin->QuantizeBase(full, {}).ok());
  EXPECT_FALSE(lin->weight.defined());
  std::vector<std::string> params, buffers;
  for (const auto& p : lin->named_parameters()) params.push_back(p.key());
  for (const auto& b : lin->named_buffers()) buffers.push_back(b.key());
  EXPECT_EQ(params, (std::vector<std::string>{"bias"}));
  EXPECT_EQ(buffers, (std::vector<std::string>{"weight_q4", "weight_q4_absmax", "weight_q4_absmax2"}));
  EXPECT_EQ(lin->quantized()->bytes(), 64 * 64 + 64 * 2 + 4);
  EXPECT_FALSE(lin->QuantizeBase(full, {}).ok()) << "quantizing twice is refused";
  lin->to(torch::kCPU);  // moves the buffers, skips the dropped weight
  EXPECT_EQ(lin->quantized()->packed.data_ptr(), lin->named_buffers()["weight_q4"].data_ptr());

  lin->EnableLora({.rank = 4, .alpha = 8}, 7);
  {
    torch::NoGradGuard no_grad;
    lin->lora_B->weight.normal_(0, 0.1);
  }
  for (auto& p : lin->parameters()) p.set_requires_grad(false);
  lin->lora_A->weight.set_requires_grad(true);
  lin->lora_B->weight.set_requires_grad(true);
  torch::Tensor x = torch::randn({4, 128}, torch::requires_grad());
  torch::Tensor y = lin->forward(x);
  // Base through the dequantized weight, plus the adapter: x W^T + b + (x A^T B^T) * alpha / r
  const torch::Tensor deq = lin->quantized()->Dequantize(torch::kFloat32);
  const torch::Tensor expected =
      torch::nn::functional::linear(x, deq, lin->bias) +
      torch::matmul(torch::matmul(x, lin->lora_A->weight.t()), lin->lora_B->weight.t()) * 2.0;
  EXPECT_LT(MaxRel(y.detach(), expected.detach()), 1e-5);
  y.sum().backward();
  EXPECT_TRUE(lin->lora_A->weight.grad().defined());
  EXPECT_TRUE(lin->lora_B->weight.grad().defined());
  ASSERT_TRUE(x.grad().defined()) << "the input gets its gradient through the dequantized base";
  const torch::Tensor dx =
      torch::ones({4, 64}).matmul(deq + torch::matmul(lin->lora_B->weight, lin->lora_A->weight) * 2.0);
  EXPECT_LT(MaxRel(x.grad(), dx.detach()), 1e-5);
}

}  // namespace
}  // namespace anneal::model
