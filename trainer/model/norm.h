// RMSNorm, as every supported architecture uses it: y = weight * x / sqrt(mean(x^2) + eps), computed in fp32
// and cast back to the input dtype before the weight multiplies (HF's LlamaRMSNorm).
//
// Thread-safety: one thread at a time (LibTorch modules).
//
// Example:
//   RMSNorm norm(64, 1e-6, torch::TensorOptions().dtype(torch::kBFloat16));
//   torch::Tensor y = norm->forward(x);   // [.., 64] -> [.., 64]
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace anneal::model {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // [.., C] -> [.., C], computed in fp32 as HF does
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

}  // namespace anneal::model
