// Launcher of the 4-bit dequantization kernel (QLoRA's base weights, trainer/model/quant4.h). Plain C++ (no ATen)
// so nvcc compiles the kernel quickly.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace anneal::kernels {

enum Dequant4Dtype : int { kDequant4F32 = 0, kDequant4BF16 = 1, kDequant4F16 = 2 };

// The rows [rows, cols] of a QuantizedLinearWeight piece, all on the device of `stream`:
//   packed   uint8 [rows, cols / 2] (element 2i in the high nibble)
//   absmax   [rows, cols / 64]: fp32, or uint8 indices into code8 when absmax2 is not null (double quantization)
//   absmax2  fp32 second-level absmax of the whole tensor; block (r, c) uses
//            absmax2[((row0 + r) * full_blocks_per_row + col_block0 + c) / 256], then + offset
//   full_blocks_per_row 0: the flat layout (a width that is not a multiple of 64): element (r, c) is in block
//            g = ((row0 + r) * cols + c) / 64 of the full tensor, absmax[g - first_block], absmax2[g / 256]
//   code4    fp32 [16], code8 fp32 [256] (may be null without double quantization)
// out: [rows, cols] of `dtype`, each value code4[nibble] * absmax in fp32 (no fused multiply-add, so the values
// equal the CPU's bit for bit), then rounded to the dtype.
void LaunchDequant4(const uint8_t* packed, const void* absmax, const float* absmax2, float offset, const float* code4,
                    const float* code8, int64_t rows, int64_t cols, int64_t row0, int64_t col_block0,
                    int64_t full_blocks_per_row, int64_t first_block, void* out, int dtype, cudaStream_t stream);

}  // namespace anneal::kernels
