// RMSNorm: y = weight * (x / sqrt(mean(x^2) + eps)), statistics in fp32 (as HF LlamaRMSNorm).
//
// RmsNormReference is the simple ATen version (differentiable; used on CPU and for training).
// RmsNorm dispatches to the fused CUDA kernel (rmsnorm_cuda.cu: one block per row, fp32 accumulation) for
// contiguous CUDA fp32/bf16/fp16 inputs when the build has CUDA; otherwise to the reference. The kernel is
// forward-only (inference); tests/unit/trainer checks it against the reference within tolerance.
//
// Thread-safety: stateless.
//
// Example:
//   torch::Tensor y = anneal::kernels::RmsNorm(x, weight, 1e-6);   // x [.., C], weight [C]
#pragma once

#include <ATen/core/Tensor.h>

namespace anneal::kernels {

at::Tensor RmsNormReference(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
// True when this build has the CUDA kernels.
bool HasCudaKernels();

}  // namespace anneal::kernels
