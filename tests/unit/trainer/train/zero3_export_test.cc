// The merged (non-adapter) export of LoRA under ZeRO-3 (WriteStageExport with lora_only false): two Gloo ranks
// (threads of this process) hold a tiny llama with LoRA on every linear, its factors sharded by a stage-3
// TrainerOptimizer; rank 0's export file must equal, byte for byte, the one a single process writes from the same
// weights (each base weight + B A * scaling). The layers are gathered one at a time: after the export every
// sharded factor has no storage again.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "common/net.h"
#include "jobspec/jobspec.h"
#include "trainer/model/presets.h"
#include "trainer/model/safetensors.h"
#include "trainer/parallel/comm.h"
#include "trainer/train/finetune.h"
#include "trainer/train/runtime.h"
#include "trainer/train/state_io.h"
#include "trainer/train/zero.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;

// A tiny llama with LoRA (rank 2, every linear) whose every parameter is set from its name's position (the two
// ranks are threads and must not draw from the shared generator), the B factors non-zero so merging matters.
struct LoraModel {
  model::CausalLM lm{nullptr};
  std::vector<optim::TrainableParam> trainable;
};

LoraModel MakeLoraModel() {
  auto cfg = model::PresetConfig("llama", "tiny", 128);
  EXPECT_TRUE(cfg.ok());
  cfg->num_hidden_layers = 3;
  LoraModel m;
  m.lm = model::CausalLM(*cfg, torch::TensorOptions());
  jobspec::JobSpec spec;
  spec.finetuning.lora_rank = 2;
  spec.finetuning.lora_alpha = 4;
  auto params = ApplyFinetuning(m.lm, spec, /*seed=*/7);
  EXPECT_TRUE(params.ok()) << params.status().ToString();
  m.trainable = *params;
  torch::NoGradGuard no_grad;
  int64_t k = 0;
  for (const auto& p : m.lm->named_parameters()) {
    const double start = 0.01 * static_cast<double>(++k % 17);
    p.value().copy_(torch::linspace(-start, 0.5 - start, p.value().numel()).view_as(p.value()));
  }
  return m;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct ExportResult {
  std::string error;
  int64_t sharded_bytes_after = -1;  // storage of the LoRA factors after the export
};

void RunRank(int rank, int port, const fs::path& dir, ExportResult* out) {
  auto store = parallel::ConnectStore("127.0.0.1", port, rank, 2, std::chrono::seconds(30));
  if (!store.ok()) {
    out->error = store.status().ToString();
    return;
  }
  auto comm = parallel::Comm::Create(*store, "dp", {0, 1}, rank, false, std::chrono::seconds(30));
  if (!comm.ok()) {
    out->error = comm.status().ToString();
    return;
  }
  LoraModel m = MakeLoraModel();
  TrainerOptimizer opt(m.trainable, optim::AdamWOptions{}, comm->get(), /*stage=*/3);
  opt.SetPrefetch(true);
  Runtime rt;
  rt.dp = 2;
  rt.dp_rank = rank;
  rt.dp_comm = *comm;
  opt.GatherRoot();
  const Status st = WriteStageExport(m.lm, rt, /*lora_only=*/false, dir.string(), &opt);
  if (!st.ok()) out->error = st.ToString();
  out->sharded_bytes_after = 0;
  for (const auto& p : m.trainable) out->sharded_bytes_after += static_cast<int64_t>(p.param.storage().nbytes());
}

TEST(ZeroThreeExport, MergedLoraEqualsTheSingleProcessExportByteForByte) {
  const fs::path root = fs::temp_directory_path() / ("anneal_zero3_export_" + std::to_string(::getpid()));
  fs::create_directories(root / "one");
  fs::create_directories(root / "zero3");
  {
    LoraModel single = MakeLoraModel();
    ASSERT_TRUE(WriteStageExport(single.lm, Runtime{}, /*lora_only=*/false, (root / "one").string()).ok());
  }
  std::array<ExportResult, 2> results;
  const int port = FreeLoopbackPort().value();
  std::thread r1(RunRank, 1, port, root / "zero3", &results[1]);
  RunRank(0, port, root / "zero3", &results[0]);
  r1.join();
  for (const ExportResult& r : results) {
    ASSERT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.sharded_bytes_after, 0) << "every layer freed after its merged weights were written";
  }
  const std::string one = ReadAll(root / "one" / ".export-stage0.safetensors");
  const std::string zero3 = ReadAll(root / "zero3" / ".export-stage0.safetensors");
  ASSERT_GT(one.size(), 1000u);
  EXPECT_EQ(zero3.size(), one.size());
  EXPECT_TRUE(zero3 == one) << "the ZeRO-3 merged export differs from the single-process one";
  // Merging mattered: the merged q_proj is not the base weight.
  auto file = model::SafetensorsFile::Open((root / "one" / ".export-stage0.safetensors").string());
  ASSERT_TRUE(file.ok());
  auto q = (*file)->Tensor("model.layers.1.self_attn.q_proj.weight");
  ASSERT_TRUE(q.ok());
  LoraModel base = MakeLoraModel();
  EXPECT_FALSE(torch::allclose(*q, base.lm->named_parameters()["model.layers.1.self_attn.q_proj.weight"]));
  fs::remove_all(root);
}

}  // namespace
}  // namespace anneal::train
