#include "trainer/train/reward.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/fsutil.h"
#include "trainer/model/safetensors.h"
#include "trainer/parallel/tensor_parallel.h"

namespace anneal::train {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

model::ForwardInputs InputsOf(const Batch& b) {
  return {.input_ids = b.input_ids, .attention_mask = b.attention_mask, .position_ids = b.position_ids};
}

}  // namespace

StatusOr<double> SummaryDropout(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const nlohmann::json cfg = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded() || !cfg.is_object()) return InvalidArgumentError(path + " is not a JSON object");
  if (!cfg.contains("summary_dropout_prob") || cfg["summary_dropout_prob"].is_null()) return 0.1;  // TRL's default
  const nlohmann::json& p = cfg["summary_dropout_prob"];
  if (!p.is_number() || p.get<double>() < 0 || p.get<double>() >= 1) {
    return InvalidArgumentError(path + ": summary_dropout_prob " + p.dump() + " is not a probability in [0, 1)");
  }
  return p.get<double>();
}

ValueHead ValueHead::Initial(int64_t hidden, uint64_t seed, double dropout, const torch::Device& device) {
  // torch.nn.Linear.reset_parameters: kaiming_uniform_(a = sqrt(5)) bounds the weight by 1 / sqrt(fan_in), and
  // the bias by the same; drawn weight first, from a generator of its own.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
  ValueHead h;
  torch::NoGradGuard no_grad;
  h.weight_ = torch::empty({1, hidden}, torch::kFloat32).uniform_(-bound, bound, gen).to(device);
  h.bias_ = torch::empty({1}, torch::kFloat32).uniform_(-bound, bound, gen).to(device);
  h.weight_.set_requires_grad(true);
  h.bias_.set_requires_grad(true);
  h.dropout_ = dropout;
  return h;
}

StatusOr<ValueHead> ValueHead::ForModel(const std::string& model_dir, const std::string& adapter_dir, int64_t hidden,
                                        uint64_t seed, const torch::Device& device) {
  ASSIGN_OR_RETURN(double dropout, SummaryDropout(model_dir));
  ValueHead h = Initial(hidden, seed, dropout, device);
  // LLaMA-Factory's loader: the value head of the last adapter, else of the model directory.
  const std::string dir = adapter_dir.empty() ? model_dir : adapter_dir;
  const std::string path = dir + "/" + kValueHeadFile;
  if (!fs::exists(path)) {
    if (fs::exists(dir + "/value_head.bin")) {
      return InvalidArgumentError(dir + "/value_head.bin: a pickled value head is not read; save it as " +
                                  kValueHeadFile + " (safetensors) or remove it to start from a fresh head");
    }
    return h;
  }
  ASSIGN_OR_RETURN(auto file, model::SafetensorsFile::Open(path));
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : h.Named()) {
    auto t = file->Tensor(name, torch::kFloat32);
    if (!t.ok()) return DataLossError(path + ": " + t.status().message());
    if (t->sizes() != target.sizes()) {
      return DataLossError(path + ": '" + name + "' has shape " + c10::str(t->sizes()) + ", this model's hidden size " +
                           std::to_string(hidden) + " needs " + c10::str(target.sizes()));
    }
    target.copy_(*t);
  }
  return h;
}

torch::Tensor ValueHead::Values(const torch::Tensor& hidden, bool training) const {
  // TRL's ValueHead.forward: dropout on the hidden states, then the fp32 Linear.
  torch::Tensor x = dropout_ > 0 ? torch::dropout(hidden, dropout_, training) : hidden;
  return F::linear(x.to(torch::kFloat32), weight_, bias_).squeeze(-1);
}

std::vector<optim::TrainableParam> ValueHead::Params() const {
  return {{"v_head.summary.weight", weight_, optim::DecayParameter("v_head.summary.weight")},
          {"v_head.summary.bias", bias_, optim::DecayParameter("v_head.summary.bias")}};
}

std::vector<std::pair<std::string, torch::Tensor>> ValueHead::Named() const {
  return {{"v_head.summary.weight", weight_}, {"v_head.summary.bias", bias_}};
}

std::pair<torch::Tensor, torch::Tensor> PairScores(const torch::Tensor& values, const torch::Tensor& attention_mask) {
  const int64_t rows = values.size(0), n = rows / 2;
  torch::Tensor last = attention_mask.defined()
                           ? attention_mask.sum(-1, /*keepdim=*/true) - 1
                           : torch::full({rows, 1}, values.size(1) - 1, values.options().dtype(torch::kLong));
  const torch::Tensor scores = values.gather(-1, last.to(torch::kLong)).squeeze(-1);
  return {scores.slice(0, 0, n), scores.slice(0, n, 2 * n)};
}

torch::Tensor PairwiseRankingLoss(const torch::Tensor& chosen, const torch::Tensor& rejected) {
  return -F::logsigmoid(chosen.to(torch::kFloat32) - rejected.to(torch::kFloat32)).mean();
}

Status WriteValueHead(const std::vector<std::pair<std::string, torch::Tensor>>& tensors, const std::string& dir) {
  std::vector<std::pair<std::string, torch::Tensor>> head;
  for (const auto& [name, t] : tensors) {
    if (name.rfind("v_head.", 0) == 0) head.emplace_back(name, t.detach());
  }
  if (head.empty()) return FailedPreconditionError("stage rm: no v_head.* tensors to write into " + dir);
  return model::WriteSafetensors(dir + "/" + kValueHeadFile, head);
}

StatusOr<std::string> CopyValueHead(const std::string& model_dir, const std::string& adapter_dir,
                                    const std::string& out_dir) {
  const std::string dir = adapter_dir.empty() ? model_dir : adapter_dir;
  for (const std::string& name : {std::string(kValueHeadFile), std::string("value_head.bin")}) {
    const fs::path from = fs::path(dir) / name;
    if (!fs::exists(from)) continue;
    std::error_code ec;
    fs::copy_file(from, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return InternalError("cannot copy " + from.string() + " into " + out_dir + ": " + ec.message());
    return (fs::path(out_dir) / name).string();
  }
  return std::string();
}

torch::Tensor RewardTrainer::MicroBatchLoss(const Batch& b, bool training) {
  return ScoreLoss(b, (*lm_)->Forward(InputsOf(b)), training);
}

torch::Tensor RewardTrainer::LastStageLoss(const Batch& b, const torch::Tensor& hidden, int64_t /*m*/, bool training) {
  return ScoreLoss(b, hidden, training);
}

torch::Tensor RewardTrainer::ScoreLoss(const Batch& b, const torch::Tensor& hidden, bool training) {
  torch::Tensor values = head_->Values(hidden, training);
  if (sequence_tp_ != nullptr && sequence_tp_->size() > 1) {
    // [2n, T/tp] -> [2n, T]. Every rank computes the same loss from the whole values; the gather's backward sums
    // the tp identical gradients of each position, so each is divided by tp first.
    values = parallel::GatherSequence(values, sequence_tp_);
    const double tp = static_cast<double>(sequence_tp_->size());
    if (values.requires_grad()) values.register_hook([tp](const torch::Tensor& g) { return g / tp; });
  }
  auto [chosen, rejected] = PairScores(values, b.attention_mask);
  if (!training) eval_correct_ += chosen.gt(rejected).sum().item<double>();
  return PairwiseRankingLoss(chosen, rejected);
}

std::vector<std::pair<std::string, double>> RewardTrainer::TakeEvalSums() {
  std::vector<std::pair<std::string, double>> out = {{"accuracy", eval_correct_}};
  eval_correct_ = 0;
  return out;
}

}  // namespace anneal::train
