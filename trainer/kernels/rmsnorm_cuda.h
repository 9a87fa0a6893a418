// Launcher of the fused RMSNorm forward kernel. Plain C++ (no ATen) so nvcc compiles the kernel quickly.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace anneal::kernels {

enum RmsNormDtype : int { kRmsNormF32 = 0, kRmsNormBF16 = 1, kRmsNormF16 = 2 };

// x, y [rows, cols] and weight [cols] of `dtype`, contiguous, on the device of `stream`.
void LaunchRmsNormForward(const void* x, const void* weight, void* y, int64_t rows, int64_t cols, float eps,
                          int dtype, cudaStream_t stream);

}  // namespace anneal::kernels
