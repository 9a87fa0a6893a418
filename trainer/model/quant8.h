// 8-bit weights as bitsandbytes' Linear8bitLt stores them (QLoRA with quantization_bit: 8, LLaMA-Factory's
// BitsAndBytesConfig(load_in_8bit=True)), and the two matmuls bitsandbytes 0.50 computes with them.
//
// Storage (bnb's Int8Params._quantize = int8_vectorwise_quant on the weight cast to fp16), per output row:
//   SCB[r] = max_c |fp16(W[r, c])|                                   fp32 [out]
//   CB[r, c] = round(fp16(W[r, c]) * (127 / SCB[r]))                 int8 [out, in] (round half to even)
// A tensor-parallel piece keeps its rows or columns of the whole tensor's CB and the SCB of its rows, so every
// layout holds exactly the single-process values.
//
// The matmuls (bitsandbytes.autograd._functions):
//   kDequantized (MatMul8bitFp, what bnb runs on CPU in training mode):
//     W' = CB.to(dtype) * (SCB * (1/127))[:, None];  y = x W'^T + bias;  dx = dy W'
//   kLlmInt8 (MatMul8bitLt, what bnb runs on CUDA, and on CPU in eval mode; LLM.int8 with a threshold, 6.0 by
//   default as llm_int8_threshold):
//     x16 = fp16(x) [N, in]; outlier columns = the columns holding an |x16| >= threshold; those entries are
//     zeroed for the statistics, SCx[n] = max_c |x16[n, c]| (fp32), Cx = round(x16 * (127 / SCx[n])) int8 with
//     the outlier columns zeroed entirely (when N > 1);
//     y = int32(Cx CB^T) * (SCx[n] * SCB[r]) * 6.200124e-05 + bias           (the int8 part, fp32)
//       + x[:, outliers] (CB[:, outliers] * SCB[:, None] * 7.874015718698502e-3)^T   (outliers, x's dtype)
//     dx = dy W' as kDequantized (bnb's backward uses the dequantized weight; the weight gets no gradient).
//   Under tensor parallelism a piece of the input columns needs the row maxima of the whole row: the caller
//   passes `reduce_row_max` (an all-reduce max over the group), applied to SCx before the rounding.
// Each has a plain reference (whole weight dequantized; the int32 product computed exactly in fp64) and a fast
// path (the weight dequantized a tile of rows at a time, forward and backward; the int32 product by at::_int_mm,
// bitsandbytes' own CPU kernel, or cuBLAS's int8 GEMM where its shape rules allow); tests hold them equal.
//
// Thread-safety: plain functions; an Int8LinearWeight is read-only after Make.
//
// Example:
//   auto w8 = Int8LinearWeight::Make(w, /*dim=*/0, /*shards=*/1, /*index=*/0);    // w [out, in]
//   torch::Tensor y = Int8Linear(x, *w8, bias, {.how = Int8Matmul::kLlmInt8});    // x [.., in] -> [.., out]
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>

#include "common/status.h"

namespace anneal::model {

// LLaMA-Factory's 8-bit quantization: bnb's defaults (BitsAndBytesConfig's llm_int8_threshold).
struct Int8Options {
  double threshold = 6.0;
};

// bnb's int8_vectorwise_quant(w.to(fp16)) without outliers: w [R, C] -> CB int8 [R, C], SCB fp32 [R].
std::pair<torch::Tensor, torch::Tensor> QuantizeInt8Rowwise(const torch::Tensor& w);

// The 8-bit weight of one linear layer: this rank's piece [rows, cols] of the full [out, in] tensor (cut into
// `shards` equal pieces along `dim`, piece `index`).
class Int8LinearWeight {
 public:
  // INVALID_ARGUMENT when `full` is not 2-D or a dimension does not split evenly.
  static StatusOr<Int8LinearWeight> Make(const torch::Tensor& full, int64_t dim, int64_t shards, int64_t index);

  // Rows [r0, r1) dequantized as MatMul8bitFp does: [r1 - r0, cols] in `dtype`.
  torch::Tensor DequantizeRows(int64_t r0, int64_t r1, torch::ScalarType dtype) const;
  torch::Tensor Dequantize(torch::ScalarType dtype) const { return DequantizeRows(0, rows, dtype); }
  int64_t bytes() const { return CB.numel() + SCB.numel() * 4; }  // 1 byte a weight + an fp32 scale a row

  int64_t rows = 0, cols = 0;
  torch::Tensor CB;   // int8 [rows, cols]
  torch::Tensor SCB;  // fp32 [rows]
};

enum class Int8Matmul { kDequantized, kLlmInt8 };
enum class Int8Impl { kReference, kFast };

struct Int8MatmulOptions {
  Int8Matmul how = Int8Matmul::kLlmInt8;
  Int8Impl impl = Int8Impl::kFast;
  double threshold = 6.0;  // kLlmInt8 only; <= 0: no outlier columns
  // kLlmInt8 under a piece of the input columns: SCx [N] fp32 -> its maximum over the group, in place.
  std::function<void(at::Tensor&)> reduce_row_max = nullptr;
};

// y = x W^T + bias as described above: x [.., cols] -> [.., rows] in x's dtype. Differentiable in x and bias.
// `w` must outlive the autograd graph of the result.
inline constexpr int64_t kInt8TileElements = int64_t{1} << 20;
torch::Tensor Int8Linear(const torch::Tensor& x, const Int8LinearWeight& w, const torch::Tensor& bias,
                         const Int8MatmulOptions& options);

}  // namespace anneal::model
