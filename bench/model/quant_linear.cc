// The QLoRA base linear layer: forward + input-gradient throughput and bytes of the 4-bit weight (reference:
// dequantize the whole weight, then one matmul; fused: a tile of rows at a time) against a frozen fp32
// nn.Linear of the same shape. Prints one JSON line per implementation; bench/model/quant_linear.py runs it next
// to bitsandbytes' Linear4bit and prints the table.
//
//   bench_model_quant_linear --in 2048 --out 2048 --tokens 512 --steps 5 [--device cpu|cuda] [--dtype ...]
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "trainer/model/decoder.h"
#include "trainer/model/quant4.h"

namespace {

using anneal::model::Quant4Matmul;

// Seconds per forward + backward (the input's gradient only: the base is frozen).
template <class Fn>
double Time(Fn&& fn, const torch::Tensor& x0, int64_t warmup, int64_t steps, bool cuda) {
  double seconds = 0;
  if (cuda) torch::cuda::synchronize();
  for (int64_t i = 0; i < warmup + steps; ++i) {
    torch::Tensor x = x0.detach().requires_grad_(true);
    auto t0 = std::chrono::steady_clock::now();
    fn(x).sum().backward();
    if (cuda) torch::cuda::synchronize();
    if (i >= warmup) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return seconds / steps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"4-bit linear (QLoRA base) throughput and bytes"};
  int64_t in = 2048, out = 2048, tokens = 512, steps = 5, warmup = 2;
  std::string device = "cpu", dtype = "float32";
  app.add_option("--in", in);
  app.add_option("--out", out);
  app.add_option("--tokens", tokens);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--device", device);
  app.add_option("--dtype", dtype);
  CLI11_PARSE(app, argc, argv);

  const bool cuda = device == "cuda";
  const torch::Device dev = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const torch::ScalarType dt = anneal::model::DtypeFromName(dtype);
  torch::manual_seed(0);
  const torch::Tensor w = (torch::randn({out, in}) * 0.02).to(dt);
  auto q = anneal::model::QuantizedLinearWeight::Make(w, 0, 1, 0, {});
  if (!q.ok()) {
    std::cerr << q.status().ToString() << "\n";
    return 1;
  }
  q->packed = q->packed.to(dev);
  q->absmax = q->absmax.to(dev);
  q->absmax2 = q->absmax2.to(dev);
  const torch::Tensor wd = w.to(dev);
  const torch::Tensor x0 = torch::randn({tokens, in}).to(dt).to(dev);
  const int64_t dense_bytes = w.numel() * w.element_size();
  const int64_t tile_rows = std::max<int64_t>(1, anneal::model::kQuant4TileElements / in);
  const int64_t temp_full = w.numel() * c10::elementSize(dt);
  const int64_t temp_tile = std::min(out, tile_rows) * in * c10::elementSize(dt);

  struct Row {
    std::string impl;
    int64_t weight_bytes, temporary_bytes;
    std::function<torch::Tensor(const torch::Tensor&)> fn;
  };
  const std::vector<Row> rows = {
      {"dense nn.Linear (frozen)", dense_bytes, 0,
       [&](const torch::Tensor& x) { return torch::nn::functional::linear(x, wd); }},
      {"4-bit reference", q->bytes(), temp_full,
       [&](const torch::Tensor& x) { return anneal::model::Quant4Linear(x, *q, {}, Quant4Matmul::kReference); }},
      {"4-bit fused", q->bytes(), temp_tile,
       [&](const torch::Tensor& x) { return anneal::model::Quant4Linear(x, *q, {}, Quant4Matmul::kFused); }},
  };
  {
    // The dequantization alone (the whole weight), the part of the 4-bit rows' time the dense one does not have.
    for (int64_t i = 0; i < warmup; ++i) q->Dequantize(dt);
    if (cuda) torch::cuda::synchronize();
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) q->Dequantize(dt);
    if (cuda) torch::cuda::synchronize();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / steps;
    std::cout << nlohmann::json{{"impl", "dequantize the whole weight"},
                                {"seconds", seconds},
                                {"elements_per_s", w.numel() / seconds}}
                     .dump()
              << "\n";
  }
  for (const Row& r : rows) {
    const double seconds = Time(r.fn, x0, warmup, steps, cuda);
    std::cout << nlohmann::json{{"impl", r.impl},
                                {"tokens_per_s", tokens / seconds},
                                {"weight_bytes", r.weight_bytes},
                                {"temporary_bytes", r.temporary_bytes},
                                {"threads", torch::get_num_threads()}}
                     .dump()
              << "\n";
  }
  return 0;
}
