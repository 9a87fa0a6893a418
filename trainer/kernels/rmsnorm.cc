#include "trainer/kernels/rmsnorm.h"

#include <ATen/ATen.h>

#ifdef ANNEAL_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#include "trainer/kernels/rmsnorm_cuda.h"
#endif

namespace anneal::kernels {

at::Tensor RmsNormReference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // [.., C] -> fp32 -> * rsqrt(mean(x^2) + eps) -> input dtype -> * weight
  at::Tensor h = x.to(at::kFloat);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps);
  return weight * h.to(x.scalar_type());
}

bool HasCudaKernels() {
#ifdef ANNEAL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef ANNEAL_WITH_CUDA
  const auto t = x.scalar_type();
  if (x.is_cuda() && weight.is_cuda() && weight.scalar_type() == t &&
      (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf)) {
    at::Tensor xc = x.contiguous();
    at::Tensor wc = weight.contiguous();
    at::Tensor y = at::empty_like(xc);
    const int64_t cols = xc.size(-1);
    const int64_t rows = xc.numel() / cols;
    const int dtype = t == at::kFloat ? kRmsNormF32 : (t == at::kBFloat16 ? kRmsNormBF16 : kRmsNormF16);
    LaunchRmsNormForward(xc.data_ptr(), wc.data_ptr(), y.data_ptr(), rows, cols, static_cast<float>(eps), dtype,
                         c10::cuda::getCurrentCUDAStream().stream());
    return y;
  }
#endif
  return RmsNormReference(x, weight, eps);
}

}  // namespace anneal::kernels
