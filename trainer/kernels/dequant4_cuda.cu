// 4-bit dequantization (bitsandbytes' NF4/FP4 layout): one thread per packed byte, i.e. two output values.
// Multiplies and adds are rounded separately (__fmul_rn / __fadd_rn): nvcc would otherwise contract them into a
// fused multiply-add and the values would differ from the CPU's (and bnb's) in the last bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "trainer/kernels/dequant4_cuda.h"

namespace anneal::kernels {
namespace {

template <typename T>
__device__ T FromFloat(float v);
template <>
__device__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

constexpr int kThreads = 256;
constexpr int64_t kBlock = 64, kBlock2 = 256;

template <typename T>
__global__ void Dequant4Kernel(const uint8_t* __restrict__ packed, const void* __restrict__ absmax,
                               const float* __restrict__ absmax2, float offset, const float* __restrict__ code4,
                               const float* __restrict__ code8, int64_t rows, int64_t cols, int64_t row0,
                               int64_t col_block0, int64_t full_blocks_per_row, int64_t first_block,
                               T* __restrict__ out) {
  const int64_t bytes_per_row = cols / 2, col_blocks = cols / kBlock;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * bytes_per_row) return;
  const int64_t r = i / bytes_per_row, col = (i % bytes_per_row) * 2, c = col / kBlock;
  // Row-aligned blocks (full_blocks_per_row > 0): block (r, c) of the piece. Flat (0): blocks run across rows;
  // absmax holds the full tensor's blocks from the piece's first one, row0 being the first row of the pass.
  int64_t local, global;
  if (full_blocks_per_row > 0) {
    local = r * col_blocks + c;
    global = (row0 + r) * full_blocks_per_row + col_block0 + c;
  } else {
    global = ((row0 + r) * cols + col) / kBlock;
    local = global - first_block;
  }
  float scale;
  if (absmax2 != nullptr) {
    const uint8_t q = static_cast<const uint8_t*>(absmax)[local];
    scale = __fadd_rn(__fmul_rn(code8[q], absmax2[global / kBlock2]), offset);
  } else {
    scale = static_cast<const float*>(absmax)[local];
  }
  const uint8_t b = packed[i];
  out[r * cols + col] = FromFloat<T>(__fmul_rn(code4[b >> 4], scale));
  out[r * cols + col + 1] = FromFloat<T>(__fmul_rn(code4[b & 15], scale));
}

}  // namespace

void LaunchDequant4(const uint8_t* packed, const void* absmax, const float* absmax2, float offset, const float* code4,
                    const float* code8, int64_t rows, int64_t cols, int64_t row0, int64_t col_block0,
                    int64_t full_blocks_per_row, int64_t first_block, void* out, int dtype, cudaStream_t stream) {
  const int64_t n = rows * cols / 2;
  if (n == 0) return;
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads)), block(kThreads);
  switch (dtype) {
    case kDequant4F32:
      Dequant4Kernel<float><<<grid, block, 0, stream>>>(packed, absmax, absmax2, offset, code4, code8, rows, cols, row0,
                                                        col_block0, full_blocks_per_row, first_block,
                                                        static_cast<float*>(out));
      break;
    case kDequant4BF16:
      Dequant4Kernel<__nv_bfloat16><<<grid, block, 0, stream>>>(packed, absmax, absmax2, offset, code4, code8, rows,
                                                                cols, row0, col_block0, full_blocks_per_row,
                                                                first_block, static_cast<__nv_bfloat16*>(out));
      break;
    default:
      Dequant4Kernel<__half><<<grid, block, 0, stream>>>(packed, absmax, absmax2, offset, code4, code8, rows, cols,
                                                         row0, col_block0, full_blocks_per_row, first_block,
                                                         static_cast<__half*>(out));
      break;
  }
}

}  // namespace anneal::kernels
