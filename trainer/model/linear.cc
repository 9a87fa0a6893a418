#include "trainer/model/linear.h"

#include <ATen/ATen.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/init.h>

#include <cmath>

#include "common/status.h"

namespace anneal::model {

torch::Tensor ParamLayout::Slice(const torch::Tensor& full) const {
  if (shards == 1) return full;
  return full.chunk(shards, dim)[index];
}

std::vector<int64_t> ParamLayout::FullShape(c10::IntArrayRef local) const {
  std::vector<int64_t> shape = local.vec();
  if (shards > 1) shape[dim] *= shards;
  return shape;
}

LinearImpl::LinearImpl(const LinearSpec& spec, const torch::TensorOptions& options)
    : LinearImpl(spec, options, spec.out, spec.in) {}

LinearImpl::LinearImpl(const LinearSpec& spec, const torch::TensorOptions& options, int64_t local_out, int64_t local_in)
    : spec_(spec), local_out_(local_out), local_in_(local_in) {
  weight = register_parameter("weight", torch::empty({local_out, local_in}, options));
  if (spec.bias) bias = register_parameter("bias", torch::zeros({local_out}, options));
}

ParamLayout LinearImpl::Layout(const std::string& /*name*/) const {
  return {};
}

torch::Tensor LinearImpl::BaseLinear(const torch::Tensor& x, const torch::Tensor& bias_or_undefined) {
  if (quantized_) return Quant4Linear(x, *quantized_, bias_or_undefined, quant4_matmul_);
  if (quantized8_) {
    // bnb.matmul: MatMul8bitFp when the module trains on CPU, MatMul8bitLt (LLM.int8) otherwise.
    const Int8Matmul bnb_choice =
        is_training() && x.device().is_cpu() ? Int8Matmul::kDequantized : Int8Matmul::kLlmInt8;
    const Int8MatmulOptions o{.how = int8_matmul_.value_or(bnb_choice),
                              .impl = int8_impl_,
                              .threshold = int8_threshold_,
                              .reduce_row_max = int8_row_max_};
    return Int8Linear(x, *quantized8_, bias_or_undefined, o);
  }
  return torch::nn::functional::linear(x, weight, bias_or_undefined);
}

Status LinearImpl::QuantizeBase(const torch::Tensor& full, const BaseQuantOptions& base) {
  if (quantized_ || quantized8_) return FailedPreconditionError(spec_.role + ": the base weight is already quantized");
  if (merged_) return FailedPreconditionError(spec_.role + ": cannot quantize a weight with LoRA merged into it");
  const ParamLayout layout = Layout("weight");
  if (base.bits == 8) {
    auto q8 = Int8LinearWeight::Make(full, layout.dim, layout.shards, layout.index);
    if (!q8.ok()) return InvalidArgumentError(spec_.role + ": " + q8.status().message());
    quantized8_ = std::make_shared<Int8LinearWeight>(std::move(*q8));
    ANNEAL_CHECK(quantized8_->rows == local_out_ && quantized8_->cols == local_in_);
    quantized8_->CB = register_buffer("weight_int8", quantized8_->CB);
    quantized8_->SCB = register_buffer("weight_int8_scb", quantized8_->SCB);
    int8_threshold_ = base.eight.threshold;
    parameters_["weight"] = torch::Tensor();
    weight = torch::Tensor();
    return Status::Ok();
  }
  if (base.bits != 4) return InvalidArgumentError(c10::str(spec_.role, ": cannot quantize to ", base.bits, " bits"));
  const Quant4Options& options = base.four;
  auto q = QuantizedLinearWeight::Make(full, layout.dim, layout.shards, layout.index, options);
  if (!q.ok()) return InvalidArgumentError(spec_.role + ": " + q.status().message());
  quantized_ = std::make_shared<QuantizedLinearWeight>(std::move(*q));
  ANNEAL_CHECK(quantized_->rows == local_out_ && quantized_->cols == local_in_);
  // Buffers share the tensors, so module->to(device) moves what quantized_ reads.
  quantized_->packed = register_buffer("weight_q4", quantized_->packed);
  quantized_->absmax = register_buffer("weight_q4_absmax", quantized_->absmax);
  if (quantized_->absmax2.defined()) {
    quantized_->absmax2 = register_buffer("weight_q4_absmax2", quantized_->absmax2);
  }
  // Drop the dense weight: an undefined parameter is skipped by parameters() and to().
  parameters_["weight"] = torch::Tensor();
  weight = torch::Tensor();
  return Status::Ok();
}

int64_t LinearImpl::quantized_bytes() const {
  if (quantized_) return quantized_->bytes();
  if (quantized8_) return quantized8_->bytes();
  return 0;
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = BaseLinear(x, bias);
  if (lora_active()) y = lora_magnitude_vector.defined() ? AddDora(x, y) : y + LoraDelta(x);
  return y;
}

torch::Tensor LinearImpl::LoraDelta(const torch::Tensor& x) {
  // x [.., in] -> fp32 -> dropout -> A: [.., r] -> B: [.., out] -> * scaling -> x dtype
  torch::Tensor h = x.to(lora_A->weight.scalar_type());
  if (lora_options_.dropout > 0.0 && is_training() && !lora_dropout_off_) {
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
  const torch::Device device =
      quantized_ ? quantized_->packed.device() : (quantized8_ ? quantized8_->CB.device() : weight.device());
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  // peft: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)) -> bound = 1 / sqrt(in_features).
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(spec_.in));
  torch::Tensor a = at::empty({options.rank, spec_.in}, torch::kFloat32).uniform_(-bound, bound, gen);
  a = Layout("lora_A.weight").Slice(a).contiguous();
  lora_A = register_module("lora_A", LoraWeight(a.to(fp32)));
  // B [out or out/tp, r]: as many rows as this rank's weight.
  lora_B = register_module("lora_B", LoraWeight(torch::zeros({local_out_, options.rank}, fp32)));
  if (options.pissa) PissaInit(gen);
  if (options.use_dora) {
    // peft's DoraLinearLayer.update_layer: ||W + scaling * B A||_row with B = 0, in W's dtype, kept fp32.
    torch::NoGradGuard no_grad;
    const torch::Tensor w = DenseWeight();
    torch::Tensor norm = at::linalg_vector_norm(w, 2, {1}).to(w.scalar_type());
    lora_magnitude_vector = register_parameter("lora_magnitude_vector", norm.to(fp32).contiguous());
  }
}

// torch.svd_lowrank(a, q, niter) as torch/_lowrank.py computes it (Halko et al.'s algorithm 5.1), its random
// start drawn from `gen`: a [m, n] -> U [m, q], S [q], V [n, q].
static std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> SvdLowrank(const torch::Tensor& a_in, int64_t q,
                                                                          int64_t niter, at::Generator& gen) {
  const bool wide = a_in.size(0) < a_in.size(1);
  const torch::Tensor a = wide ? a_in.t() : a_in;  // "assume that A is tall"
  const torch::Tensor r = at::randn({a.size(1), q}, gen, torch::kFloat32).to(a.device());
  torch::Tensor qm = std::get<0>(at::linalg_qr(torch::matmul(a, r)));
  for (int64_t i = 0; i < niter; ++i) {
    qm = std::get<0>(at::linalg_qr(torch::matmul(a.t(), qm)));
    qm = std::get<0>(at::linalg_qr(torch::matmul(a, qm)));
  }
  const torch::Tensor b = torch::matmul(qm.t(), a);
  auto [u, s, vh] = at::linalg_svd(b, /*full_matrices=*/false);
  torch::Tensor v = vh.t();
  u = qm.matmul(u);
  if (wide) std::swap(u, v);
  return {u, s, v};
}

void LinearImpl::PissaInit(at::Generator& gen) {
  // peft's LoraLayer.pissa_init (tuners/lora/layer.py), step by step.
  ANNEAL_CHECK(!quantized_ && !quantized8_ && !Layout("weight").sharded());  // refused before training starts
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.to(torch::kFloat32);
  const int64_t r = lora_options_.rank;
  torch::Tensor vr, sr, uhr;
  if (lora_options_.pissa_niter < 0) {
    auto [v, s, uh] = at::linalg_svd(w, /*full_matrices=*/false);
    vr = v.narrow(1, 0, r);
    sr = s.narrow(0, 0, r);
    uhr = uh.narrow(0, 0, r);
  } else {
    auto [v, s, u] = SvdLowrank(w, r, lora_options_.pissa_niter, gen);
    vr = v;
    sr = s;
    uhr = u.t();
  }
  sr = sr / lora_scaling_;
  const torch::Tensor a = torch::diag(torch::sqrt(sr)).matmul(uhr);
  const torch::Tensor b = vr.matmul(torch::diag(torch::sqrt(sr)));
  lora_A->weight.copy_(a);
  lora_B->weight.copy_(b);
  weight.copy_((w - (lora_scaling_ * b).matmul(a)).to(weight.scalar_type()));
}

torch::Tensor LinearImpl::DenseWeight() {
  // A quantized base keeps no dtype of its own: fp32 (the callers cast to the compute dtype).
  if (quantized8_) return quantized8_->Dequantize(torch::kFloat32);
  return quantized_ ? quantized_->Dequantize(torch::kFloat32) : weight;
}

torch::Tensor LinearImpl::AddDora(const torch::Tensor& x, const torch::Tensor& y) {
  // peft's DoraLinearLayer.forward (tuners/lora/dora.py): with m the magnitude,
  //   scale = m / ||W + scaling * B A||_row (detached)                                      [1, out]
  //   y += (scale - 1) * (x W^T) + scale * B A x * scaling
  // where x W^T is the base output without bias, recomputed from the dropped-out input when dropout applies.
  const bool dropout = lora_options_.dropout > 0.0 && is_training() && !lora_dropout_off_;
  torch::Tensor h = x.to(lora_A->weight.scalar_type());
  if (dropout) h = torch::dropout(h, lora_options_.dropout, /*train=*/true);
  const torch::Tensor w = DenseWeight().to(x.scalar_type());
  torch::Tensor weight_norm;
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor lora_weight = torch::matmul(lora_B->weight, lora_A->weight).to(x.scalar_type());
    weight_norm = at::linalg_vector_norm(w + lora_scaling_ * lora_weight, 2, {1}).to(w.scalar_type());
  }
  const torch::Tensor scale = (lora_magnitude_vector / weight_norm).view({1, -1});
  const torch::Tensor lora_result =
      torch::nn::functional::linear(torch::nn::functional::linear(h, lora_A->weight), lora_B->weight);
  torch::Tensor base_result;
  if (dropout) {
    base_result = torch::nn::functional::linear(h.to(x.scalar_type()), w);
  } else {
    base_result = bias.defined() ? y - bias : y;
  }
  const torch::Tensor term = (scale - 1) * base_result + scale * lora_result * lora_scaling_;
  return y + term.to(y.scalar_type());
}

torch::Tensor LinearImpl::DeltaWeight() {
  // [out, r] @ [r, in] -> [out, in]
  return torch::matmul(lora_B->weight, lora_A->weight) * lora_scaling_;
}

// DoRA's merge (peft's DoraLinearVariant.merge_safe): m / ||W + delta||_row * (W + delta); `norm` gets the
// row norms [out] (UnmergeLora divides by the same factor).
static torch::Tensor DoraMerged(const torch::Tensor& w32, const torch::Tensor& delta, const torch::Tensor& magnitude,
                                torch::Tensor* norm) {
  const torch::Tensor sum = w32 + delta;
  *norm = at::linalg_vector_norm(sum, 2, {1});
  return (magnitude / *norm).view({-1, 1}) * sum;
}

torch::Tensor LinearImpl::MergedWeight() {
  ANNEAL_CHECK(!quantized_ && !quantized8_);  // a quantized base is never merged (refused at parse time)
  torch::NoGradGuard no_grad;
  if (!has_lora() || merged_) return weight.detach().clone();
  if (lora_magnitude_vector.defined()) {
    torch::Tensor norm;
    return DoraMerged(weight.to(torch::kFloat32), DeltaWeight(), lora_magnitude_vector, &norm).to(weight.scalar_type());
  }
  return (weight.to(torch::kFloat32) + DeltaWeight()).to(weight.scalar_type());
}

void LinearImpl::MergeLora() {
  ANNEAL_CHECK(has_lora() && !merged_ && !quantized_ && !quantized8_);
  torch::NoGradGuard no_grad;
  if (lora_magnitude_vector.defined()) {
    weight.copy_(DoraMerged(weight.to(torch::kFloat32), DeltaWeight(), lora_magnitude_vector, &dora_merge_norm_)
                     .to(weight.scalar_type()));
  } else {
    weight.copy_((weight.to(torch::kFloat32) + DeltaWeight()).to(weight.scalar_type()));
  }
  merged_ = true;
}

void LinearImpl::UnmergeLora() {
  ANNEAL_CHECK(has_lora() && merged_);
  torch::NoGradGuard no_grad;
  torch::Tensor w = weight.to(torch::kFloat32);
  if (lora_magnitude_vector.defined()) w = w / (lora_magnitude_vector / dora_merge_norm_).view({-1, 1});
  weight.copy_((w - DeltaWeight()).to(weight.scalar_type()));
  merged_ = false;
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, options));
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  return torch::embedding(weight, ids);
}

Linear LinearFactory::Make(const LinearSpec& spec, const torch::TensorOptions& options) const {
  return Linear(spec, options);
}

Embedding LinearFactory::MakeEmbedding(int64_t vocab, int64_t dim, const torch::TensorOptions& options) const {
  return Embedding(vocab, dim, options);
}

torch::Tensor LinearFactory::HeadLogits(const torch::Tensor& hidden, const torch::Tensor& weight) const {
  // [.., C] x [V, C]^T -> [.., V]
  return torch::matmul(hidden, weight.t());
}

torch::Tensor LinearFactory::TokenLogProbs(const torch::Tensor& logits, const torch::Tensor& labels) const {
  const torch::Tensor valid = labels.ne(-100);
  const torch::Tensor picked =
      logits.log_softmax(-1).gather(1, labels.masked_fill(valid.logical_not(), 0).unsqueeze(1)).squeeze(1);
  return picked * valid.to(picked.scalar_type());
}

torch::Tensor LinearFactory::CrossEntropySum(const torch::Tensor& logits, const torch::Tensor& labels) const {
  return torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

}  // namespace anneal::model
