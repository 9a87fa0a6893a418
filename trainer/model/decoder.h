// The LLaMA-family decoder (LLaMA 2/3, Qwen2, Mistral, DeepSeek-LLM / R1 distills, Qwen3, Qwen3-MoE) in
// LibTorch.
//
// Module and parameter names equal Hugging Face's, so named_parameters() are HF weight names both ways:
//   model.embed_tokens.weight, model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias},
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight, model.layers.{i}.{input,post_attention}_layernorm.weight,
//   model.norm.weight, lm_head.weight (absent when tie_word_embeddings: the head reuses the embedding).
// Qwen3 adds model.layers.{i}.self_attn.{q,k}_norm.weight [D] (RMSNorm over each head, before RoPE); a sparse
// layer's MLP is a SparseMoe (trainer/model/moe.h): model.layers.{i}.mlp.gate.weight and
// model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj.weight. DeepSeek-V2/V3 attend with MLA
// (trainer/model/mla.h) and carry shared experts; V3's router has the buffer mlp.gate.e_score_correction_bias,
// which loads, saves and exports with the parameters (HfStateDict, LayoutParameters) but is never trained.
// Shapes: B batch, T tokens (query), S keys (cache + T), H query heads, K kv heads, D head dim, C hidden,
// F intermediate, V vocab.
//
// The model knows no parallelism: its linear layers and embedding are built by a LinearFactory
// (trainer/model/linear.h), which by default makes plain layers. A pipeline stage (StageSpec) builds only its
// own part: the embedding on the first stage, a range of decoder layers, the norm and head on the last (with
// tied embeddings the last stage keeps its own copy of the embedding for the head). Layers of other stages
// are empty placeholders, so parameter names stay HF's ("model.layers.7...." on the stage that owns layer 7).
//
// Thread-safety: a module is used by one thread at a time (LibTorch's rule).
//
// Example:
//   ASSIGN_OR_RETURN(auto lm, LoadCausalLM("/models/qwen2-0.5b", {.dtype = torch::kBFloat16}));
//   torch::Tensor logits = lm->Logits(lm->Forward({.input_ids = ids}));   // [B, T, V]
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trainer/model/config.h"
#include "trainer/model/linear.h"
#include "trainer/model/mla.h"
#include "trainer/model/moe.h"
#include "trainer/model/norm.h"

namespace anneal::model {

// Key/value cache for generation: per layer [B, K, capacity, D] (MLA layers: keys [B, H, capacity, Dn+Dr],
// values [B, H, capacity, Dv]; trainer/model/mla.h), filled up to `length`.
struct KvCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length = 0;
  int64_t capacity = 0;
  void Reset() {
    keys.clear();
    values.clear();
    length = 0;
    capacity = 0;
  }
};

struct ForwardInputs {
  torch::Tensor input_ids = {};       // [B, T] int64
  torch::Tensor attention_mask = {};  // optional [B, S] 1 = token, 0 = padding (S includes cached positions)
  torch::Tensor position_ids = {};    // optional [B, T]; default: cache length + arange(T)
  torch::Tensor segment_ids = {};     // optional [B, T]: packed sequences attend only within their segment
  KvCache* cache = nullptr;           // optional: appended to, and attended over
};

// Rotary position embedding tables (with linear / dynamic / llama3 / yarn frequency scaling; yarn also scales
// cos and sin by its attention factor, as transformers does).
class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const ModelConfig& config);
  // position_ids [B, T] -> (cos, sin) each [B, T, D] in `dtype`.
  std::pair<torch::Tensor, torch::Tensor> CosSin(const torch::Tensor& position_ids, torch::ScalarType dtype) const;

 private:
  torch::Tensor InvFreq(int64_t seq_len, const torch::Device& device) const;  // [D/2] fp32
  ModelConfig config_;
  torch::Tensor base_inv_freq_;    // [D/2] fp32 on CPU, scaling applied (except dynamic)
  double attention_factor_ = 1.0;  // yarn's cos/sin scale
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const LinearFactory& factory, int64_t layer_index);
  // x [B, T, C] -> [B, T, C]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::optional<torch::Tensor>& mask, KvCache* cache);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  // qk_norm (Qwen3): [D] weights shared by every head, so tensor parallelism replicates them (their gradients
  // are then partial on each rank: LayoutParameters marks them).
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_, layer_index_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, const LinearFactory& factory);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, C] -> [B, T, C]: down(silu(gate(x)) * up(x))
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const LinearFactory& factory, int64_t layer_index,
                   const torch::TensorOptions& options, const ExpertParallel& ep = {});
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::optional<torch::Tensor>& mask, KvCache* cache);
  // Exactly one of them is set and registered as "self_attn": attention, or MLA (deepseek_v2, deepseek_v3).
  Attention self_attn{nullptr};
  MlaAttention mla{nullptr};
  // Exactly one of them is set and registered as "mlp": the dense MLP, or on a sparse layer the MoE block.
  Mlp mlp{nullptr};
  SparseMoe moe{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// Which part of the model this process holds (pipeline parallelism). The default: everything.
struct StageSpec {
  int64_t layer_begin = 0;
  int64_t layer_end = -1;  // exclusive; -1 = num_hidden_layers
  bool first = true;       // holds the embedding
  bool last = true;        // holds the final norm and the head
  ExpertParallel experts = {};  // which routed experts this rank holds (all by default)
};

// The transformer body: "model." in HF names.
class DecoderModelImpl : public torch::nn::Module {
 public:
  DecoderModelImpl(const ModelConfig& config, const LinearFactory& factory, const torch::TensorOptions& options,
                   const StageSpec& stage);
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(DecoderModel);

// A parameter with its HF name and how it maps onto the full tensor.
struct LayoutParam {
  std::string name;
  torch::Tensor tensor;
  ParamLayout layout;
};

struct LoadOptions {
  std::optional<torch::ScalarType> dtype;  // default: the config's torch_dtype
  torch::Device device = torch::kCPU;
  std::shared_ptr<const LinearFactory> factory = nullptr;  // default: plain layers
  StageSpec stage = {};
  // QLoRA: every linear layer except lm_head stored 4- or 8-bit as it is loaded (QuantizeBase on the checkpoint's
  // tensor in the load dtype), so the dense weights are never all held.
  std::optional<BaseQuantOptions> quantize_linears = std::nullopt;
};

class CausalLMImpl : public torch::nn::Module {
 public:
  CausalLMImpl(ModelConfig config, const torch::TensorOptions& options,
               std::shared_ptr<const LinearFactory> factory = nullptr, StageSpec stage = {});

  // Final hidden states [B, T, C] (after the last norm). Needs the whole model (one stage).
  torch::Tensor Forward(const ForwardInputs& in);
  // The pieces of Forward for pipeline stages: ids [B, T] -> [B, T, C] (first stage); the final norm (last).
  torch::Tensor Embed(const torch::Tensor& input_ids);
  torch::Tensor FinalNorm(const torch::Tensor& x);
  // Hidden [.., C] -> logits [.., V] in the model dtype (gathered from the vocabulary pieces under tensor
  // parallelism).
  torch::Tensor Logits(const torch::Tensor& hidden);
  // Mean cross-entropy over labels != -100, with labels already aligned to positions (shifted by the caller
  // or by ShiftLabels); computed in fp32 as HF does. Returns (sum of token losses, token count).
  std::pair<torch::Tensor, int64_t> LossSum(const torch::Tensor& hidden, const torch::Tensor& shifted_labels);
  // Runs one decoder layer range [begin, end) (used by generation and by activation checkpointing).
  torch::Tensor RunLayers(torch::Tensor x, const ForwardInputs& in, int64_t begin, int64_t end);

  const ModelConfig& config() const { return config_; }
  // Activation checkpointing: each decoder layer keeps only its input during forward and recomputes its
  // activations in backward (a custom autograd function; the CPU RNG is replayed so dropout masks match).
  void SetActivationCheckpointing(bool on) { checkpointing_ = on; }
  // ZeRO-3 (trainer/train/zero.h): called with (layer, true) right before decoder layer `layer` computes (its
  // forward, and its recomputation in backward) and with (layer, false) right after, so the owner of the
  // parameters can all-gather them and free them again. While a hook is set, a layer run with gradients enabled
  // is checkpointed whatever SetActivationCheckpointing says (autograd keeps no reference to its parameters
  // between forward and backward; backward gathers them again and recomputes); without gradients it runs plainly
  // between the two calls. Must outlive the model's use; an empty function clears it.
  using LayerUseHook = std::function<void(int64_t layer, bool in_use)>;
  void SetLayerUseHook(LayerUseHook hook) { layer_use_hook_ = std::move(hook); }
  // NEFTune (HF Trainer's neftune_post_forward_hook): while training, the embedding output [B, T, C] gets uniform
  // noise in +-alpha / sqrt(T * C) (float32 arithmetic, drawn from the default generator); 0: off.
  void SetEmbeddingNoise(double alpha) { embedding_noise_alpha_ = alpha; }
  torch::Tensor head_weight();  // [V, C]: lm_head or the tied embedding

  // HF names -> parameters and persistent buffers (lm_head.weight omitted when tied), this rank's pieces.
  std::vector<std::pair<std::string, torch::Tensor>> HfStateDict();
  // Every parameter of this rank (LoRA included), then every buffer (V3's e_score_correction_bias), with its
  // layout.
  std::vector<LayoutParam> LayoutParameters();
  const StageSpec& stage() const { return stage_; }
  const LinearFactory& factory() const { return *factory_; }

  // Mixture-of-experts models: while collecting, every sparse layer's forward appends its router logits
  // [N, E]; TakeAuxLoss turns what was collected into router_aux_loss_coef * LoadBalancingLoss (fp32 scalar,
  // zero when nothing was collected) and clears it. attention_mask [B, T] (optional) leaves padding out.
  bool HasSparseLayers() const;
  void CollectRouterLogits(bool on);
  torch::Tensor TakeAuxLoss(const torch::Tensor& attention_mask);
  // The router logits [N, E] that checkpointed layers (activation checkpointing, ZeRO-3) handed to the model since
  // the last take, in layer order, leaving none: a recomputed layer returns them as outputs of its autograd
  // function (so the loss built on them reaches the recomputed router), whichever sink its MoE had attached. The
  // pipeline takes them into its own per-stage sums (trainer/train/pipeline.cc).
  std::vector<torch::Tensor> TakeRouterLogits();

  DecoderModel model{nullptr};
  Linear lm_head{nullptr};

 private:
  ModelConfig config_;
  std::shared_ptr<const LinearFactory> factory_;
  StageSpec stage_;
  RotaryEmbedding rotary_;
  bool checkpointing_ = false;
  LayerUseHook layer_use_hook_;
  double embedding_noise_alpha_ = 0.0;
  torch::Tensor AddEmbeddingNoise(torch::Tensor x);  // x [B, T, C]
  std::vector<torch::Tensor> router_logits_;
};
TORCH_MODULE(CausalLM);

// labels [B, T] -> [B, T] with labels[:, t] = labels[:, t + 1] and -100 at the end: position t predicts t + 1.
torch::Tensor ShiftLabels(const torch::Tensor& labels);

// Builds the boolean attention mask [B, 1, T, S] (true = may attend), or nullopt when plain causal attention
// (SDPA is_causal) computes the same thing.
std::optional<torch::Tensor> BuildAttentionMask(const ForwardInputs& in, int64_t batch, int64_t q_len, int64_t past_len,
                                                std::optional<int64_t> sliding_window, const torch::Device& device);

// Loads config.json + safetensors weights (single or sharded) into a new model; with a factory or a stage,
// each parameter gets its piece of the full tensor.
StatusOr<CausalLM> LoadCausalLM(const std::string& model_dir, const LoadOptions& options = {});
// Writes config.json + weights (sharded past max_shard_bytes) in HF format.
Status SaveCausalLM(CausalLM& lm, const std::string& out_dir, uint64_t max_shard_bytes = 5ull << 30);
// Initialises weights as HF's _init_weights: normal(0, initializer_range) for linears and embeddings, ones
// for norms, zeros for biases. Deterministic for a seed.
void InitWeights(CausalLM& lm, uint64_t seed);

torch::ScalarType DtypeFromName(const std::string& name);  // "float32"/"fp32", "bfloat16"/"bf16", ...
std::string DtypeName(torch::ScalarType t);                // "float32", "bfloat16", "float16"

}  // namespace anneal::model
