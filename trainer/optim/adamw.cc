#include "trainer/optim/adamw.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

namespace anneal::optim {

bool DecayParameter(const std::string& name) {
  // transformers Trainer.get_decay_parameter_names: bias and every norm-like module are excluded.
  for (const char* s : {"bias", "norm", "layernorm", "rmsnorm"}) {
    if (name.find(s) != std::string::npos) return false;
  }
  return true;
}

AdamW::AdamW(std::vector<TrainableParam> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  state_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& p = params_[i].param;
    auto f32 = p.options().dtype(at::kFloat);
    state_[i].exp_avg = at::zeros(p.sizes(), f32);
    state_[i].exp_avg_sq = at::zeros(p.sizes(), f32);
    if (p.scalar_type() != at::kFloat) state_[i].master = p.detach().to(at::kFloat).clone();
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias_correction1 = 1 - std::pow(b1, static_cast<double>(step_));
  const double bias_correction2 = 1 - std::pow(b2, static_cast<double>(step_));
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].param;
    if (!p.grad().defined()) continue;
    State& s = state_[i];
    at::Tensor master = s.master.defined() ? s.master : p;
    at::Tensor grad = p.grad().to(at::kFloat);
    const double group_lr = lr * params_[i].lr_scale;  // its optimizer group's lr
    const double step_size = group_lr / bias_correction1;
    // The same sequence of ops as torch.optim.adamw._single_tensor_adamw.
    if (params_[i].decay && options_.weight_decay != 0) master.mul_(1 - group_lr * options_.weight_decay);
    s.exp_avg.lerp_(grad, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    at::Tensor denom = (s.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(options_.eps);
    master.addcdiv_(s.exp_avg, denom, -step_size);
    if (s.master.defined()) p.copy_(master);
  }
}

void AdamW::ZeroGrad() {
  for (auto& tp : params_) {
    if (tp.param.grad().defined()) tp.param.mutable_grad().zero_();
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::StateTensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, state_[i].exp_avg);
    out.emplace_back("exp_avg_sq." + params_[i].name, state_[i].exp_avg_sq);
    if (state_[i].master.defined()) out.emplace_back("master." + params_[i].name, state_[i].master);
  }
  return out;
}

Status AdamW::LoadStateTensors(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t step) {
  std::map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& n = params_[i].name;
    for (auto [key, dst] : {std::pair{"exp_avg.", &state_[i].exp_avg}, {"exp_avg_sq.", &state_[i].exp_avg_sq}}) {
      auto it = by_name.find(key + n);
      if (it == by_name.end()) return DataLossError("optimizer state has no '" + std::string(key) + n + "'");
      if (it->second.sizes() != dst->sizes()) {
        return DataLossError("optimizer state '" + std::string(key) + n + "' has a different shape");
      }
      dst->copy_(it->second);
    }
    if (state_[i].master.defined()) {
      auto it = by_name.find("master." + n);
      if (it == by_name.end()) return DataLossError("optimizer state has no master weight for '" + n + "'");
      state_[i].master.copy_(it->second);
      params_[i].param.copy_(state_[i].master);
    }
    // A parameter that had a gradient before the checkpoint keeps a (zeroed) one in the uninterrupted run
    // (ZeroGrad zeroes in place), so Step goes on moving it by its moments even in a step that gives it no
    // gradient (a routed expert no token chose): resumed, it must too.
    at::Tensor p = params_[i].param;
    if (!p.grad().defined() && state_[i].exp_avg_sq.ne(0).any().item<bool>()) p.mutable_grad() = at::zeros_like(p);
  }
  step_ = step;
  return Status::Ok();
}

double GradNormSquared(const std::vector<TrainableParam>& params) {
  torch::NoGradGuard no_grad;
  at::Tensor total;
  for (const auto& tp : params) {
    if (!tp.param.grad().defined()) continue;
    at::Tensor n = tp.param.grad().to(at::kFloat).pow(2).sum();
    total = total.defined() ? total + n : n;
  }
  return total.defined() ? total.item<double>() : 0.0;
}

void ScaleGrads(const std::vector<TrainableParam>& params, double factor) {
  torch::NoGradGuard no_grad;
  for (const auto& tp : params) {
    if (tp.param.grad().defined()) tp.param.mutable_grad().mul_(factor);
  }
}

}  // namespace anneal::optim
