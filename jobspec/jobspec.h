// JobSpec: the job YAML, parsed and validated once, shared by the CLI, the coordinator and the trainer.
//
// Two spellings are accepted (docs/job-spec.md):
//   - native nested:   kind/model/finetuning/data/train/eval/resources/scheduling sections;
//   - LLaMA-Factory's flat keys (model_name_or_path, finetuning_type, lora_rank, dataset, template, cutoff_len,
//     per_device_train_batch_size, learning_rate, num_train_epochs, bf16, output_dir, ...), so an existing
//     LLaMA-Factory config runs unchanged. Flat and nested keys may be mixed; a key given twice is an error.
// Unknown keys are errors that name the key, its location (file:line) and the closest known key. Every
// LLaMA-Factory key the parser knows is honoured (it means what it means in LLaMA-Factory), refused (an error
// saying what to use instead: pissa_init, fp16: true, stage: kto, ...), or ignored with a warning in
// JobSpec::warnings (only keys that change neither the result nor the memory: logging_dir, disable_tqdm, ...);
// docs/job-spec.md tables which is which. Two LLaMA-Factory keys are translated: `deepspeed` (its JSON's
// zero_optimization.stage becomes resources.zero_stage) and `disable_gradient_checkpointing` (the inverse of
// train.gradient_checkpointing, whose default is true in a flat LLaMA-Factory document, as there).
// Every value is validated (type, range, allowed values) with a message naming the key and what is allowed.
// Defaults are resolved at parse time, so ToYaml() writes a complete spec (what the coordinator stores and the
// trainer receives); ParseJobSpec(ToYaml(s)) reproduces s.
//
// No Protobuf, ZeroMQ, RocksDB or LibTorch here: only yaml-cpp.
//
// Thread-safety: pure functions over values.
//
// Example:
//   auto spec = anneal::jobspec::LoadJobSpecFile("job.yaml", {"learning_rate=1e-4"});
//   if (!spec.ok()) { std::cerr << spec.status().message() << "\n"; return 2; }
//   int dp = spec->resources.data_parallel();
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace anneal::jobspec {

// export: LLaMA-Factory's `llamafactory-cli export`; clean: `anneal-train data clean` as a job (CleanSpec)
enum class JobKind { kTrain, kEval, kExport, kClean };
enum class FinetuningType { kLora, kFull, kFreeze };
enum class SaveStrategy { kNo, kSteps, kEpoch };         // HF TrainingArguments.save_strategy ("best" is refused)
enum class Optimizer { kAdamWTorch, kAdamWTorchFused };  // HF optim names of the one AdamW the trainer has
enum class Attention { kAuto, kSdpa, kFa2, kFa3 };       // LLaMA-Factory's flash_attn ("disabled" is refused)

struct ModelSpec {
  std::string model_name_or_path;           // a local HF model directory (config.json + safetensors)
  std::string adapter_name_or_path;         // optional PEFT adapter to continue from / evaluate with
  Attention flash_attn = Attention::kAuto;  // every value runs PyTorch SDPA (see docs/job-spec.md)
  // QLoRA (LLaMA-Factory's quantization keys): the frozen base linear layers are stored as bitsandbytes'
  // Linear4bit / Linear8bitLt store them, quantized at load. 0: not quantized; 4: NF4/FP4; 8: LLM.int8.
  int quantization_bit = 0;
  std::string quantization_method = "bnb";  // bnb (bitsandbytes) only
  std::string quantization_type = "nf4";    // nf4 or fp4
  bool double_quantization = true;          // the block absmax quantized 8-bit too (bnb_4bit_use_double_quant)
  // Mixture-of-experts training options (Megatron-core's spelling). Auxiliary-loss-free balancing (DeepSeek-V3):
  // after each optimizer step every sparse layer's e_score_correction_bias moves by rate * sign(mean load - load).
  bool moe_router_enable_expert_bias = false;
  double moe_router_bias_update_rate = 1e-3;
  // Token dropping: each expert takes at most ceil(tokens * k / experts * factor) slots of a micro-batch; 0 (YAML
  // null, the default): no capacity, no token dropped. Policy probs or position; padding to capacity is
  // result-neutral (the padded slots weigh 0) and only accepted.
  double moe_expert_capacity_factor = 0;
  std::string moe_token_drop_policy = "probs";
  bool moe_pad_expert_input_to_capacity = false;

  bool operator==(const ModelSpec&) const = default;
};

struct FinetuningSpec {
  FinetuningType type = FinetuningType::kLora;
  // sft: supervised; pt: raw text; dpo / rm: preference pairs; kto: answers tagged desirable or not (ppo refused)
  std::string stage = "sft";
  int lora_rank = 8;
  double lora_alpha = 16;  // LLaMA-Factory's default: 2 * lora_rank
  double lora_dropout = 0.0;
  std::vector<std::string> lora_target = {"all"};  // "all" or module names: q_proj, k_proj, ..., down_proj
  bool use_rslora = false;
  bool use_dora = false;  // DoRA: LoRA with a trained magnitude per output row (peft's use_dora)
  // LoRA: modules trained in full next to the adapters and saved in it (LLaMA-Factory's additional_target, peft's
  // modules_to_save): embed_tokens, lm_head.
  std::vector<std::string> additional_target;
  int freeze_trainable_layers = 2;  // freeze: train the last N layers (negative: the first -N)
  std::vector<std::string> freeze_trainable_modules = {"all"};
  // stage dpo (LLaMA-Factory's RLHFArguments): the loss over (chosen, rejected) pairs. sigmoid, hinge and ipo
  // compare with a reference model (the base: LoRA's adapters switched off, or a frozen copy for full / freeze);
  // orpo and simpo need none.
  std::string pref_loss = "sigmoid";  // sigmoid, hinge, ipo, orpo, simpo
  double pref_beta = 0.1;
  double pref_ftx = 0.0;     // + pref_ftx * the chosen answer's SFT loss
  double simpo_gamma = 0.5;  // simpo's target reward margin
  // stage kto (pref_beta and pref_ftx too): the weights of the desirable and undesirable answers' losses
  double kto_chosen_weight = 1.0, kto_rejected_weight = 1.0;
  // LoRA+ (LLaMA-Factory's loraplus_lr_ratio): lora_B trains at learning_rate x this ratio; 0: off.
  double loraplus_lr_ratio = 0.0;
  // PiSSA (LLaMA-Factory's pissa_init / pissa_iter / pissa_convert; peft's init_lora_weights "pissa" or
  // "pissa_niter_<pissa_iter>"): the adapter starts from W's top lora_rank singular triplets and the frozen base
  // keeps the residual. pissa_convert also saves the initial adapter (output_dir/pissa_init) and, at the end, the
  // trained one converted to a plain LoRA adapter of rank 2r for the original base (output_dir/pissa_converted).
  bool pissa_init = false;
  int pissa_iter = 16;  // -1: full SVD; otherwise randomized SVD with this many subspace iterations
  bool pissa_convert = false;

  bool operator==(const FinetuningSpec&) const = default;
};

struct DataSpec {
  std::vector<std::string> dataset;  // names in dataset_info.json, or file paths
  std::vector<std::string> eval_dataset;
  std::string dataset_dir = "data";
  std::string template_name = "default";  // YAML key: template
  int cutoff_len = 2048;
  std::optional<int64_t> max_samples;
  std::string mix_strategy = "concat";   // concat, interleave_under, interleave_over, interleave_once
  std::vector<double> interleave_probs;  // one per dataset, summing to 1; empty: round-robin interleave
  double val_size = 0.0;                 // fraction (< 1) or a count (>= 1) of examples held out
  bool packing = false;                  // default: true for stage pt, false for sft (LLaMA-Factory's rule)
  bool neat_packing = false;
  bool train_on_prompt = false;
  bool mask_history = false;
  bool skip_bad_rows = false;
  std::string tokenized_cache_dir;      // empty: <output_dir>/../.anneal-cache
  int preprocessing_batch_size = 1000;  // stage pt packing: rows grouped together (LLaMA-Factory's map batch)
  int preprocessing_num_workers = 1;    // stage pt packing: contiguous shards, each grouped on its own

  bool operator==(const DataSpec&) const = default;
};

struct TrainSpec {
  std::string output_dir;
  int per_device_train_batch_size = 1;
  int per_device_eval_batch_size = 1;
  int gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;                    // > 0 overrides num_train_epochs
  std::string lr_scheduler_type = "linear";  // linear, cosine, constant, constant_with_warmup
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;  // > 0 overrides warmup_ratio
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  Optimizer optim = Optimizer::kAdamWTorchFused;  // HF's default with torch >= 2.8; both are the same AdamW
  double max_grad_norm = 1.0;                     // <= 0 disables clipping
  double neftune_noise_alpha = 0.0;  // NEFTune: uniform noise on the input embeddings while training; 0: off
  bool bf16 = false;
  bool fp16 = false;  // always false: fp16: true is refused (no loss scaler; use bf16)
  int64_t seed = 42;
  bool gradient_checkpointing = false;  // default true in a flat (LLaMA-Factory) document, false in a nested one
  int64_t logging_steps = 10;
  std::string report_to = "none";  // none or tensorboard (LLaMA-Factory's all = tensorboard): event files in runs/
  bool plot_loss = false;          // training_loss.png (+ training_eval_loss.png) in output_dir at the end
  SaveStrategy save_strategy = SaveStrategy::kSteps;
  int64_t save_steps = 500;      // save_strategy steps: every N steps and at the end; 0: only at the end
  int64_t save_total_limit = 0;  // keep the latest N checkpoints; 0 keeps all
  int64_t keep_best = 0;         // also keep the best K by metric_for_best_model
  std::string metric_for_best_model = "eval_loss";
  bool greater_is_better = false;
  std::string eval_strategy = "no";  // no, steps, epoch
  int64_t eval_steps = 0;
  // Stop after this many evaluations without improvement of metric_for_best_model (LLaMA-Factory's key, HF's
  // EarlyStoppingCallback patience); 0: never.
  int64_t early_stopping_steps = 0;
  bool load_best_model_at_end = false;  // export the best evaluated checkpoint's weights, not the last ones
  std::string resume_from_checkpoint;   // a checkpoint-N path or "latest"
  bool overwrite_output_dir = false;
  std::string device = "auto";  // auto (cuda when available), cpu, cuda

  bool operator==(const TrainSpec&) const = default;
};

struct EvalSpec {
  std::vector<std::string> tasks = {"loss"};  // loss, mmlu, generate
  std::string task_dir;                       // mmlu: directory of <subject>_dev.csv / <subject>_test.csv
  int n_shot = 5;
  int max_new_tokens = 64;
  int min_new_tokens = 0;   // generate: tokens before the end-of-sequence token may end an answer
  int num_samples = 8;      // generate: how many prompts to sample
  std::string output_file;  // empty: <output_dir>/eval_results.json

  bool operator==(const EvalSpec&) const = default;
};

// kind: export merges an adapter (or applies a full/freeze checkpoint) into its base model and writes an HF
// model (config.json, sharded safetensors, the tokenizer): LLaMA-Factory's export keys.
struct ExportSpec {
  std::string dir;  // flat: export_dir; the job's output_dir (each defaults to the other)
  int size_gb = 5;  // flat: export_size; largest safetensors shard, in GB (10^9 bytes)

  bool operator==(const ExportSpec&) const = default;
};

// kind: clean runs `data clean` (trainer/data/clean.h; docs/data.md) over data.dataset (data.dataset_dir,
// max_samples, skip_bad_rows) and writes into the job's output_dir: <dataset_name>.jsonl (the kept rows),
// dataset_info.json naming it <dataset_name>, and clean_report.json. No model: model keys are not needed.
// The YAML section `clean` (nested keys only), each the `data clean` option of the same name.
struct CleanSpec {
  std::string dataset_name = "cleaned";  // the name written in output_dir/dataset_info.json
  std::string normalize = "NFC";         // NFC, NFKC, NFD, NFKD, none
  bool strip_markup = false;
  std::vector<std::string> mask_pii;   // email, phone, id
  std::vector<std::string> scripts;    // Unicode scripts (Latin, Han, ...) or zh, ja, ko, ru, ...
  double script_fraction = 0.5;        // (0, 1]
  std::vector<std::string> languages;  // CLD2 language codes (en, zh, ...): the statistical language filter
  double language_confidence = 0.5;    // (0, 1]
  int64_t min_chars = 0;               // 0: no limit
  int64_t max_chars = 0;               // 0: no limit
  bool exact_dedup = true;
  bool near_dedup = false;
  double jaccard_threshold = 0.8;  // (0, 1)
  int num_perm = 128;              // >= 2
  int shingle = 5;                 // >= 1
  int64_t minhash_seed = 1;        // 0 .. 2^32-1

  bool operator==(const CleanSpec&) const = default;
};

struct ResourceSpec {
  int nodes = 1;
  int gpus_per_node = 1;      // ranks per node (GPU slots, or CPU slots on CPU nodes)
  int tensor_parallel = 1;    // flat: tensor_model_parallel_size
  int pipeline_parallel = 1;  // flat: pipeline_model_parallel_size
  int expert_parallel = 1;    // flat: expert_model_parallel_size; carved from data parallel (MoE models only)
  int zero_stage = 0;         // 0, 1 (optimizer state sharded over dp), 2 (and gradients), 3 (and parameters)
  // none, optimizer (AdamW's state and step in host memory; zero_stage >= 1) or optimizer+params (and ZeRO-3's
  // parameter shards; zero_stage 3). DeepSpeed's offload_optimizer / offload_param with device cpu.
  std::string offload = "none";
  bool sequence_parallel = false;
  int pipeline_microbatches = 0;           // 0: gradient_accumulation_steps
  std::string pipeline_schedule = "1f1b";  // 1f1b or gpipe (the simple reference schedule)
  double bucket_cap_mb = 25;               // data-parallel all-reduce bucket size (flat: ddp_bucket_cap_mb)
  // DeepSpeed's bucket sizes in elements (0: bucket_cap_mb; -1: "auto", resolved from the model's hidden_size as
  // HF's deepspeed integration does): the gradient reduce(-scatter) buckets, and the ZeRO parameter gathers.
  int64_t reduce_bucket_size = 0;
  int64_t gather_bucket_size = 0;
  int comm_timeout_s = 600;  // collective timeout: a dead peer becomes an error after this
  // Whether the spec names nodes or gpus_per_node. The resource keys are the coordinator's business: a spec
  // without them runs under any launcher (torchrun, srun) at the world size its environment gives, which
  // tp x pp must divide; with them, the launcher's world size must equal nodes x gpus_per_node. ToYaml writes
  // the two keys only when given, so the round trip keeps this.
  bool world_size_given = false;

  int world_size() const { return nodes * gpus_per_node; }
  int data_parallel() const { return world_size() / (tensor_parallel * pipeline_parallel); }

  bool operator==(const ResourceSpec&) const = default;
};

struct SchedulingSpec {
  std::string name;
  int priority = 0;      // higher runs first; FIFO within a priority
  int max_attempts = 3;  // 1 = no retry
  // Anneal's sharing keys (docs/job-spec.md "Scheduling keys"), copied into the job record at submit.
  std::optional<int64_t> time_limit_s;  // wall-clock limit of one run, checkpointed and stopped past it; none
  std::map<std::string, std::string> node_selector;  // labels every node of the placement must carry
  int max_preemptions = 10;                          // times the job may be preempted; 0: never
  // Restarts after an infrastructure fault (a node of the gang lost: dead host, agent gone past its reconnect
  // grace, node removed), counted apart from max_attempts, which counts the job's own failures.
  int max_infra_restarts = 10;
  // Without a shared filesystem (coordinator --no-shared-filesystem): the node whose disk holds the spec's model,
  // adapter and dataset paths; they are staged from it to every node of the job. Empty: the coordinator's
  // --artifact-source node. Ignored with a shared filesystem.
  std::string stage_from;

  bool operator==(const SchedulingSpec&) const = default;
};

struct JobSpec {
  JobKind kind = JobKind::kTrain;
  ModelSpec model;
  FinetuningSpec finetuning;
  DataSpec data;
  TrainSpec train;
  EvalSpec eval;
  ExportSpec export_;  // YAML section `export` (kind: export only)
  CleanSpec clean;     // YAML section `clean` (kind: clean only)
  ResourceSpec resources;
  SchedulingSpec scheduling;
  std::vector<std::string> warnings;  // accepted-but-ignored LLaMA-Factory keys, deprecations

  bool operator==(const JobSpec&) const = default;
};

std::string_view JobKindName(JobKind kind);             // "train", "eval", "export", "clean"
std::string_view FinetuningTypeName(FinetuningType t);  // "lora", "full", "freeze"
std::string_view SaveStrategyName(SaveStrategy s);      // "no", "steps", "epoch"
std::string_view OptimizerName(Optimizer o);            // "adamw_torch", "adamw_torch_fused"
std::string_view AttentionName(Attention a);            // "auto", "sdpa", "fa2", "fa3"

// Parses and validates. `source` names the text in messages ("job.yaml"). `overrides` are "key=value" strings
// (flat or dotted nested keys, e.g. "train.learning_rate=1e-4" or "learning_rate=1e-4") applied before
// validation. Errors: INVALID_ARGUMENT naming source:line, the key and the allowed values.
// With options.open_files false, a key that names a file read at parse time (LLaMA-Factory's `deepspeed`) and
// is not replaced by an override of its target is refused instead of opened: the coordinator parses so.
struct ParseOptions {
  bool open_files = true;
};
StatusOr<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view source,
                               const std::vector<std::string>& overrides = {}, const ParseOptions& options = {});

// Reads the file (NOT_FOUND / PERMISSION_DENIED naming the path) and parses it.
StatusOr<JobSpec> LoadJobSpecFile(const std::string& path, const std::vector<std::string>& overrides = {});

// The complete spec in the native nested spelling, every default explicit. `warnings` are not written, so the
// text depends on the settings alone (ParseJobSpec(ToYaml(s)) == s with its warnings cleared).
std::string ToYaml(const JobSpec& spec);

// What the cluster can offer, for the submit-time check of specs that can never run.
struct ClusterShape {
  int node_count = 0;
  int max_slots_per_node = 0;
  int total_slots = 0;
};

// Rejects specs no placement can ever satisfy: more ranks per node than any node has, more nodes than the
// cluster has, tensor parallel that does not fit in one node, tp*pp not dividing the world size.
// (tp*pp vs world size is also checked by ParseJobSpec; this adds what depends on the cluster.)
// Errors: INVALID_ARGUMENT naming the resource key, what the job needs and what the cluster has.
Status CheckFitsCluster(const JobSpec& spec, const ClusterShape& cluster);

}  // namespace anneal::jobspec
