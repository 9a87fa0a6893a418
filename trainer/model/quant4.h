// 4-bit weights as bitsandbytes stores them (QLoRA's frozen base): quantization, dequantization, and the
// dequantize-and-matmul of a quantized linear layer.
//
// The format is bitsandbytes.functional.quantize_4bit with blocksize 64, byte for byte:
//   - the tensor is flattened (row-major) and cut into blocks of 64; absmax = max |w| of each block;
//   - each w / absmax (as w * (1 / absmax), clamped to [-1, 1]) becomes the index of the nearest value of the
//     16-entry codebook (NF4 or FP4; ties to the lower midpoint, as bnb's torch.bucketize over midpoints);
//   - two indices per byte, element 2i in the high nibble and 2i + 1 in the low one;
//   - double quantization (bnb's compress_statistics, LLaMA-Factory's double_quantization): offset = mean of the
//     fp32 absmax; absmax - offset is quantized 8-bit in blocks of 256 with bnb's dynamic map, as bnb 0.50's CPU
//     quantizer does it: v * (1 / absmax2) looked up in a 65536-entry table of the nearest code (bnb's CUDA
//     kernel searches the code exactly instead, so within 1/65535 of a midpoint the two can pick neighbours).
//   Dequantization: absmax = code8[q] * absmax2 + offset (fp32), w = code4[nibble] * absmax (fp32), then cast.
//
// A Linear's weight [out, in] (or its tensor-parallel piece) is kept as QuantizedLinearWeight: the whole HF tensor
// quantized as above, of which this rank keeps its rows or columns, so every layout dequantizes to exactly the
// single-process values. Its matmul, Quant4Linear, has two implementations: a plain reference (dequantize the
// whole weight to the input's dtype, then one matmul) and a fused one (rows of W dequantized a tile at a time
// inside the matmul, forward and backward; no full-weight temporary). Both give the input a gradient through the
// dequantized weight; the weight gets none. On a CUDA device the tiles are dequantized by the kernel of
// trainer/kernels/dequant4_cuda.cu (bit-equal to the CPU values) and multiplied by cuBLAS.
//
// Thread-safety: plain functions; a QuantizedLinearWeight is read-only after Make.
//
// Example:
//   Quant4Tensor q = Quantize4bit(w, {.type = Quant4Type::kNf4, .double_quant = true});
//   torch::Tensor back = Dequantize4bit(q, torch::kFloat32);          // w's shape
//   auto qw = QuantizedLinearWeight::Make(w, /*dim=*/0, /*shards=*/1, /*index=*/0, {});
//   torch::Tensor y = Quant4Linear(x, *qw, {}, Quant4Matmul::kFused);  // x [.., in] -> [.., out]
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::model {

enum class Quant4Type { kNf4, kFp4 };

struct Quant4Options {
  Quant4Type type = Quant4Type::kNf4;
  bool double_quant = true;
};

inline constexpr int64_t kQuant4Block = 64;   // weights per absmax (bnb's default blocksize)
inline constexpr int64_t kQuant8Block = 256;  // absmax values per second-level absmax (double quantization)

// "nf4" / "fp4" -> the type; INVALID_ARGUMENT otherwise.
StatusOr<Quant4Type> Quant4TypeFromName(const std::string& name);
const char* Quant4TypeName(Quant4Type type);

// bitsandbytes' codebooks: get_4bit_type("nf4" | "fp4") and create_dynamic_map() (signed, 256 values, sorted).
const std::array<float, 16>& Quant4Code(Quant4Type type);
const std::array<float, 256>& DynamicCode8();

// A tensor in bnb's quantize_4bit layout (any shape; the last block may be partial).
struct Quant4Tensor {
  torch::Tensor packed;   // uint8 [ceil(n / 2)]
  torch::Tensor absmax;   // fp32 [blocks]; with double quantization uint8 [blocks] (indices into DynamicCode8)
  torch::Tensor absmax2;  // fp32 [ceil(blocks / 256)] (double quantization only)
  float offset = 0.0f;    // mean of the fp32 absmax (double quantization only)
  std::vector<int64_t> shape;
  Quant4Options options;
};

// w: fp32, bf16 or fp16 (quantized from its fp32 values), CPU or CUDA.
Quant4Tensor Quantize4bit(const torch::Tensor& w, const Quant4Options& options);
// The fp32 absmax of every 64-block (double quantization undone): [blocks]
torch::Tensor BlockAbsmax(const Quant4Tensor& q);
// The dequantized tensor in q.shape, computed in fp32 and cast to `dtype`.
torch::Tensor Dequantize4bit(const Quant4Tensor& q, torch::ScalarType dtype);

// bnb's quantize_blockwise with the dynamic map as its CPU kernel computes it (the 65536-entry table above):
// a [n] fp32 -> indices uint8 [n], absmax fp32 [ceil(n / blocksize)].
std::pair<torch::Tensor, torch::Tensor> QuantizeBlockwise8(const torch::Tensor& a, int64_t blocksize);

// The 4-bit weight of one linear layer: this rank's piece [rows, cols] of the full [out, in] tensor (the full
// tensor cut into `shards` equal pieces along `dim`, piece `index`). Stored row-major: packed uint8
// [rows, cols / 2], absmax (uint8 with double quantization, else fp32) and the whole tensor's second-level absmax
// (1 / 16384 of the elements). When `in` is a multiple of 64 the blocks follow the rows: absmax [rows, cols / 64].
// Otherwise they run across rows as bnb's flat blocks do (the flat layout): absmax is 1-D, the full tensor's blocks
// from the one holding element row0 * cols to the one holding the piece's last element.
class QuantizedLinearWeight {
 public:
  // INVALID_ARGUMENT when `full` is not 2-D, `in` is odd, or a piece of columns (dim 1) is not a multiple of 64
  // wide (nor `in`): whole rows keep bnb's flat blocks, columns cannot.
  static StatusOr<QuantizedLinearWeight> Make(const torch::Tensor& full, int64_t dim, int64_t shards, int64_t index,
                                              const Quant4Options& options);

  // Rows [r0, r1) of the dequantized piece: [r1 - r0, cols] in `dtype`.
  torch::Tensor DequantizeRows(int64_t r0, int64_t r1, torch::ScalarType dtype) const;
  torch::Tensor Dequantize(torch::ScalarType dtype) const { return DequantizeRows(0, rows, dtype); }
  // Bytes held (packed weights and the statistics).
  int64_t bytes() const;

  int64_t rows = 0, cols = 0;
  Quant4Options options;
  torch::Tensor packed;   // uint8 [rows, cols / 2]
  torch::Tensor absmax;   // [rows, cols / 64]
  torch::Tensor absmax2;  // fp32 [ceil(full blocks / 256)] (double quantization only)
  float offset = 0.0f;
  // Where the piece's blocks sit in the full tensor's flat block order (for absmax2): block (r, c) of the piece
  // is full block (row0 + r) * full_blocks_per_row + col_block0 + c (row-aligned blocks; the flat layout uses row0).
  int64_t row0 = 0, col_block0 = 0, full_blocks_per_row = 0;
};

enum class Quant4Matmul { kReference, kFused };

// y = x W^T + bias with W dequantized to x's dtype: x [.., cols] -> [.., rows]. Differentiable in x and bias.
// kFused dequantizes kQuant4TileElements of W at a time (forward and backward); kReference all of it at once.
// `w` must outlive the autograd graph of the result.
inline constexpr int64_t kQuant4TileElements = int64_t{1} << 20;
torch::Tensor Quant4Linear(const torch::Tensor& x, const QuantizedLinearWeight& w, const torch::Tensor& bias,
                           Quant4Matmul how);

}  // namespace anneal::model
