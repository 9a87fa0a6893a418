// Forward + backward throughput of the decoder: prints one JSON line {"tokens_per_s": ..., ...}.
// Driven by bench/model/run.py, which runs HF transformers on the same model and threads and prints the table.
//
//   bench_model_fwd_bwd --model DIR --batch B --seq T --steps N [--warmup W] [--device cpu|cuda] [--dtype ...]
#include <chrono>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "trainer/model/decoder.h"

int main(int argc, char** argv) {
  CLI::App app{"decoder forward+backward throughput"};
  std::string model_dir, device = "cpu", dtype = "float32";
  int64_t batch = 4, seq = 256, steps = 5, warmup = 2;
  bool checkpointing = false;
  app.add_option("--model", model_dir)->required();
  app.add_option("--batch", batch);
  app.add_option("--seq", seq);
  app.add_option("--steps", steps);
  app.add_option("--warmup", warmup);
  app.add_option("--device", device);
  app.add_option("--dtype", dtype);
  app.add_flag("--checkpointing", checkpointing);
  CLI11_PARSE(app, argc, argv);

  anneal::model::LoadOptions lo;
  lo.device = device == "cuda" ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  lo.dtype = anneal::model::DtypeFromName(dtype);
  auto lm = anneal::model::LoadCausalLM(model_dir, lo);
  if (!lm.ok()) {
    std::cerr << lm.status().ToString() << "\n";
    return 1;
  }
  (*lm)->train();
  const int64_t vocab = (*lm)->config().vocab_size;
  torch::manual_seed(0);
  torch::Tensor ids = torch::randint(0, vocab, {batch, seq}, torch::kInt64).to(lo.device);
  auto sync = [&] {
    if (lo.device.is_cuda()) torch::cuda::synchronize();
  };
  double seconds = 0;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    sync();
    auto t0 = std::chrono::steady_clock::now();
    (*lm)->zero_grad();
    torch::Tensor hidden = (*lm)->Forward({.input_ids = ids});
    auto [sum, count] = (*lm)->LossSum(hidden, anneal::model::ShiftLabels(ids));
    (sum / count).backward();
    sync();
    if (i >= warmup) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::cout << nlohmann::json{{"impl", "anneal"}, {"tokens_per_s", batch * seq * steps / seconds},
                              {"seconds_per_step", seconds / steps}, {"threads", torch::get_num_threads()}}
                   .dump()
            << "\n";
  return 0;
}
