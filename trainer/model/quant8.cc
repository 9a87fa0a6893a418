#include "trainer/model/quant8.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>

#include <algorithm>
#include <vector>

#include "trainer/model/tiled_dequant.h"

namespace anneal::model {

// bnb's constants (backends/default/ops.py): 1 / 127 as MatMul8bitFp writes it, int8_vectorwise_dequant's
// reciprocal of 127 and int8_mm_dequant's 1 / (127 * 127).
constexpr double kInv127 = 1.0 / 127.0;
constexpr double kVectorwiseDequant = 7.874015718698502e-3;
constexpr double kMmDequant = 6.200124e-05;

namespace {

// bnb's int8_vectorwise_quant (default kernel) on a2 [N, C] fp16 (modified in place and restored, as bnb):
// -> Cx int8 [N, C], SCx fp32 [N], outlier columns int64 [k] (undefined when threshold <= 0).
struct QuantizedActivations {
  torch::Tensor cx, scx, outlier_cols;
};

QuantizedActivations QuantizeActivations(torch::Tensor a16, double threshold,
                                         const std::function<void(at::Tensor&)>& reduce_row_max) {
  QuantizedActivations q;
  torch::Tensor outliers, restore;
  if (threshold > 0.0) {
    outliers = a16.abs().ge(threshold);
    if (outliers.any().item<bool>()) {
      q.outlier_cols = torch::argwhere(outliers.any(0)).view({-1});
      restore = a16.index({outliers}).clone();
      a16.index_put_({outliers}, 0);
    } else {
      q.outlier_cols = torch::empty({0}, a16.options().dtype(torch::kInt64));
      outliers = torch::Tensor();
    }
  }
  q.scx = std::get<0>(a16.abs().max(1)).to(torch::kFloat32);
  if (reduce_row_max) reduce_row_max(q.scx);
  // Python's 127.0 / t is t.reciprocal() * 127.0 (torch.Tensor.__rtruediv__).
  q.cx = torch::round(a16 * (q.scx.unsqueeze(-1).reciprocal() * 127.0)).to(torch::kInt8);
  if (a16.size(0) > 1 && q.outlier_cols.defined() && q.outlier_cols.numel() > 0) {
    q.cx.index_fill_(1, q.outlier_cols, 0);
  }
  if (restore.defined()) a16.index_put_({outliers}, restore);
  return q;
}

int64_t TileRows(const Int8LinearWeight& w) {
  return std::max<int64_t>(1, kInt8TileElements / std::max<int64_t>(w.cols, 1));
}

// MatMul8bitFp's forward, linear(x2, W', bias): x2 [N, cols] -> [N, rows], W' a tile of rows at a time (kFast)
// or whole (kReference).
torch::Tensor DequantizedForward(const torch::Tensor& x2, const Int8LinearWeight& w, const torch::Tensor& bias,
                                 Int8Impl impl) {
  return TiledLinear(x2, w, bias, impl == Int8Impl::kFast ? TileRows(w) : w.rows);
}

// g2 [N, rows] -> g2 W' [N, cols] (bnb's grad_A: the dequantized weight, in the input's dtype).
torch::Tensor InputGrad(const torch::Tensor& g2, const Int8LinearWeight& w, Int8Impl impl) {
  return TiledInputGrad(g2, w, impl == Int8Impl::kFast ? TileRows(w) : w.rows);
}

// MatMul8bitLt's forward (threshold > 0: int8_mixed_scaled_mm; else int8_scaled_mm): x2 [N, cols] -> [N, rows].
torch::Tensor LlmInt8Forward(const torch::Tensor& x2, const Int8LinearWeight& w, const torch::Tensor& bias,
                             const Int8MatmulOptions& o) {
  torch::Tensor a16 = x2.to(torch::kFloat16, /*non_blocking=*/false, /*copy=*/true);
  const QuantizedActivations q = QuantizeActivations(a16, o.threshold, o.reduce_row_max);
  torch::Tensor product;  // int32 [N, rows]
  // cuBLAS's int8 GEMM (at::_int_mm on CUDA) wants more than 16 rows and widths that are multiples of 8.
  const bool int_mm =
      o.impl == Int8Impl::kFast && (x2.device().is_cpu() || (x2.size(0) > 16 && w.cols % 8 == 0 && w.rows % 8 == 0));
  if (int_mm) {
    product = at::_int_mm(q.cx, w.CB.t());
  } else {
    // Exact in fp64 (|sum| < 2^53), on every device.
    product = torch::mm(q.cx.to(torch::kFloat64), w.CB.to(torch::kFloat64).t()).to(torch::kInt32);
  }
  torch::Tensor y = product * (q.scx.unsqueeze(-1) * w.SCB.unsqueeze(0)) * kMmDequant;
  if (bias.defined()) y += bias;
  y = y.to(x2.scalar_type());
  if (q.outlier_cols.defined() && q.outlier_cols.numel() > 0) {
    const torch::Tensor sub_x = x2.index_select(1, q.outlier_cols);
    const torch::Tensor sub_w =
        (w.CB.index_select(1, q.outlier_cols) * w.SCB.view({-1, 1}) * kVectorwiseDequant).to(x2.scalar_type());
    y = y.addmm(sub_x, sub_w.t());
  }
  return y;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const Int8LinearWeight& WeightOf(int64_t address) {
  return *reinterpret_cast<const Int8LinearWeight*>(address);
}

struct Int8LinearFn : public torch::autograd::Function<Int8LinearFn> {
  // x [.., cols]; bias [rows] or empty ([0]: autograd functions take no undefined inputs); weight / options:
  // addresses valid during the call (weight: until the backward).
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, at::Tensor bias_or_empty, int64_t weight,
                            int64_t options) {
    const torch::Tensor bias = bias_or_empty.numel() > 0 ? bias_or_empty : torch::Tensor();
    const Int8LinearWeight& w = WeightOf(weight);
    const Int8MatmulOptions& o = *reinterpret_cast<const Int8MatmulOptions*>(options);
    ctx->saved_data["weight"] = weight;
    ctx->saved_data["impl"] = static_cast<int64_t>(o.impl);
    ctx->saved_data["bias"] = bias.defined();
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = w.rows;
    const torch::Tensor x2 = x.reshape({-1, w.cols});
    torch::Tensor y;
    if (o.how == Int8Matmul::kLlmInt8) {
      y = LlmInt8Forward(x2, w, bias, o);
    } else {
      y = DequantizedForward(x2, w, bias, o.impl);
    }
    return y.view(out_shape);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const Int8LinearWeight& w = WeightOf(ctx->saved_data["weight"].toInt());
    const auto impl = static_cast<Int8Impl>(ctx->saved_data["impl"].toInt());
    std::vector<int64_t> in_shape = grad[0].sizes().vec();
    in_shape.back() = w.cols;
    torch::Tensor g = grad[0].contiguous().reshape({-1, w.rows});
    torch::Tensor gbias = ctx->saved_data["bias"].toBool() ? g.sum(0) : at::Tensor();
    return {InputGrad(g, w, impl).view(in_shape), gbias, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> QuantizeInt8Rowwise(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w16 = w.to(torch::kFloat16).contiguous();
  const QuantizedActivations q = QuantizeActivations(w16, /*threshold=*/0.0, nullptr);
  return {q.cx, q.scx};
}

StatusOr<Int8LinearWeight> Int8LinearWeight::Make(const torch::Tensor& full, int64_t dim, int64_t shards,
                                                  int64_t index) {
  if (full.dim() != 2) return InvalidArgumentError(c10::str("an 8-bit weight must be 2-D, got ", full.sizes()));
  if (shards < 1 || index < 0 || index >= shards || full.size(dim) % shards != 0) {
    return InvalidArgumentError(c10::str("cannot cut a weight of shape ", full.sizes(), " into ", shards,
                                         " equal pieces along dimension ", dim));
  }
  auto [cb, scb] = QuantizeInt8Rowwise(full);
  Int8LinearWeight w;
  if (shards > 1) {
    cb = cb.chunk(shards, dim)[index].contiguous();
    if (dim == 0) scb = scb.chunk(shards, 0)[index].contiguous();
  }
  w.CB = cb;
  w.SCB = scb;
  w.rows = cb.size(0);
  w.cols = cb.size(1);
  return w;
}

torch::Tensor Int8LinearWeight::DequantizeRows(int64_t r0, int64_t r1, torch::ScalarType dtype) const {
  // MatMul8bitFp: CB.to(A.dtype).mul_(SCB.unsqueeze(1).mul(1.0 / 127.0))
  return CB.narrow(0, r0, r1 - r0).to(dtype).mul_(SCB.narrow(0, r0, r1 - r0).unsqueeze(1).mul(kInv127));
}

torch::Tensor Int8Linear(const torch::Tensor& x, const Int8LinearWeight& w, const torch::Tensor& bias,
                         const Int8MatmulOptions& options) {
  // Linear8bitLt casts the bias to the input's dtype.
  const torch::Tensor b = bias.defined() ? bias.to(x.scalar_type()) : torch::empty({0}, x.options());
  return Int8LinearFn::apply(x.contiguous(), b, reinterpret_cast<int64_t>(&w), reinterpret_cast<int64_t>(&options));
}

}  // namespace anneal::model
