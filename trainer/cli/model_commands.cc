// anneal-train generate / model init.
#include <filesystem>
#include <iostream>
#include <sstream>
#include <tuple>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "trainer/cli/commands.h"
#include "trainer/model/decoder.h"
#include "trainer/model/generate.h"
#include "trainer/model/presets.h"
#include "trainer/model/quant4.h"
#include "trainer/model/quant8.h"
#include "trainer/data/tokenizer.h"
#include "trainer/model/safetensors.h"
#include "trainer/export/peft.h"
#include "trainer/train/finetune.h"
#include "trainer/train/runtime.h"

namespace anneal::trainer {

int& ExitCode() {
  static int code = 0;
  return code;
}

namespace {


int Fail(const Status& st) {
  std::cerr << "error: " << st.message() << "\n";
  ExitCode() = st.code() == StatusCode::kInvalidArgument || st.code() == StatusCode::kNotFound ? 2 : 1;
  return ExitCode();
}

StatusOr<std::vector<int64_t>> ParseIds(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      ids.push_back(std::stoll(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      return InvalidArgumentError("--prompt-ids: '" + item + "' is not a token id (expected e.g. 1,2,3)");
    }
  }
  if (ids.empty()) return InvalidArgumentError("--prompt-ids: no token ids given");
  return ids;
}

// The model of `model_dir` on the requested device, in the requested dtype (default: config.json's).
StatusOr<model::CausalLM> LoadForInference(const std::string& model_dir, const std::string& dtype,
                                           const std::string& device_name) {
  ASSIGN_OR_RETURN(torch::Device device, train::ResolveDevice(device_name, "--device"));
  model::LoadOptions lo;
  lo.device = device;
  if (!dtype.empty()) lo.dtype = model::DtypeFromName(dtype);
  return model::LoadCausalLM(model_dir, lo);
}

struct GenerateArgs {
  std::string model_dir, prompt_ids, prompt, dtype, device = "auto";
  model::GenerateOptions options;
  bool json = false;
};

int RunGenerate(const GenerateArgs& a) {
  // The model directory's tokenizer.json (when it has one) turns --prompt into ids and the output into text.
  std::shared_ptr<data::Tokenizer> tokenizer;
  if (std::filesystem::exists(a.model_dir + "/tokenizer.json")) {
    auto tok = data::Tokenizer::Load(a.model_dir);
    if (!tok.ok()) return Fail(tok.status());
    tokenizer = *tok;
  }
  StatusOr<std::vector<int64_t>> ids = InvalidArgumentError("give --prompt-ids or --prompt");
  if (!a.prompt_ids.empty()) {
    ids = ParseIds(a.prompt_ids);
  } else if (!a.prompt.empty()) {
    if (!tokenizer) return Fail(InvalidArgumentError("--prompt: " + a.model_dir + " has no tokenizer.json; use --prompt-ids"));
    auto enc = tokenizer->Encode(a.prompt, /*add_special_tokens=*/true);
    if (!enc.ok()) return Fail(enc.status());
    ids = std::vector<int64_t>(enc->begin(), enc->end());
  }
  if (!ids.ok()) return Fail(ids.status());
  auto lm = LoadForInference(a.model_dir, a.dtype, a.device);
  if (!lm.ok()) return Fail(lm.status());
  model::GenerateOptions o = a.options;
  if ((*lm)->config().eos_token_id) o.stop_token_ids.push_back(*(*lm)->config().eos_token_id);
  auto out = model::Generate(*lm, *ids, o);
  if (!out.ok()) return Fail(out.status());
  nlohmann::json text = nullptr;
  if (tokenizer) text = tokenizer->Decode(std::vector<int32_t>(out->begin(), out->end()), /*skip_special_tokens=*/true);
  if (a.json) {
    std::cout << nlohmann::json{{"ids", *out}, {"text", text}}.dump() << "\n";
  } else if (tokenizer) {
    std::cout << text.get<std::string>() << "\n";
  } else {
    for (size_t i = 0; i < out->size(); ++i) std::cout << (i ? "," : "") << (*out)[i];
    std::cout << "\n";
  }
  return 0;
}

struct InitArgs {
  std::string arch = "llama", preset = "tiny", out, dtype = "float32", tokenizer;
  int64_t vocab_size = 0, layers = 0;
  uint64_t seed = 0;
  bool tied = false, untied = false;
};

int RunModelInit(const InitArgs& a) {
  int64_t vocab = a.vocab_size;
  std::optional<model::TokenizerFacts> facts;
  if (!a.tokenizer.empty()) {
    auto f = model::ReadTokenizerFacts(a.tokenizer);
    if (!f.ok()) return Fail(f.status());
    facts = *f;
    if (vocab == 0) vocab = f->vocab_size;
  }
  auto cfg = model::PresetConfig(a.arch, a.preset, vocab);
  if (!cfg.ok()) return Fail(cfg.status());
  if (a.layers > 0) cfg->num_hidden_layers = a.layers;
  if (a.tied) cfg->tie_word_embeddings = true;
  if (a.untied) cfg->tie_word_embeddings = false;
  if (facts) {
    cfg->bos_token_id = facts->bos_token_id;
    cfg->eos_token_id = facts->eos_token_id;
    cfg->pad_token_id = facts->pad_token_id;
  }
  const auto dtype = model::DtypeFromName(a.dtype);
  cfg->torch_dtype = model::DtypeName(dtype);
  model::CausalLM lm(*cfg, torch::TensorOptions().dtype(dtype));
  model::InitWeights(lm, a.seed);
  if (auto st = model::SaveCausalLM(lm, a.out); !st.ok()) return Fail(st);
  if (!a.tokenizer.empty()) {
    if (auto st = train::CopyTokenizerFiles(a.tokenizer, a.out); !st.ok()) return Fail(st);
  }
  int64_t params = 0;
  for (const auto& p : lm->parameters()) params += p.numel();
  std::cout << "wrote a random " << a.arch << " (" << a.preset << ", " << params << " parameters, "
            << cfg->torch_dtype << ", vocab " << cfg->vocab_size << ") to " << a.out << "\n";
  return 0;
}

struct LogitsArgs {
  std::string model_dir, adapter, inputs, out, dtype, device = "cpu";
};

// Reads input_ids [B, T] (+ optional attention_mask, position_ids, segment_ids) from a safetensors file, writes
// logits [B, T, V] (fp32) to another: the bridge the parity tests use to compare with HF transformers.
int RunLogits(const LogitsArgs& a) {
  auto lm = LoadForInference(a.model_dir, a.dtype, a.device);
  if (!lm.ok()) return Fail(lm.status());
  const torch::Device device = (*lm)->head_weight().device();
  if (!a.adapter.empty()) {
    jobspec::JobSpec spec;
    spec.model.adapter_name_or_path = a.adapter;
    auto applied = train::ApplyFinetuning(*lm, spec, 0);
    if (!applied.ok()) return Fail(applied.status());
    (*lm)->to(device);
  }
  auto file = model::SafetensorsFile::Open(a.inputs);
  if (!file.ok()) return Fail(file.status());
  model::ForwardInputs in;
  auto get = [&](const char* name, torch::Tensor& out) -> Status {
    if (!(*file)->Contains(name)) return Status::Ok();
    ASSIGN_OR_RETURN(torch::Tensor t, (*file)->Tensor(name, torch::kInt64));
    out = t.to(device);
    return Status::Ok();
  };
  for (auto [name, dst] : {std::pair{"input_ids", &in.input_ids}, {"attention_mask", &in.attention_mask},
                           {"position_ids", &in.position_ids}, {"segment_ids", &in.segment_ids}}) {
    if (auto st = get(name, *dst); !st.ok()) return Fail(st);
  }
  if (!in.input_ids.defined()) return Fail(InvalidArgumentError(a.inputs + ": no tensor named 'input_ids'"));
  torch::NoGradGuard no_grad;
  (*lm)->eval();
  torch::Tensor logits = (*lm)->Logits((*lm)->Forward(in)).to(torch::kFloat32);
  if (auto st = model::WriteSafetensors(a.out, {{"logits", logits}}); !st.ok()) return Fail(st);
  return 0;
}

struct QuantizeArgs {
  std::string in, out, type = "nf4", inputs;
  int bits = 4;
  bool no_double_quant = false;
};

// --bits 8: per 2-D tensor <n> [out, in]: <n>.CB (int8) and <n>.SCB (fp32) as bitsandbytes' Int8Params holds
// them, <n>.dequantized (MatMul8bitFp's weight, fp32); with --inputs holding <n> (x [N, in] fp32): the layer
// outputs x W^T of both matmuls and both implementations, <n>.llm_int8 / .llm_int8_reference (MatMul8bitLt,
// threshold 6) and <n>.dequant / .dequant_reference (MatMul8bitFp), and <n>.grad (d sum(llm_int8) / dx).
int RunQuantize8(const QuantizeArgs& a) {
  auto file = model::SafetensorsFile::Open(a.in);
  if (!file.ok()) return Fail(file.status());
  std::shared_ptr<model::SafetensorsFile> inputs;
  if (!a.inputs.empty()) {
    auto in = model::SafetensorsFile::Open(a.inputs);
    if (!in.ok()) return Fail(in.status());
    inputs = std::move(*in);
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, entry] : (*file)->entries()) {
    auto t = (*file)->Tensor(name);
    if (!t.ok()) return Fail(t.status());
    auto w = model::Int8LinearWeight::Make(*t, 0, 1, 0);
    if (!w.ok()) return Fail(w.status());
    out.emplace_back(name + ".CB", w->CB);
    out.emplace_back(name + ".SCB", w->SCB);
    out.emplace_back(name + ".dequantized", w->Dequantize(torch::kFloat32));
    if (!inputs || !inputs->Contains(name)) continue;
    auto x = inputs->Tensor(name);
    if (!x.ok()) return Fail(x.status());
    using model::Int8Impl;
    using model::Int8Matmul;
    for (auto [suffix, how, impl] : {std::tuple{".llm_int8", Int8Matmul::kLlmInt8, Int8Impl::kFast},
                                     std::tuple{".llm_int8_reference", Int8Matmul::kLlmInt8, Int8Impl::kReference},
                                     std::tuple{".dequant", Int8Matmul::kDequantized, Int8Impl::kFast},
                                     std::tuple{".dequant_reference", Int8Matmul::kDequantized, Int8Impl::kReference}}) {
      torch::Tensor xi = x->clone().requires_grad_(true);
      torch::Tensor y = model::Int8Linear(xi, *w, {}, {.how = how, .impl = impl});
      out.emplace_back(name + suffix, y.detach());
      if (std::string(suffix) == ".llm_int8") {
        y.sum().backward();
        out.emplace_back(name + ".grad", xi.grad());
      }
    }
  }
  if (auto st = model::WriteSafetensors(a.out, out); !st.ok()) return Fail(st);
  return 0;
}

// Quantizes every tensor of a safetensors file 4-bit (bitsandbytes' quantize_4bit layout, blocksize 64) and
// writes, per tensor <n>: <n>.packed (uint8), <n>.absmax (uint8 with double quantization, else fp32),
// <n>.absmax2 and <n>.offset (double quantization), <n>.dequantized (fp32) and <n>.dequantized_own (the input's
// dtype): the bridge tests/parity/train/qlora_parity.py compares with bitsandbytes.
int RunQuantize(const QuantizeArgs& a) {
  if (a.bits == 8) return RunQuantize8(a);
  auto type = model::Quant4TypeFromName(a.type);
  if (!type.ok()) return Fail(type.status());
  const model::Quant4Options options{*type, !a.no_double_quant};
  auto file = model::SafetensorsFile::Open(a.in);
  if (!file.ok()) return Fail(file.status());
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, entry] : (*file)->entries()) {
    auto t = (*file)->Tensor(name);
    if (!t.ok()) return Fail(t.status());
    const model::Quant4Tensor q = model::Quantize4bit(*t, options);
    out.emplace_back(name + ".packed", q.packed);
    out.emplace_back(name + ".absmax", q.absmax);
    if (options.double_quant) {
      out.emplace_back(name + ".absmax2", q.absmax2);
      out.emplace_back(name + ".offset", torch::tensor({q.offset}, torch::kFloat32));
    }
    out.emplace_back(name + ".dequantized", model::Dequantize4bit(q, torch::kFloat32));
    out.emplace_back(name + ".dequantized_own", model::Dequantize4bit(q, t->scalar_type()));
  }
  if (auto st = model::WriteSafetensors(a.out, out); !st.ok()) return Fail(st);
  return 0;
}

}  // namespace

void AddModelCommands(CLI::App& app) {
  auto gen_args = std::make_shared<GenerateArgs>();
  CLI::App* gen = app.add_subcommand("generate", "Generate tokens from a Hugging Face model directory");
  gen->add_option("--model", gen_args->model_dir, "Model directory (config.json + safetensors)")->required();
  auto* ids_opt = gen->add_option("--prompt-ids", gen_args->prompt_ids, "Prompt token ids, comma-separated");
  gen->add_option("--prompt", gen_args->prompt, "Prompt text (encoded with the model directory's tokenizer.json)")
      ->excludes(ids_opt);
  gen->add_option("--min-new-tokens", gen_args->options.min_new_tokens,
                  "Tokens to generate before the end-of-sequence token may end it")
      ->check(CLI::NonNegativeNumber);
  gen->add_option("--max-new-tokens", gen_args->options.max_new_tokens, "Tokens to generate")
      ->check(CLI::PositiveNumber)->default_val(32);
  gen->add_option("--temperature", gen_args->options.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", gen_args->options.top_p, "Nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  gen->add_option("--top-k", gen_args->options.top_k, "Sample among the k most likely")->check(CLI::NonNegativeNumber);
  gen->add_option("--seed", gen_args->options.seed, "Sampling seed");
  gen->add_option("--dtype", gen_args->dtype, "float32 | bfloat16 | float16 (default: the model's)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16", "fp32", "bf16", "fp16"}));
  gen->add_option("--device", gen_args->device, "auto | cpu | cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  gen->add_flag("--json", gen_args->json, "Print {\"ids\": [...], \"text\": ...} on one line");
  gen->callback([gen_args] { ExitCode() = RunGenerate(*gen_args); });

  CLI::App* model_cmd = app.add_subcommand("model", "Model utilities");
  model_cmd->require_subcommand(1);
  auto init_args = std::make_shared<InitArgs>();
  CLI::App* init = model_cmd->add_subcommand("init", "Write a random model in Hugging Face format");
  init->add_option("--arch", init_args->arch, "llama | qwen2 | mistral | qwen3 | qwen3_moe | deepseek_v2 | deepseek_v3")
      ->check(CLI::IsMember({"llama", "qwen2", "mistral", "qwen3", "qwen3_moe", "deepseek_v2", "deepseek_v3"}));
  init->add_option("--preset", init_args->preset, "tiny | small | 1b")->check(CLI::IsMember({"tiny", "small", "1b"}));
  init->add_option("--out", init_args->out, "Output directory")->required();
  init->add_option("--vocab-size", init_args->vocab_size, "Vocabulary size (default: the tokenizer's, else 1024)");
  init->add_option("--layers", init_args->layers, "Decoder layers (default: the preset's)")
      ->check(CLI::PositiveNumber);
  init->add_option("--seed", init_args->seed, "Initialisation seed");
  init->add_option("--dtype", init_args->dtype, "float32 | bfloat16 | float16")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  init->add_option("--tokenizer", init_args->tokenizer, "Directory with tokenizer.json to ship with the model");
  init->add_flag("--tied", init_args->tied, "Tie the LM head to the embedding");
  init->add_flag("--untied", init_args->untied, "Separate LM head");
  init->callback([init_args] { ExitCode() = RunModelInit(*init_args); });

  auto logits_args = std::make_shared<LogitsArgs>();
  CLI::App* logits = model_cmd->add_subcommand("logits", "Compute logits for token ids (safetensors in, out)");
  logits->add_option("--model", logits_args->model_dir, "Model directory")->required();
  logits->add_option("--inputs", logits_args->inputs,
                     "safetensors with input_ids [B,T] and optional attention_mask, position_ids, segment_ids")
      ->required();
  logits->add_option("--adapter", logits_args->adapter, "PEFT adapter directory applied (unmerged) on the model");
  logits->add_option("--out", logits_args->out, "Output safetensors file (logits [B,T,V] fp32)")->required();
  logits->add_option("--dtype", logits_args->dtype, "float32 | bfloat16 | float16 (default: the model's)");
  logits->add_option("--device", logits_args->device, "auto | cpu | cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  logits->callback([logits_args] { ExitCode() = RunLogits(*logits_args); });

  auto quantize_args = std::make_shared<QuantizeArgs>();
  CLI::App* quantize =
      model_cmd->add_subcommand("quantize", "Quantize tensors 4- or 8-bit as bitsandbytes does (safetensors in, out)");
  quantize->add_option("--in", quantize_args->in, "Input safetensors file (fp32, bf16 or fp16 tensors)")->required();
  quantize->add_option("--out", quantize_args->out, "Output safetensors file")->required();
  quantize->add_option("--type", quantize_args->type, "nf4 | fp4")->check(CLI::IsMember({"nf4", "fp4"}));
  quantize->add_flag("--no-double-quant", quantize_args->no_double_quant, "Keep the block absmax fp32");
  quantize->add_option("--bits", quantize_args->bits, "4 (NF4/FP4 blocks) or 8 (bnb's Int8Params, row-wise int8)")
      ->check(CLI::IsMember({4, 8}));
  quantize->add_option("--inputs", quantize_args->inputs,
                       "--bits 8: safetensors of layer inputs x [N, in] by weight name (writes the layer outputs)");
  quantize->callback([quantize_args] { ExitCode() = RunQuantize(*quantize_args); });
}

}  // namespace anneal::trainer
