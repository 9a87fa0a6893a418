#include "trainer/model/quant4.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>

#include <algorithm>
#include <map>
#include <vector>

#include "trainer/model/tiled_dequant.h"

#ifdef ANNEAL_WITH_CUDA
#include <c10/cuda/CUDAStream.h>

#include <mutex>

#include "trainer/kernels/dequant4_cuda.h"
#endif

namespace anneal::model {
namespace {

// bitsandbytes.functional.get_4bit_type("nf4") and ("fp4") as fp32 (fp4: its table divided by 12).
constexpr std::array<float, 16> kNf4 = {-0x1.0p+0f,       -0x1.6473620p-1f, -0x1.0cd6600p-1f, -0x1.9465400p-2f,
                                        -0x1.23449a0p-2f, -0x1.7a6a7e0p-3f, -0x1.74f0e20p-4f, 0x0.0p+0f,
                                        0x1.45f5fe0p-4f,  0x1.4995c60p-3f,  0x1.f809ba0p-3f,  0x1.5a06740p-2f,
                                        0x1.c349700p-2f,  0x1.200f560p-1f,  0x1.7227660p-1f,  0x1.0p+0f};
constexpr std::array<float, 16> kFp4 = {0x0.0p+0f,        0x1.5555560p-8f,  0x1.5555560p-1f,  0x1.0p+0f,
                                        0x1.5555560p-2f,  0x1.0p-1f,        0x1.5555560p-3f,  0x1.0p-2f,
                                        0x0.0p+0f,        -0x1.5555560p-8f, -0x1.5555560p-1f, -0x1.0p+0f,
                                        -0x1.5555560p-2f, -0x1.0p-1f,       -0x1.5555560p-3f, -0x1.0p-2f};
// The codes in ascending order, as bnb's quantizer sorts them (torch.argsort of the fp4 table: index 0 before 8).
constexpr std::array<int64_t, 16> kFp4Order = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

// bitsandbytes.functional.create_dynamic_map() (signed, 7 exponent bits, 8 bits).
constexpr std::array<float, 256> kDynamic8 = {
    -0x1.fc6666p-1f,  -0x1.f53334p-1f,  -0x1.ee0000p-1f,  -0x1.e6ccccp-1f,  -0x1.df999ap-1f,  -0x1.d86666p-1f,
    -0x1.d13334p-1f,  -0x1.ca0000p-1f,  -0x1.c2ccccp-1f,  -0x1.bb999ap-1f,  -0x1.b46666p-1f,  -0x1.ad3334p-1f,
    -0x1.a60000p-1f,  -0x1.9eccccp-1f,  -0x1.97999ap-1f,  -0x1.906666p-1f,  -0x1.893334p-1f,  -0x1.820000p-1f,
    -0x1.7accccp-1f,  -0x1.73999ap-1f,  -0x1.6c6668p-1f,  -0x1.653334p-1f,  -0x1.5e0000p-1f,  -0x1.56ccccp-1f,
    -0x1.4f999ap-1f,  -0x1.486668p-1f,  -0x1.413334p-1f,  -0x1.3a0000p-1f,  -0x1.32ccccp-1f,  -0x1.2b999ap-1f,
    -0x1.246668p-1f,  -0x1.1d3334p-1f,  -0x1.160000p-1f,  -0x1.0eccccp-1f,  -0x1.079998p-1f,  -0x1.006666p-1f,
    -0x1.f26664p-2f,  -0x1.e40000p-2f,  -0x1.d59998p-2f,  -0x1.c73334p-2f,  -0x1.b8ccccp-2f,  -0x1.aa6666p-2f,
    -0x1.9c0000p-2f,  -0x1.8d9998p-2f,  -0x1.7f3334p-2f,  -0x1.70ccccp-2f,  -0x1.626666p-2f,  -0x1.540000p-2f,
    -0x1.459998p-2f,  -0x1.373334p-2f,  -0x1.28ccccp-2f,  -0x1.1a6668p-2f,  -0x1.0c0000p-2f,  -0x1.fb3332p-3f,
    -0x1.de6666p-3f,  -0x1.c1999ap-3f,  -0x1.a4ccccp-3f,  -0x1.880000p-3f,  -0x1.6b3334p-3f,  -0x1.4e6666p-3f,
    -0x1.31999ap-3f,  -0x1.14ccccp-3f,  -0x1.f00000p-4f,  -0x1.b66668p-4f,  -0x1.93d70ap-4f,  -0x1.8851eep-4f,
    -0x1.7ccccep-4f,  -0x1.7147aep-4f,  -0x1.65c290p-4f,  -0x1.5a3d70p-4f,  -0x1.4eb854p-4f,  -0x1.433334p-4f,
    -0x1.37ae14p-4f,  -0x1.2c28f6p-4f,  -0x1.20a3d6p-4f,  -0x1.151ebap-4f,  -0x1.09999ap-4f,  -0x1.fc28f6p-5f,
    -0x1.e51ebap-5f,  -0x1.ce147ap-5f,  -0x1.b70a3ep-5f,  -0x1.a00000p-5f,  -0x1.88f5c2p-5f,  -0x1.71eb86p-5f,
    -0x1.5ae146p-5f,  -0x1.43d70ap-5f,  -0x1.2ccccep-5f,  -0x1.15c290p-5f,  -0x1.fd70a4p-6f,  -0x1.cf5c2ap-6f,
    -0x1.a147aep-6f,  -0x1.733334p-6f,  -0x1.451ebap-6f,  -0x1.170a3ep-6f,  -0x1.d1eb86p-7f,  -0x1.75c290p-7f,
    -0x1.3e76c8p-7f,  -0x1.2c0830p-7f,  -0x1.19999ap-7f,  -0x1.072b02p-7f,  -0x1.e978d4p-8f,  -0x1.c49ba6p-8f,
    -0x1.9fbe76p-8f,  -0x1.7ae148p-8f,  -0x1.56041ap-8f,  -0x1.3126e8p-8f,  -0x1.0c49bap-8f,  -0x1.ced914p-9f,
    -0x1.851eb8p-9f,  -0x1.3b645ap-9f,  -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f,
    -0x1.78d500p-11f, -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f, -0x1.b43528p-19f,
    -0x1.27476ep-21f, 0x0.0p+0f,        0x1.27476ep-21f,  0x1.b43528p-19f,  0x1.040bfep-17f,  0x1.64840cp-16f,
    0x1.6f0068p-15f,  0x1.15df66p-14f,  0x1.743e96p-14f,  0x1.47ae16p-13f,  0x1.19ce0ap-12f,  0x1.8fc506p-12f,
    0x1.02de02p-11f,  0x1.3dd982p-11f,  0x1.78d500p-11f,  0x1.b3d07cp-11f,  0x1.eecbfep-11f,  0x1.4fdf3ap-10f,
    0x1.e353f8p-10f,  0x1.3b645ap-9f,   0x1.851eb8p-9f,   0x1.ced914p-9f,   0x1.0c49bap-8f,   0x1.3126e8p-8f,
    0x1.56041ap-8f,   0x1.7ae148p-8f,   0x1.9fbe76p-8f,   0x1.c49ba6p-8f,   0x1.e978d4p-8f,   0x1.072b02p-7f,
    0x1.19999ap-7f,   0x1.2c0830p-7f,   0x1.3e76c8p-7f,   0x1.75c290p-7f,   0x1.d1eb86p-7f,   0x1.170a3ep-6f,
    0x1.451ebap-6f,   0x1.733334p-6f,   0x1.a147aep-6f,   0x1.cf5c2ap-6f,   0x1.fd70a4p-6f,   0x1.15c290p-5f,
    0x1.2ccccep-5f,   0x1.43d70ap-5f,   0x1.5ae146p-5f,   0x1.71eb86p-5f,   0x1.88f5c2p-5f,   0x1.a00000p-5f,
    0x1.b70a3ep-5f,   0x1.ce147ap-5f,   0x1.e51ebap-5f,   0x1.fc28f6p-5f,   0x1.09999ap-4f,   0x1.151ebap-4f,
    0x1.20a3d6p-4f,   0x1.2c28f6p-4f,   0x1.37ae14p-4f,   0x1.433334p-4f,   0x1.4eb854p-4f,   0x1.5a3d70p-4f,
    0x1.65c290p-4f,   0x1.7147aep-4f,   0x1.7ccccep-4f,   0x1.8851eep-4f,   0x1.93d70ap-4f,   0x1.b66668p-4f,
    0x1.f00000p-4f,   0x1.14ccccp-3f,   0x1.31999ap-3f,   0x1.4e6666p-3f,   0x1.6b3334p-3f,   0x1.880000p-3f,
    0x1.a4ccccp-3f,   0x1.c1999ap-3f,   0x1.de6666p-3f,   0x1.fb3332p-3f,   0x1.0c0000p-2f,   0x1.1a6668p-2f,
    0x1.28ccccp-2f,   0x1.373334p-2f,   0x1.459998p-2f,   0x1.540000p-2f,   0x1.626666p-2f,   0x1.70ccccp-2f,
    0x1.7f3334p-2f,   0x1.8d9998p-2f,   0x1.9c0000p-2f,   0x1.aa6666p-2f,   0x1.b8ccccp-2f,   0x1.c73334p-2f,
    0x1.d59998p-2f,   0x1.e40000p-2f,   0x1.f26664p-2f,   0x1.006666p-1f,   0x1.079998p-1f,   0x1.0eccccp-1f,
    0x1.160000p-1f,   0x1.1d3334p-1f,   0x1.246668p-1f,   0x1.2b999ap-1f,   0x1.32ccccp-1f,   0x1.3a0000p-1f,
    0x1.413334p-1f,   0x1.486668p-1f,   0x1.4f999ap-1f,   0x1.56ccccp-1f,   0x1.5e0000p-1f,   0x1.653334p-1f,
    0x1.6c6668p-1f,   0x1.73999ap-1f,   0x1.7accccp-1f,   0x1.820000p-1f,   0x1.893334p-1f,   0x1.906666p-1f,
    0x1.97999ap-1f,   0x1.9eccccp-1f,   0x1.a60000p-1f,   0x1.ad3334p-1f,   0x1.b46666p-1f,   0x1.bb999ap-1f,
    0x1.c2ccccp-1f,   0x1.ca0000p-1f,   0x1.d13334p-1f,   0x1.d86666p-1f,   0x1.df999ap-1f,   0x1.e6ccccp-1f,
    0x1.ee0000p-1f,   0x1.f53334p-1f,   0x1.fc6666p-1f,   0x1.000000p+0f,
};

torch::Tensor CodeTensor(const float* values, int64_t n, const torch::Device& device) {
  return torch::from_blob(const_cast<float*>(values), {n}, torch::kFloat32)
      .to(device, /*non_blocking=*/false,
          /*copy=*/true);
}

// The quantizer's midpoints over the sorted codebook and the code index of each bucket.
struct Buckets {
  torch::Tensor bounds;  // fp32 [15]
  torch::Tensor order;   // int64 [16]: bucket -> code index
};
Buckets BucketsOf(Quant4Type type, const torch::Device& device) {
  const auto& code = Quant4Code(type);
  std::array<int64_t, 16> order{};
  for (int64_t i = 0; i < 16; ++i) order[i] = type == Quant4Type::kFp4 ? kFp4Order[i] : i;
  torch::Tensor order_t = torch::tensor(std::vector<int64_t>(order.begin(), order.end()), torch::kInt64).to(device);
  torch::Tensor sorted = CodeTensor(code.data(), 16, device).index_select(0, order_t);
  // (code[:-1] + code[1:]) / 2, in fp32 as bnb computes it
  torch::Tensor bounds = (sorted.narrow(0, 0, 15) + sorted.narrow(0, 1, 15)) / 2;
  return {bounds, order_t};
}

}  // namespace

StatusOr<Quant4Type> Quant4TypeFromName(const std::string& name) {
  if (name == "nf4") return Quant4Type::kNf4;
  if (name == "fp4") return Quant4Type::kFp4;
  return InvalidArgumentError("quantization_type: expected nf4 or fp4, got '" + name + "'");
}

const char* Quant4TypeName(Quant4Type type) {
  return type == Quant4Type::kNf4 ? "nf4" : "fp4";
}

const std::array<float, 16>& Quant4Code(Quant4Type type) {
  return type == Quant4Type::kNf4 ? kNf4 : kFp4;
}
const std::array<float, 256>& DynamicCode8() {
  return kDynamic8;
}

namespace {

// bnb 0.50's CPU blockwise quantizer (csrc/cpu_ops.cpp): a 65536-entry table from [-1, 1] to the code whose
// midpoints bracket each table point, indexed by (v / absmax + 1) / 2 * 65535 rounded. Built as bnb builds it.
const std::vector<uint8_t>& DynamicLut() {
  static const std::vector<uint8_t> lut = [] {
    constexpr int kLutSize = 65536;
    std::array<float, 255> midpoints{};
    for (int i = 0; i < 255; ++i) midpoints[i] = 0.5f * (kDynamic8[i] + kDynamic8[i + 1]);
    std::vector<uint8_t> table(kLutSize);
    int code = 0;
    for (int i = 0; i < kLutSize; ++i) {
      const float val = -1.0f + (2.0f * static_cast<float>(i)) / static_cast<float>(kLutSize - 1);
      while (code < 255 && midpoints[code] < val) ++code;
      table[i] = static_cast<uint8_t>(code);
    }
    return table;
  }();
  return lut;
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> QuantizeBlockwise8(const torch::Tensor& a, int64_t blocksize) {
  torch::NoGradGuard no_grad;
  const torch::Tensor flat = a.reshape(-1).to(torch::kFloat32);
  const int64_t n = flat.numel(), blocks = (n + blocksize - 1) / blocksize;
  // [blocks, blocksize], the last block padded with zeros (they never raise a block's absmax).
  torch::Tensor padded = torch::zeros({blocks * blocksize}, flat.options());
  padded.narrow(0, 0, n).copy_(flat);
  padded = padded.view({blocks, blocksize});
  torch::Tensor absmax = std::get<0>(padded.abs().max(1));  // [blocks]
  // v * (1 / absmax) -> table index (v + 1) * 0.5 * 65535 + 0.5, truncated; an all-zero block is code 0.
  torch::Tensor normed = (padded * absmax.reciprocal().unsqueeze(1)).clamp(-1, 1);
  torch::Tensor slot = ((normed + 1) * 0.5 * 65535 + 0.5).to(torch::kInt64);
  slot = slot.masked_fill((absmax == 0).unsqueeze(1), 0).reshape(-1).narrow(0, 0, n);
  const std::vector<uint8_t>& lut = DynamicLut();
  torch::Tensor table =
      torch::from_blob(const_cast<uint8_t*>(lut.data()), {static_cast<int64_t>(lut.size())}, torch::kUInt8)
          .to(flat.device(), false, true);
  torch::Tensor idx = table.index_select(0, slot);
  idx.masked_fill_((absmax == 0).repeat_interleave(blocksize).narrow(0, 0, n), 0);
  return {idx, absmax};
}

Quant4Tensor Quantize4bit(const torch::Tensor& w, const Quant4Options& options) {
  torch::NoGradGuard no_grad;
  Quant4Tensor q;
  q.shape = w.sizes().vec();
  q.options = options;
  const torch::Tensor flat = w.reshape(-1).to(torch::kFloat32);
  const int64_t n = flat.numel(), rem = n % kQuant4Block, full = n - rem, blocks = full / kQuant4Block;
  // As bnb's quantize_4bit: w * (1 / absmax) clamped to [-1, 1]; a partial last block divides.
  torch::Tensor body = flat.narrow(0, 0, full).view({blocks, kQuant4Block});
  torch::Tensor absmax = std::get<0>(body.abs().max(1));
  torch::Tensor scaled = (body * absmax.clamp_min(1e-38).reciprocal().view({-1, 1})).clamp(-1, 1).reshape(-1);
  if (rem > 0) {
    torch::Tensor tail = flat.narrow(0, full, rem);
    torch::Tensor am = tail.abs().max().clamp_min(1e-38);
    absmax = torch::cat({absmax, am.unsqueeze(0)});
    scaled = torch::cat({scaled, (tail / am).clamp(-1, 1)});
  }
  if (scaled.numel() % 2 != 0) scaled = torch::cat({scaled, torch::zeros({1}, scaled.options())});
  const Buckets buckets = BucketsOf(options.type, flat.device());
  torch::Tensor idx = torch::bucketize(scaled, buckets.bounds, /*out_int32=*/false, /*right=*/false);
  idx = buckets.order.index_select(0, idx).to(torch::kUInt8);
  // element 2i in the high nibble, 2i + 1 in the low one
  q.packed = idx.slice(0, 0, idx.numel(), 2).bitwise_left_shift(4).bitwise_or(idx.slice(0, 1, idx.numel(), 2));
  if (options.double_quant) {
    torch::Tensor offset = absmax.mean();
    q.offset = offset.item<float>();
    auto [qabs, absmax2] = QuantizeBlockwise8(absmax - offset, kQuant8Block);
    q.absmax = qabs;
    q.absmax2 = absmax2;
  } else {
    q.absmax = absmax;
  }
  return q;
}

torch::Tensor BlockAbsmax(const Quant4Tensor& q) {
  torch::NoGradGuard no_grad;
  if (!q.options.double_quant) return q.absmax;
  const int64_t blocks = q.absmax.numel();
  const torch::Tensor code = CodeTensor(kDynamic8.data(), 256, q.absmax.device());
  torch::Tensor scale = q.absmax2.repeat_interleave(kQuant8Block).narrow(0, 0, blocks);
  return code.index_select(0, q.absmax.to(torch::kInt64)) * scale + q.offset;
}

torch::Tensor Dequantize4bit(const Quant4Tensor& q, torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  int64_t n = 1;
  for (int64_t d : q.shape) n *= d;
  torch::Tensor idx = torch::stack({q.packed.bitwise_right_shift(4), q.packed.bitwise_and(15)}, 1).reshape(-1);
  const torch::Tensor code = CodeTensor(Quant4Code(q.options.type).data(), 16, q.packed.device());
  torch::Tensor values = code.index_select(0, idx.narrow(0, 0, n).to(torch::kInt64));
  torch::Tensor scale = BlockAbsmax(q).repeat_interleave(kQuant4Block).narrow(0, 0, n);
  return (values * scale).to(dtype).view(q.shape);
}

StatusOr<QuantizedLinearWeight> QuantizedLinearWeight::Make(const torch::Tensor& full, int64_t dim, int64_t shards,
                                                            int64_t index, const Quant4Options& options) {
  if (full.dim() != 2) return InvalidArgumentError("4-bit quantization: expected a 2-D linear weight");
  const int64_t out = full.size(0), in = full.size(1);
  const bool column_pieces = shards > 1 && dim == 1;
  const int64_t piece_in = column_pieces ? in / shards : in;
  // Blocks follow rows when the width is a multiple of 64; otherwise they run across rows (the flat layout),
  // which a piece of whole rows can keep but a piece of columns cannot.
  if (in % 2 != 0 || (column_pieces && (in % kQuant4Block != 0 || piece_in % kQuant4Block != 0))) {
    return InvalidArgumentError(
        c10::str("4-bit quantization needs an even input width, and under tensor parallelism the input width of the "
                 "row-parallel layers (o_proj, down_proj) per rank to be a multiple of ",
                 kQuant4Block, " (bitsandbytes' block), got ", piece_in, " of ", in,
                 ": use another tensor_model_parallel_size, or remove quantization_bit"));
  }
  QuantizedLinearWeight w;
  w.options = options;
  Quant4Tensor q = Quantize4bit(full, options);
  torch::Tensor packed = q.packed.view({out, in / 2});
  torch::Tensor absmax;
  if (in % kQuant4Block == 0) {
    absmax = q.absmax.view({out, in / kQuant4Block});
    w.full_blocks_per_row = in / kQuant4Block;
    if (shards > 1) {
      packed = packed.chunk(shards, dim)[index];
      absmax = absmax.chunk(shards, dim)[index];
      if (dim == 0) {
        w.row0 = index * packed.size(0);
      } else {
        w.col_block0 = index * absmax.size(1);
      }
    }
  } else {
    // Flat: the piece's rows [row0, row0 + rows) cover the full tensor's blocks [row0 * in / 64, ...).
    if (shards > 1) {
      packed = packed.chunk(shards, 0)[index];
      w.row0 = index * packed.size(0);
    }
    const int64_t first = w.row0 * in / kQuant4Block;
    const int64_t last = ((w.row0 + packed.size(0)) * in + kQuant4Block - 1) / kQuant4Block;
    absmax = q.absmax.narrow(0, first, last - first);
  }
  // Copies, so the rest of the full tensor's storage is freed.
  w.packed = packed.clone(at::MemoryFormat::Contiguous);
  w.absmax = absmax.clone(at::MemoryFormat::Contiguous);
  w.rows = w.packed.size(0);
  w.cols = w.packed.size(1) * 2;
  if (options.double_quant) {
    w.absmax2 = q.absmax2;
    w.offset = q.offset;
  }
  return w;
}

#ifdef ANNEAL_WITH_CUDA
namespace {

// The codebooks on a CUDA device, copied there once.
const torch::Tensor& DeviceCode(const float* values, int64_t n, const torch::Device& device) {
  static std::mutex mu;
  static std::map<std::pair<const float*, int>, torch::Tensor> cache;
  std::lock_guard<std::mutex> lock(mu);
  torch::Tensor& t = cache[{values, device.index()}];
  if (!t.defined()) t = CodeTensor(values, n, device);
  return t;
}

// DequantizeRows on the GPU: the kernel of trainer/kernels/dequant4_cuda.cu, bit-equal to the ATen version.
torch::Tensor DequantizeRowsCuda(const QuantizedLinearWeight& w, int64_t r0, int64_t r1, torch::ScalarType dtype) {
  const int kind = dtype == torch::kFloat32    ? kernels::kDequant4F32
                   : dtype == torch::kBFloat16 ? kernels::kDequant4BF16
                                               : kernels::kDequant4F16;
  const torch::Device device = w.packed.device();
  torch::Tensor out = torch::empty({r1 - r0, w.cols}, w.packed.options().dtype(dtype));
  const int64_t col_blocks = w.cols / kQuant4Block;
  // The flat layout (width not a multiple of 64) passes its absmax whole: the kernel finds each block from the
  // element's index in the full tensor.
  const int64_t skip = w.absmax.dim() == 1 ? 0 : r0 * col_blocks;
  const auto* absmax = static_cast<const uint8_t*>(w.absmax.data_ptr()) + skip * w.absmax.element_size();
  kernels::LaunchDequant4(w.packed.data_ptr<uint8_t>() + r0 * (w.cols / 2), absmax,
                          w.options.double_quant ? w.absmax2.data_ptr<float>() : nullptr, w.offset,
                          DeviceCode(Quant4Code(w.options.type).data(), 16, device).data_ptr<float>(),
                          DeviceCode(kDynamic8.data(), 256, device).data_ptr<float>(), r1 - r0, w.cols, w.row0 + r0,
                          w.col_block0, w.absmax.dim() == 1 ? 0 : w.full_blocks_per_row, w.row0 * w.cols / kQuant4Block,
                          out.data_ptr(), kind, c10::cuda::getCurrentCUDAStream(device.index()).stream());
  return out;
}

}  // namespace
#endif

namespace {

// DequantizeRows on the CPU for fp32 / bf16 / fp16: one pass over the bytes (rows in parallel), the same fp32
// products and sums as the ATen version (no fused multiply-add: GCC may contract a * b + c otherwise).
template <typename T>
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
void DequantizeRowsCpu(const QuantizedLinearWeight& w, int64_t r0, int64_t r1, T* out) {
  const std::array<float, 16>& code = Quant4Code(w.options.type);
  const int64_t bytes_per_row = w.cols / 2;
  const uint8_t* packed = w.packed.data_ptr<uint8_t>();
  const bool double_quant = w.options.double_quant, flat = w.absmax.dim() == 1;
  const uint8_t* absmax8 = double_quant ? w.absmax.data_ptr<uint8_t>() : nullptr;
  const float* absmax32 = double_quant ? nullptr : w.absmax.data_ptr<float>();
  const float* absmax2 = double_quant ? w.absmax2.data_ptr<float>() : nullptr;
  // The fp32 absmax of a block: `local` indexes this piece's absmax, `global` the full tensor's blocks.
  auto scale_of = [&](int64_t local, int64_t global) {
    if (!double_quant) return absmax32[local];
    const float product = kDynamic8[absmax8[local]] * absmax2[global / kQuant8Block];
    return product + w.offset;
  };
  at::parallel_for(r0, r1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* src = packed + r * bytes_per_row;
      T* dst = out + (r - r0) * w.cols;
      if (flat) {
        // Blocks run across rows: element (r, c) is element (row0 + r) * cols + c of the full tensor.
        const int64_t first = w.row0 * w.cols / kQuant4Block, start = (w.row0 + r) * w.cols;
        int64_t block = -1;
        float scale = 0.0f;
        for (int64_t k = 0; k < bytes_per_row; ++k) {
          const int64_t b_global = (start + 2 * k) / kQuant4Block;  // even index: both nibbles in one block
          if (b_global != block) {
            block = b_global;
            scale = scale_of(block - first, block);
          }
          dst[2 * k] = static_cast<T>(code[src[k] >> 4] * scale);
          dst[2 * k + 1] = static_cast<T>(code[src[k] & 15] * scale);
        }
        continue;
      }
      const int64_t col_blocks = w.cols / kQuant4Block;
      for (int64_t c = 0; c < col_blocks; ++c) {
        const float scale = scale_of(r * col_blocks + c, (w.row0 + r) * w.full_blocks_per_row + w.col_block0 + c);
        for (int64_t k = 0; k < kQuant4Block / 2; ++k) {
          const uint8_t b = src[c * (kQuant4Block / 2) + k];
          dst[c * kQuant4Block + 2 * k] = static_cast<T>(code[b >> 4] * scale);
          dst[c * kQuant4Block + 2 * k + 1] = static_cast<T>(code[b & 15] * scale);
        }
      }
    }
  });
}

}  // namespace

torch::Tensor QuantizedLinearWeight::DequantizeRows(int64_t r0, int64_t r1, torch::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
#ifdef ANNEAL_WITH_CUDA
  if (packed.is_cuda() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kHalf)) {
    return DequantizeRowsCuda(*this, r0, r1, dtype);
  }
#endif
  if (packed.is_cpu() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kHalf)) {
    torch::Tensor out = torch::empty({r1 - r0, cols}, torch::TensorOptions().dtype(dtype));
    if (dtype == torch::kFloat32) {
      DequantizeRowsCpu<float>(*this, r0, r1, out.data_ptr<float>());
    } else if (dtype == torch::kBFloat16) {
      DequantizeRowsCpu<c10::BFloat16>(*this, r0, r1, out.data_ptr<c10::BFloat16>());
    } else {
      DequantizeRowsCpu<c10::Half>(*this, r0, r1, out.data_ptr<c10::Half>());
    }
    return out;
  }
  const int64_t n_rows = r1 - r0, col_blocks = cols / kQuant4Block;
  const torch::Device device = packed.device();
  torch::Tensor p = packed.narrow(0, r0, n_rows);  // [R, cols / 2]
  torch::Tensor idx = torch::stack({p.bitwise_right_shift(4), p.bitwise_and(15)}, 2).reshape({-1});
  const torch::Tensor code = CodeTensor(Quant4Code(options.type).data(), 16, device);
  if (absmax.dim() == 1) {
    // Flat layout: each element's block by its index in the full tensor.
    auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
    torch::Tensor global = torch::arange((row0 + r0) * cols, (row0 + r1) * cols, long_opts).div(kQuant4Block, "floor");
    torch::Tensor local = global - row0 * cols / kQuant4Block;
    torch::Tensor scale = absmax.index_select(0, local);
    if (options.double_quant) {
      const torch::Tensor code8 = CodeTensor(kDynamic8.data(), 256, device);
      scale =
          code8.index_select(0, scale.to(torch::kInt64)) * absmax2.index_select(0, global.div(kQuant8Block, "floor")) +
          offset;
    }
    return (code.index_select(0, idx.to(torch::kInt64)) * scale).view({n_rows, cols}).to(dtype);
  }
  torch::Tensor values = code.index_select(0, idx.to(torch::kInt64)).view({n_rows, col_blocks, kQuant4Block});
  torch::Tensor scale = absmax.narrow(0, r0, n_rows);  // [R, cols / 64]
  if (options.double_quant) {
    // Second-level block of each first-level block, by its place in the full tensor's flat block order.
    auto long_opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
    torch::Tensor full_row = torch::arange(row0 + r0, row0 + r1, long_opts).unsqueeze(1);
    torch::Tensor full_col = torch::arange(col_block0, col_block0 + col_blocks, long_opts).unsqueeze(0);
    torch::Tensor group = (full_row * full_blocks_per_row + full_col).div(kQuant8Block, "floor");
    const torch::Tensor code8 = CodeTensor(kDynamic8.data(), 256, device);
    scale = code8.index_select(0, scale.reshape(-1).to(torch::kInt64)).view({n_rows, col_blocks}) *
                absmax2.index_select(0, group.reshape(-1)).view({n_rows, col_blocks}) +
            offset;
  }
  return (values * scale.unsqueeze(2)).view({n_rows, cols}).to(dtype);
}

int64_t QuantizedLinearWeight::bytes() const {
  int64_t b = packed.numel() * packed.element_size() + absmax.numel() * absmax.element_size();
  if (absmax2.defined()) b += absmax2.numel() * absmax2.element_size();
  return b;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t TileRows(const QuantizedLinearWeight& w) {
  return std::max<int64_t>(1, kQuant4TileElements / std::max<int64_t>(w.cols, 1));
}

const QuantizedLinearWeight& WeightOf(int64_t address) {
  return *reinterpret_cast<const QuantizedLinearWeight*>(address);
}

struct Quant4LinearFn : public torch::autograd::Function<Quant4LinearFn> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor x, int64_t weight) {
    ctx->saved_data["weight"] = weight;
    const QuantizedLinearWeight& w = WeightOf(weight);
    std::vector<int64_t> out_shape = x.sizes().vec();
    out_shape.back() = w.rows;
    return TiledLinear(x.reshape({-1, w.cols}), w, torch::Tensor(), TileRows(w)).view(out_shape);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const QuantizedLinearWeight& w = WeightOf(ctx->saved_data["weight"].toInt());
    std::vector<int64_t> in_shape = grad[0].sizes().vec();
    in_shape.back() = w.cols;
    torch::Tensor g = grad[0].contiguous().reshape({-1, w.rows});
    return {TiledInputGrad(g, w, TileRows(w)).view(in_shape), at::Tensor()};
  }
};

}  // namespace

torch::Tensor Quant4Linear(const torch::Tensor& x, const QuantizedLinearWeight& w, const torch::Tensor& bias,
                           Quant4Matmul how) {
  if (how == Quant4Matmul::kReference) {
    return torch::nn::functional::linear(x, w.Dequantize(x.scalar_type()), bias);
  }
  torch::Tensor y = Quant4LinearFn::apply(x.contiguous(), reinterpret_cast<int64_t>(&w));
  return bias.defined() ? y + bias : y;
}

}  // namespace anneal::model
