#include "trainer/model/linear.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>

#include "common/status.h"

namespace anneal::model {

LinearImpl::LinearImpl(const LinearSpec& spec, const torch::TensorOptions& options) : spec_(spec) {
  weight = register_parameter("weight", torch::empty({spec.out, spec.in}, options));
  if (spec.bias) bias = register_parameter("bias", torch::zeros({spec.out}, options));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  if (has_lora() && !merged_) y = y + LoraDelta(x);
  return y;
}

torch::Tensor LinearImpl::LoraDelta(const torch::Tensor& x) {
  // x [.., in] -> fp32 -> dropout -> A: [.., r] -> B: [.., out] -> * scaling -> x dtype
  torch::Tensor h = x.to(lora_A->weight.scalar_type());
  if (lora_options_.dropout > 0.0 && is_training()) {
    h = torch::dropout(h, lora_options_.dropout, /*train=*/true);
  }
  h = torch::nn::functional::linear(torch::nn::functional::linear(h, lora_A->weight), lora_B->weight);
  return (h * lora_scaling_).to(x.scalar_type());
}

void LinearImpl::EnableLora(const LoraOptions& options, uint64_t seed) {
  ANNEAL_CHECK(!has_lora());
  ANNEAL_CHECK(options.rank > 0);
  lora_options_ = options;
  lora_scaling_ = options.use_rslora ? options.alpha / std::sqrt(static_cast<double>(options.rank))
                                     : options.alpha / static_cast<double>(options.rank);
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(weight.device());
  // peft: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)) -> bound = 1 / sqrt(in_features).
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(spec_.in));
  torch::Tensor a = at::empty({options.rank, spec_.in}, torch::kFloat32).uniform_(-bound, bound, gen);
  lora_A = register_module("lora_A", LoraWeight(a.to(fp32)));
  lora_B = register_module("lora_B", LoraWeight(torch::zeros({spec_.out, options.rank}, fp32)));
}

torch::Tensor LinearImpl::DeltaWeight() {
  // [out, r] @ [r, in] -> [out, in]
  return torch::matmul(lora_B->weight, lora_A->weight) * lora_scaling_;
}

torch::Tensor LinearImpl::MergedWeight() {
  torch::NoGradGuard no_grad;
  if (!has_lora() || merged_) return weight.detach().clone();
  return (weight.to(torch::kFloat32) + DeltaWeight()).to(weight.scalar_type());
}

void LinearImpl::MergeLora() {
  ANNEAL_CHECK(has_lora() && !merged_);
  torch::NoGradGuard no_grad;
  weight.copy_((weight.to(torch::kFloat32) + DeltaWeight()).to(weight.scalar_type()));
  merged_ = true;
}

void LinearImpl::UnmergeLora() {
  ANNEAL_CHECK(has_lora() && merged_);
  torch::NoGradGuard no_grad;
  weight.copy_((weight.to(torch::kFloat32) - DeltaWeight()).to(weight.scalar_type()));
  merged_ = false;
}

Linear LinearFactory::Make(const LinearSpec& spec, const torch::TensorOptions& options) const {
  return Linear(spec, options);
}

}  // namespace anneal::model
