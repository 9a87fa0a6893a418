// Model FLOPs utilization (MFU, PaLM appendix B): the FLOPs a training step needs by the model's arithmetic,
// divided by what the GPUs could do at their dense bf16 peak in the same time. Recomputation (activation
// checkpointing) is not counted: it is the hardware's work, not the model's.
//
// FLOPs per trained token, for a decoder of L layers, H attention heads of size Q, and sequences of T tokens:
//   2 N            forward: one multiply-add per weight per token (N = the matmul weights, see below)
//   2 N            backward into the activations (needed through frozen weights too)
//   2 N_trained    backward into the weights, only for the trained parameters
//   12 L H Q T     attention scores and their weighted sum (QK^T and AV: 2 x 2LHQT forward, twice that backward)
// so full fine-tuning is PaLM's 6N + 12LHQT, and LoRA about 4N + 12LHQT. N counts every weight that multiplies
// activations: the attention and MLP projections, their biases, the norms and the LM head; an untied input
// embedding is a table lookup and is left out (tied, it is the LM head and counted once). T is the sequence
// length the batches are cut to (cutoff_len): an upper bound on the attention term for shorter sequences.
//
//   MFU = flops_per_token x tokens_per_second / (peak_flops_per_gpu x gpus)
// with tokens_per_second the whole job's throughput and gpus the job's world size (every rank holds one GPU).
//
// Thread-safety: pure functions.
//
// Example:
//   DecoderShape s{.vocab = 32000, .hidden = 4096, .intermediate = 11008, .layers = 32, .heads = 32,
//                  .kv_heads = 32, .head_dim = 128};
//   double fpt = TrainingFlopsPerToken(s, MatmulParameterCount(s), 2048);   // full fine-tuning
//   if (auto peak = PeakBf16Flops("NVIDIA H100 80GB HBM3")) mfu = Mfu(fpt, tokens_per_s, *peak, 8);
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace anneal::report {

// The shape of a LLaMA-family decoder (config.json's fields).
struct DecoderShape {
  int64_t vocab = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  bool tied_embeddings = false;
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
};

// Every parameter of the model (embeddings included): what the trainer holds for full fine-tuning.
int64_t ParameterCount(const DecoderShape& s);
// N above: ParameterCount less an untied input embedding.
int64_t MatmulParameterCount(const DecoderShape& s);

// FLOPs per token of one training step (forward + backward), as above. `trained_params` is capped at
// MatmulParameterCount(s) (a trained input embedding adds no matmul).
double TrainingFlopsPerToken(const DecoderShape& s, int64_t trained_params, int64_t seq_len);

// The dense (no sparsity) bf16 tensor-core peak in FLOP/s of a GPU named as CUDA names it
// ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"); nullopt for an unknown device, which gets
// no MFU. Table: H100 SXM / H200 / GH200 / H800 989.4 T, H100 NVL 835 T, H100 PCIe 756 T, B200 2250 T,
// A100 / A800 312 T, L40S 362 T, L40 181 T, L4 121 T, A10 125 T.
std::optional<double> PeakBf16Flops(std::string_view device_name);

// The ratio (0..1 for a sane measurement); nullopt when an input is not positive.
std::optional<double> Mfu(double flops_per_token, double tokens_per_second, double peak_flops_per_gpu, int gpus);

}  // namespace anneal::report
