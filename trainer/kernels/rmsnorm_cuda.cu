// Fused RMSNorm forward: one block per row; fp32 sum of squares reduced across the block, then one pass
// that normalises, rounds to the input dtype (as HF: x.to(input_dtype)) and multiplies by the weight.
#include "trainer/kernels/rmsnorm_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace anneal::kernels {
namespace {

template <typename T> __device__ float ToFloat(T v);
template <> __device__ float ToFloat<float>(float v) { return v; }
template <> __device__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ float ToFloat<__half>(__half v) { return __half2float(v); }

template <typename T> __device__ T FromFloat(float v);
template <> __device__ float FromFloat<float>(float v) { return v; }
template <> __device__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __half FromFloat<__half>(float v) { return __float2half(v); }

constexpr int kThreads = 256;

template <typename T>
__global__ void RmsNormForwardKernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                     int64_t cols, float eps) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  float sum = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = ToFloat(xr[c]);
    sum += v * v;
  }
  // Warp reduction, then across warps through shared memory.
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, offset);
  __shared__ float warp_sums[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    sum = lane < blockDim.x / 32 ? warp_sums[lane] : 0.f;
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, offset);
    if (lane == 0) warp_sums[0] = sum;
  }
  __syncthreads();
  const float inv_rms = rsqrtf(warp_sums[0] / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const T normed = FromFloat<T>(ToFloat(xr[c]) * inv_rms);
    yr[c] = FromFloat<T>(ToFloat(w[c]) * ToFloat(normed));
  }
}

}  // namespace

void LaunchRmsNormForward(const void* x, const void* weight, void* y, int64_t rows, int64_t cols, float eps,
                          int dtype, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 grid(static_cast<unsigned>(rows)), block(kThreads);
  switch (dtype) {
    case kRmsNormF32:
      RmsNormForwardKernel<float><<<grid, block, 0, stream>>>(static_cast<const float*>(x),
                                                               static_cast<const float*>(weight),
                                                               static_cast<float*>(y), cols, eps);
      break;
    case kRmsNormBF16:
      RmsNormForwardKernel<__nv_bfloat16><<<grid, block, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(weight),
          static_cast<__nv_bfloat16*>(y), cols, eps);
      break;
    default:
      RmsNormForwardKernel<__half><<<grid, block, 0, stream>>>(static_cast<const __half*>(x),
                                                               static_cast<const __half*>(weight),
                                                               static_cast<__half*>(y), cols, eps);
      break;
  }
}

}  // namespace anneal::kernels
