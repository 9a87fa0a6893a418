// Matmuls against a quantized weight W [rows, cols] dequantized a tile of rows at a time, so that no
// full-precision copy of the whole weight is ever held: the fast paths of the 4-bit (quant4) and 8-bit (quant8)
// bases share them. `Weight` is any type with `rows`, `cols`, Dequantize(dtype) -> [rows, cols] and
// DequantizeRows(r0, r1, dtype) -> [r1 - r0, cols]; `tile` >= rows dequantizes the whole weight at once.
//
// Thread-safety: pure functions of their arguments.
//
// Example:
//   torch::Tensor y = TiledLinear(x2, weight, bias, /*tile=*/256);    // == linear(x2, W, bias)
//   torch::Tensor gx = TiledInputGrad(g2, weight, /*tile=*/256);      // == g2 @ W
#pragma once

#include <torch/nn/functional/linear.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>

namespace anneal::model {

// x2 [N, cols] -> linear(x2, W, bias) [N, rows]; `bias` [rows] or undefined.
template <class Weight>
torch::Tensor TiledLinear(const torch::Tensor& x2, const Weight& w, const torch::Tensor& bias, int64_t tile) {
  if (tile >= w.rows) return torch::nn::functional::linear(x2, w.Dequantize(x2.scalar_type()), bias);
  torch::Tensor y = torch::empty({x2.size(0), w.rows}, x2.options());
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile) {
    const int64_t r1 = std::min(w.rows, r0 + tile);
    const torch::Tensor b = bias.defined() ? bias.narrow(0, r0, r1 - r0) : bias;
    y.narrow(1, r0, r1 - r0).copy_(torch::nn::functional::linear(x2, w.DequantizeRows(r0, r1, x2.scalar_type()), b));
  }
  return y;
}

// g2 [N, rows] -> g2 W [N, cols] (the input's gradient of a linear layer).
template <class Weight>
torch::Tensor TiledInputGrad(const torch::Tensor& g2, const Weight& w, int64_t tile) {
  if (tile >= w.rows) return torch::mm(g2, w.Dequantize(g2.scalar_type()));
  torch::Tensor gx = torch::zeros({g2.size(0), w.cols}, g2.options());
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile) {
    const int64_t r1 = std::min(w.rows, r0 + tile);
    gx.addmm_(g2.narrow(1, r0, r1 - r0), w.DequantizeRows(r0, r1, g2.scalar_type()));
  }
  return gx;
}

}  // namespace anneal::model
