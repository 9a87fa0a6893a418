// The field table: one row per JobSpec field with its spellings, type, allowed values (as the message says
// them), a one-line doc and how to read/write the member. Ranges live in the decoders, so a wrong type and an
// out-of-range value get the same message ("expected a positive integer, got '0'").
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "jobspec/schema.h"
#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

template <class T>
using Decoder = std::function<bool(const YAML::Node&, T*)>;
template <class T>
using Ref = std::function<T&(JobSpec&)>;

// Spellings of one field.
struct Names {
  std::string nested;
  std::string flat;
  std::vector<std::string> nested_aliases = {};
  std::vector<std::string> flat_aliases = {};
};

template <class T>
Field Make(Names names, std::string type, std::string expected, std::string doc, Ref<T> ref, Decoder<T> decode,
           std::function<YAML::Node(const T&)> encode) {
  Field f;
  f.nested = std::move(names.nested);
  f.flat = std::move(names.flat);
  f.nested_aliases = std::move(names.nested_aliases);
  f.flat_aliases = std::move(names.flat_aliases);
  f.type = std::move(type);
  f.expected = expected;
  f.doc = std::move(doc);
  f.assign = [ref, decode, expected](const YAML::Node& value, std::string_view key, std::string_view where,
                                     JobSpec& spec) -> Status {
    T decoded{};
    if (!decode(value, &decoded)) {
      return InvalidArgumentError(
          fmt::format("key '{}' {}: expected {}, got {}", key, where, expected, Describe(value)));
    }
    ref(spec) = std::move(decoded);
    return Status::Ok();
  };
  f.get = [ref, encode](const JobSpec& spec) { return encode(ref(const_cast<JobSpec&>(spec))); };
  return f;
}

// ---- decoders ----------------------------------------------------------------------------------------------

Decoder<int> IntIn(int64_t lo, int64_t hi) {
  return [lo, hi](const YAML::Node& n, int* out) {
    int64_t v;
    if (!DecodeInt64(n, &v) || v < lo || v > hi) return false;
    *out = static_cast<int>(v);
    return true;
  };
}
Decoder<int64_t> Int64In(int64_t lo, int64_t hi = std::numeric_limits<int64_t>::max()) {
  return [lo, hi](const YAML::Node& n, int64_t* out) { return DecodeInt64(n, out) && *out >= lo && *out <= hi; };
}
Decoder<double> NumberWhere(std::function<bool(double)> ok) {
  return [ok](const YAML::Node& n, double* out) { return DecodeNumber(n, out) && ok(*out); };
}
Decoder<bool> Bool() {
  return [](const YAML::Node& n, bool* out) { return DecodeBool(n, out); };
}
Decoder<std::string> AnyString() {
  return [](const YAML::Node& n, std::string* out) { return DecodeString(n, out); };
}
Decoder<std::string> NonEmptyString() {
  return [](const YAML::Node& n, std::string* out) { return DecodeString(n, out) && !out->empty(); };
}
Decoder<std::string> OneOf(std::vector<std::string> allowed) {
  return [allowed](const YAML::Node& n, std::string* out) {
    return DecodeString(n, out) && std::find(allowed.begin(), allowed.end(), *out) != allowed.end();
  };
}
// A list whose items are all in `allowed` (any item when `allowed` is empty); `non_empty` refuses [].
Decoder<std::vector<std::string>> ListOf(std::vector<std::string> allowed, bool non_empty) {
  return [allowed, non_empty](const YAML::Node& n, std::vector<std::string>* out) {
    if (!DecodeList(n, out) || (non_empty && out->empty())) return false;
    if (allowed.empty()) return true;
    return std::all_of(out->begin(), out->end(), [&](const std::string& item) {
      return std::find(allowed.begin(), allowed.end(), item) != allowed.end();
    });
  };
}

std::string Join(const std::vector<std::string>& items) {
  return fmt::format("{}", fmt::join(items, ", "));
}

// ---- encoders ----------------------------------------------------------------------------------------------

YAML::Node EncInt(const int& v) {
  return YAML::Node(std::to_string(v));
}
YAML::Node EncInt64(const int64_t& v) {
  return YAML::Node(std::to_string(v));
}
YAML::Node EncNumber(const double& v) {
  return YAML::Node(FormatNumber(v));
}
YAML::Node EncBool(const bool& v) {
  return YAML::Node(v ? "true" : "false");
}
YAML::Node EncString(const std::string& v) {
  return YAML::Node(v);
}
YAML::Node EncList(const std::vector<std::string>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& item : v) n.push_back(item);
  return n;
}

// ---- field kinds -------------------------------------------------------------------------------------------

constexpr int64_t kIntMax = std::numeric_limits<int>::max();

Field PositiveInt(Names n, std::string doc, Ref<int> ref) {
  return Make<int>(std::move(n), "integer", "a positive integer", std::move(doc), ref, IntIn(1, kIntMax), EncInt);
}
Field NonNegativeInt(Names n, std::string doc, Ref<int> ref) {
  return Make<int>(std::move(n), "integer", "an integer >= 0", std::move(doc), ref, IntIn(0, kIntMax), EncInt);
}
Field NonNegativeInt64(Names n, std::string doc, Ref<int64_t> ref) {
  return Make<int64_t>(std::move(n), "integer", "an integer >= 0", std::move(doc), ref, Int64In(0), EncInt64);
}
Field PositiveInt64(Names n, std::string doc, Ref<int64_t> ref) {
  return Make<int64_t>(std::move(n), "integer", "a positive integer", std::move(doc), ref, Int64In(1), EncInt64);
}
Field Number(Names n, std::string expected, std::function<bool(double)> ok, std::string doc, Ref<double> ref) {
  return Make<double>(std::move(n), "number", std::move(expected), std::move(doc), ref, NumberWhere(ok), EncNumber);
}
Field Flag(Names n, std::string doc, Ref<bool> ref) {
  return Make<bool>(std::move(n), "bool", "true or false", std::move(doc), ref, Bool(), EncBool);
}
Field Text(Names n, std::string doc, Ref<std::string> ref) {
  return Make<std::string>(std::move(n), "string", "a string", std::move(doc), ref, AnyString(), EncString);
}
Field RequiredText(Names n, std::string doc, Ref<std::string> ref) {
  return Make<std::string>(std::move(n), "string", "a non-empty string", std::move(doc), ref, NonEmptyString(),
                           EncString);
}
Field Choice(Names n, std::vector<std::string> allowed, std::string doc, Ref<std::string> ref) {
  return Make<std::string>(std::move(n), "enum", "one of " + Join(allowed), std::move(doc), ref, OneOf(allowed),
                           EncString);
}
Field List(Names n, std::vector<std::string> allowed, bool non_empty, std::string doc,
           Ref<std::vector<std::string>> ref) {
  std::string expected = allowed.empty() ? (non_empty ? "a non-empty list (or comma-separated string)"
                                                      : "a list (or comma-separated string)")
                                         : "a list (or comma-separated string) of " + Join(allowed);
  Field f = Make<std::vector<std::string>>(std::move(n), "list", std::move(expected), std::move(doc), ref,
                                           ListOf(allowed, non_empty), EncList);
  if (allowed.empty()) return f;
  // A refused list names its first item that is not allowed: "[email, address]" alone leaves the user to find it.
  f.assign = [assign = f.assign, allowed](const YAML::Node& value, std::string_view key, std::string_view where,
                                          JobSpec& spec) -> Status {
    Status status = assign(value, key, where, spec);
    std::vector<std::string> items;
    if (status.ok() || !DecodeList(value, &items)) return status;
    for (const auto& item : items) {
      if (std::find(allowed.begin(), allowed.end(), item) == allowed.end()) {
        return InvalidArgumentError(fmt::format("{} ('{}' is not one of them)", status.message(), item));
      }
    }
    return status;
  };
  return f;
}

// An enum field: the names in `values` map to E. `unsupported` (may be empty) follows the list in messages and
// says what is refused and what to use instead, e.g. "(disabled is not built: use auto)".
template <class E>
Field Enum(Names n, std::vector<std::pair<std::string, E>> values, std::string unsupported, std::string doc,
           Ref<E> ref) {
  std::vector<std::string> names;
  for (const auto& [name, value] : values) names.push_back(name);
  std::string expected = "one of " + Join(names) + (unsupported.empty() ? "" : " " + unsupported);
  return Make<E>(
      std::move(n), "enum", std::move(expected), std::move(doc), ref,
      [values](const YAML::Node& node, E* out) {
        std::string s;
        if (!DecodeString(node, &s)) return false;
        for (const auto& [name, value] : values) {
          if (name == s) {
            *out = value;
            return true;
          }
        }
        return false;
      },
      [values](const E& e) {
        for (const auto& [name, value] : values) {
          if (value == e) return YAML::Node(name);
        }
        return YAML::Node(values.front().first);
      });
}

// report_to: LLaMA-Factory's string or list of integrations. Only TensorBoard (files in output_dir) is built;
// wandb, mlflow and the other services are refused rather than ignored: they would send the job's metrics to an
// outside service. Stored normalized: "none" or "tensorboard".
Field ReportTo() {
  return Make<std::string>(
      {"train.report_to", "report_to"}, "enum",
      "none, tensorboard or all (= tensorboard), a string or a list (wandb, mlflow and other services are not "
      "supported: they would send the job's metrics outside the cluster; use tensorboard)",
      "where training metrics also go: none, or tensorboard (event files in output_dir/runs/)",
      [](JobSpec& s) -> std::string& { return s.train.report_to; },
      [](const YAML::Node& n, std::string* out) {
        std::vector<std::string> items;
        if (!DecodeList(n, &items)) return false;
        bool tensorboard = false, none = false;
        for (const std::string& item : items) {
          if (item == "tensorboard" || item == "all") {
            tensorboard = true;
          } else if (item == "none") {
            none = true;
          } else {
            return false;
          }
        }
        if (tensorboard && none) return false;
        *out = tensorboard ? "tensorboard" : "none";
        return true;
      },
      EncString);
}

// ---- sharing keys ------------------------------------------------------------------------------------------

// Node labels are bounded as the coordinator bounds an agent's (AgentLimits: max_label_length,
// max_labels_per_node): a selector longer than that could never match a node.
constexpr size_t kMaxLabelBytes = 256;
constexpr size_t kMaxSelectorPairs = 64;

// Why `key: value` is not a usable label pair ("" when it is).
std::string BadLabelPair(std::string_view key, std::string_view value) {
  if (key.empty()) return "a label key is empty";
  if (key.find('=') != std::string_view::npos) return fmt::format("label key '{}' contains '='", key);
  if (key.size() > kMaxLabelBytes) {
    return fmt::format("label key '{}...' is {} bytes (at most {})", key.substr(0, 32), key.size(), kMaxLabelBytes);
  }
  if (value.size() > kMaxLabelBytes) {
    return fmt::format("the value of label '{}' is {} bytes (at most {})", key, value.size(), kMaxLabelBytes);
  }
  return "";
}

// A mapping {key: value}, or a string "key=value,key=value" (handy in an override).
Status DecodeSelector(const YAML::Node& node, std::map<std::string, std::string>* out) {
  out->clear();
  std::vector<std::pair<std::string, std::string>> pairs;
  if (node.IsMap()) {
    for (const auto& pair : node) {
      if (!pair.first.IsScalar() || !pair.second.IsScalar())
        return InvalidArgumentError("expected text keys and values");
      pairs.emplace_back(pair.first.Scalar(), pair.second.Scalar());
    }
  } else {
    std::vector<std::string> items;
    if (!DecodeList(node, &items)) return InvalidArgumentError(fmt::format("got {}", Describe(node)));
    for (const std::string& item : items) {
      const size_t eq = item.find('=');
      if (eq == std::string::npos) return InvalidArgumentError(fmt::format("'{}' is not key=value", item));
      pairs.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
  }
  if (pairs.size() > kMaxSelectorPairs) {
    return InvalidArgumentError(fmt::format("{} labels (at most {})", pairs.size(), kMaxSelectorPairs));
  }
  for (const auto& [key, value] : pairs) {
    if (std::string why = BadLabelPair(key, value); !why.empty()) return InvalidArgumentError(why);
    if (!out->emplace(key, value).second) return InvalidArgumentError(fmt::format("label '{}' given twice", key));
  }
  return Status::Ok();
}

Field NodeSelector(Names n, std::string doc) {
  Field f;
  f.nested = std::move(n.nested);
  f.flat = std::move(n.flat);
  f.type = "map";
  f.expected = "a mapping of node label to value ({gpu: h100}, or \"gpu=h100,zone=a\")";
  f.doc = std::move(doc);
  const std::string expected = f.expected;
  f.assign = [expected](const YAML::Node& value, std::string_view key, std::string_view where,
                        JobSpec& spec) -> Status {
    std::map<std::string, std::string> selector;
    if (Status st = DecodeSelector(value, &selector); !st.ok()) {
      return InvalidArgumentError(fmt::format("key '{}' {}: expected {}: {}", key, where, expected, st.message()));
    }
    spec.scheduling.node_selector = std::move(selector);
    return Status::Ok();
  };
  f.get = [](const JobSpec& spec) {
    YAML::Node map(YAML::NodeType::Map);
    for (const auto& [key, value] : spec.scheduling.node_selector) map[key] = value;
    return map;
  };
  return f;
}

Field Duration(Names n, std::string doc, Ref<std::optional<int64_t>> ref) {
  return Make<std::optional<int64_t>>(
      std::move(n), "duration", "a duration such as 90m, 2h, 1h30m or seconds as a number, from 1s to 365d",
      std::move(doc), ref,
      [](const YAML::Node& node, std::optional<int64_t>* out) {
        int64_t seconds = 0;
        if (!DecodeDuration(node, &seconds)) return false;
        *out = seconds;
        return true;
      },
      [](const std::optional<int64_t>& v) { return v ? YAML::Node(FormatDuration(*v)) : YAML::Node(); });
}

// The MLA projections (q_a_proj ... kv_b_proj) exist in deepseek_v2 / deepseek_v3 models only.
const std::vector<std::string> kLoraTargets = {"all",
                                               "q_proj",
                                               "k_proj",
                                               "v_proj",
                                               "o_proj",
                                               "gate_proj",
                                               "up_proj",
                                               "down_proj",
                                               "q_a_proj",
                                               "q_b_proj",
                                               "kv_a_proj_with_mqa",
                                               "kv_b_proj"};

#define REF(expr)            \
  [](JobSpec & s) -> auto& { \
    return s.expr;           \
  }

}  // namespace

std::vector<Field> BuildFields() {
  std::vector<Field> f;
  // kind
  f.push_back(Make<JobKind>(
      {"kind", "kind"}, "enum", "one of train, eval, export, clean",
      "what the job does: train (fine-tune), eval, export (merge an adapter into its base model), or clean (data "
      "clean: filter and dedup a dataset)",
      REF(kind),
      [](const YAML::Node& n, JobKind* out) {
        std::string s;
        if (!DecodeString(n, &s)) return false;
        if (s == "train")
          *out = JobKind::kTrain;
        else if (s == "eval")
          *out = JobKind::kEval;
        else if (s == "export")
          *out = JobKind::kExport;
        else if (s == "clean")
          *out = JobKind::kClean;
        else
          return false;
        return true;
      },
      [](const JobKind& k) { return YAML::Node(std::string(JobKindName(k))); }));
  // model
  f.push_back(RequiredText({"model.model_name_or_path", "model_name_or_path"},
                           "local HF model directory (config.json + *.safetensors); required",
                           REF(model.model_name_or_path)));
  f.push_back(Text({"model.adapter_name_or_path", "adapter_name_or_path"},
                   "PEFT adapter directory to continue training from or to evaluate with",
                   REF(model.adapter_name_or_path)));
  f.push_back(Enum<Attention>(
      {"model.flash_attn", "flash_attn"},
      {{"auto", Attention::kAuto}, {"sdpa", Attention::kSdpa}, {"fa2", Attention::kFa2}, {"fa3", Attention::kFa3}},
      "(disabled, eager attention, is not built: use auto, the same result up to rounding "
      "with less memory)",
      "attention kernel: every value runs PyTorch SDPA (fa2/fa3 with a warning)", REF(model.flash_attn)));
  f.push_back(Make<int>(
      {"model.quantization_bit", "quantization_bit"}, "integer", "4 or 8 (bitsandbytes) or null",
      "QLoRA: store the frozen base linear layers 4-bit (bitsandbytes' block-wise NF4/FP4) or 8-bit (bitsandbytes' "
      "Linear8bitLt: row-wise int8, LLM.int8 matmul with outlier threshold 6), quantized at load; 0 or null: not "
      "quantized",
      REF(model.quantization_bit),
      [](const YAML::Node& n, int* out) {
        if (n.IsNull()) {
          *out = 0;
          return true;
        }
        int64_t v;
        if (!DecodeInt64(n, &v) || (v != 0 && v != 4 && v != 8)) return false;
        *out = static_cast<int>(v);
        return true;
      },
      EncInt));
  f.push_back(Make<std::string>(
      {"model.quantization_method", "quantization_method"}, "enum",
      "bnb (bitsandbytes, quantized at load; gptq, awq, aqlm, quanto, eetq, hqq, fp8 "
      "and mxfp4 are not built: use bnb)",
      "how quantization_bit quantizes: bnb, bitsandbytes' on-the-fly scheme", REF(model.quantization_method),
      [](const YAML::Node& n, std::string* out) {
        // LLaMA-Factory's older spelling of bnb
        if (!DecodeString(n, out) || (*out != "bnb" && *out != "bitsandbytes")) return false;
        *out = "bnb";
        return true;
      },
      EncString));
  f.push_back(Choice({"model.quantization_type", "quantization_type"}, {"nf4", "fp4"},
                     "the 4-bit data type: nf4 (NormalFloat) or fp4 (unused with quantization_bit: 8)",
                     REF(model.quantization_type)));
  f.push_back(Flag({"model.double_quantization", "double_quantization"},
                   "quantize the 4-bit blocks' absmax again (8-bit blocks of 256 around their mean)",
                   REF(model.double_quantization)));
  f.push_back(Flag({"model.moe_router_enable_expert_bias", "moe_router_enable_expert_bias"},
                   "auxiliary-loss-free balancing (DeepSeek-V3, Megatron-core): after each optimizer step every "
                   "sparse layer's e_score_correction_bias moves by moe_router_bias_update_rate towards balance, "
                   "from the tokens routed to each expert over the whole global batch (sigmoid routers only: "
                   "deepseek_v3; full or freeze tuning, stage sft or pt)",
                   REF(model.moe_router_enable_expert_bias)));
  f.push_back(Number(
      {"model.moe_router_bias_update_rate", "moe_router_bias_update_rate"}, "a number > 0",
      [](double v) { return v > 0 && std::isfinite(v); },
      "the step of the expert-bias update: bias_e += rate * sign(mean load - load_e)",
      REF(model.moe_router_bias_update_rate)));
  f.push_back(Make<double>(
      {"model.moe_expert_capacity_factor", "moe_expert_capacity_factor"}, "number", "a number > 0 or null",
      "token dropping (Megatron-core): each expert takes at most ceil(tokens * k / experts * factor) token slots "
      "of a micro-batch, the rest are dropped (moe_token_drop_policy picks which); 0 or null: no capacity, no "
      "token dropped",
      REF(model.moe_expert_capacity_factor),
      [](const YAML::Node& n, double* out) {
        if (n.IsNull()) {
          *out = 0;
          return true;
        }
        return DecodeNumber(n, out) && *out >= 0 && std::isfinite(*out);
      },
      EncNumber));
  f.push_back(Choice({"model.moe_token_drop_policy", "moe_token_drop_policy"}, {"probs", "position"},
                     "with moe_expert_capacity_factor: probs keeps each expert's slots of the highest routing "
                     "weights, position its earliest tokens (Megatron-core's torch.topk over the routing map)",
                     REF(model.moe_token_drop_policy)));
  f.push_back(Flag({"model.moe_pad_expert_input_to_capacity", "moe_pad_expert_input_to_capacity"},
                   "Megatron-core pads every expert's input to its capacity with zero-weight tokens: the same "
                   "result, so accepted and not done",
                   REF(model.moe_pad_expert_input_to_capacity)));
  // finetuning
  f.push_back(Make<FinetuningType>(
      {"finetuning.type", "finetuning_type"}, "enum", "one of lora, full, freeze",
      "lora: low-rank adapters; full: every weight; freeze: only the last layers", REF(finetuning.type),
      [](const YAML::Node& n, FinetuningType* out) {
        std::string s;
        if (!DecodeString(n, &s)) return false;
        if (s == "lora")
          *out = FinetuningType::kLora;
        else if (s == "full")
          *out = FinetuningType::kFull;
        else if (s == "freeze")
          *out = FinetuningType::kFreeze;
        else
          return false;
        return true;
      },
      [](const FinetuningType& t) { return YAML::Node(std::string(FinetuningTypeName(t))); }));
  f.push_back(Make<std::string>({"finetuning.stage", "stage"}, "enum",
                                "one of sft, pt, dpo, rm, kto (ppo is not built yet: use sft, pt, dpo, rm or kto)",
                                "sft: supervised (prompt masked, chat template); pt: raw text, no template, grouped "
                                "into cutoff_len blocks; dpo: preference pairs (ranking datasets) with pref_loss; "
                                "rm: a reward model (value head, pairwise loss) on ranking datasets; kto: answers "
                                "tagged desirable or undesirable (kto_tag datasets), LLaMA-Factory's KTO",
                                REF(finetuning.stage), OneOf({"sft", "pt", "dpo", "rm", "kto"}), EncString));
  f.push_back(Choice({"finetuning.pref_loss", "pref_loss"}, {"sigmoid", "hinge", "ipo", "orpo", "simpo"},
                     "stage dpo's loss: sigmoid (DPO), hinge, ipo (against the reference model), orpo or simpo "
                     "(reference-free); kto_pair is not built",
                     REF(finetuning.pref_loss)));
  f.push_back(Number(
      {"finetuning.pref_beta", "pref_beta"}, "a positive number", [](double v) { return v > 0; },
      "stages dpo and kto: beta of the preference loss", REF(finetuning.pref_beta)));
  f.push_back(Number(
      {"finetuning.pref_ftx", "pref_ftx"}, "a non-negative number", [](double v) { return v >= 0; },
      "stages dpo and kto: weight of the chosen answer's SFT loss added to the preference loss",
      REF(finetuning.pref_ftx)));
  f.push_back(Number(
      {"finetuning.kto_chosen_weight", "kto_chosen_weight"}, "a non-negative number", [](double v) { return v >= 0; },
      "stage kto: weight of the desirable answers' losses", REF(finetuning.kto_chosen_weight)));
  f.push_back(Number(
      {"finetuning.kto_rejected_weight", "kto_rejected_weight"}, "a non-negative number",
      [](double v) { return v >= 0; }, "stage kto: weight of the undesirable answers' losses",
      REF(finetuning.kto_rejected_weight)));
  f.push_back(Number(
      {"finetuning.simpo_gamma", "simpo_gamma"}, "a number", [](double) { return true; },
      "stage dpo, pref_loss simpo: the target reward margin", REF(finetuning.simpo_gamma)));
  f.push_back(Make<double>(
      {"finetuning.loraplus_lr_ratio", "loraplus_lr_ratio"}, "number", "a non-negative number or null",
      "LoRA+: lora_B trains at learning_rate x this ratio (0 or null: off)", REF(finetuning.loraplus_lr_ratio),
      [](const YAML::Node& n, double* out) {
        if (n.IsNull()) {
          *out = 0;
          return true;
        }
        return DecodeNumber(n, out) && *out >= 0;
      },
      EncNumber));
  f.push_back(PositiveInt({"finetuning.lora_rank", "lora_rank"}, "LoRA rank r", REF(finetuning.lora_rank)));
  f.push_back(Number(
      {"finetuning.lora_alpha", "lora_alpha"}, "a positive number", [](double v) { return v > 0; },
      "LoRA alpha (scaling alpha/r); default 2 * lora_rank", REF(finetuning.lora_alpha)));
  f.push_back(Number(
      {"finetuning.lora_dropout", "lora_dropout"}, "a number in [0, 1)", [](double v) { return v >= 0 && v < 1; },
      "dropout on the LoRA input", REF(finetuning.lora_dropout)));
  f.push_back(List({"finetuning.lora_target", "lora_target"}, kLoraTargets, true,
                   "modules that get adapters: all, or names (comma-separated string or list)",
                   REF(finetuning.lora_target)));
  f.push_back(Flag({"finetuning.use_rslora", "use_rslora"}, "rank-stabilized scaling alpha/sqrt(r)",
                   REF(finetuning.use_rslora)));
  f.push_back(List({"finetuning.additional_target", "additional_target"}, {"embed_tokens", "lm_head"}, false,
                   "LoRA: modules trained in full next to the adapters and saved in them (peft's modules_to_save)",
                   REF(finetuning.additional_target)));
  f.push_back(Flag({"finetuning.use_dora", "use_dora"},
                   "DoRA: LoRA with a trained magnitude per output row (peft's use_dora)", REF(finetuning.use_dora)));
  f.push_back(Flag({"finetuning.pissa_init", "pissa_init"},
                   "PiSSA: the LoRA adapter starts from the weight's top singular triplets, the base keeps the "
                   "residual (peft's init_lora_weights pissa)",
                   REF(finetuning.pissa_init)));
  f.push_back(Make<int>(
      {"finetuning.pissa_iter", "pissa_iter"}, "integer", "-1 or an integer >= 0",
      "PiSSA: subspace iterations of the randomized SVD (peft's pissa_niter_N); -1: the full SVD",
      REF(finetuning.pissa_iter),
      [](const YAML::Node& n, int* out) {
        int64_t v;
        if (!DecodeInt64(n, &v) || v < -1 || v > 1000000) return false;
        *out = static_cast<int>(v);
        return true;
      },
      EncInt));
  f.push_back(Flag({"finetuning.pissa_convert", "pissa_convert"},
                   "PiSSA: also save the initial adapter (pissa_init/) and the trained one converted to plain LoRA "
                   "for the original base (pissa_converted/)",
                   REF(finetuning.pissa_convert)));
  f.push_back(Make<int>(
      {"finetuning.freeze_trainable_layers", "freeze_trainable_layers"}, "integer", "a non-zero integer",
      "freeze: train the last N layers (negative: the first -N)", REF(finetuning.freeze_trainable_layers),
      [](const YAML::Node& n, int* out) {
        int64_t v;
        if (!DecodeInt64(n, &v) || v == 0 || v < -kIntMax || v > kIntMax) return false;
        *out = static_cast<int>(v);
        return true;
      },
      EncInt));
  f.push_back(List({"finetuning.freeze_trainable_modules", "freeze_trainable_modules"}, {}, true,
                   "freeze: trainable modules inside those layers (all, mlp, self_attn, ...)",
                   REF(finetuning.freeze_trainable_modules)));
  // data
  f.push_back(List({"data.dataset", "dataset"}, {}, false,
                   "training datasets: names in dataset_dir/dataset_info.json or file paths; required for train",
                   REF(data.dataset)));
  f.push_back(List({"data.eval_dataset", "eval_dataset"}, {}, false,
                   "evaluation datasets (same forms): the validation set during training (instead of val_size), or "
                   "what kind: eval evaluates",
                   REF(data.eval_dataset)));
  f.push_back(RequiredText({"data.dataset_dir", "dataset_dir"}, "directory of dataset_info.json and data files",
                           REF(data.dataset_dir)));
  f.push_back(RequiredText({"data.template", "template"}, "chat template name (default, llama3, qwen, ...)",
                           REF(data.template_name)));
  f.push_back(PositiveInt({"data.cutoff_len", "cutoff_len"}, "maximum tokens per example (longer ones are cut)",
                          REF(data.cutoff_len)));
  f.push_back(Make<std::optional<int64_t>>(
      {"data.max_samples", "max_samples"}, "integer", "a positive integer",
      "use at most this many examples per dataset (null: all)", REF(data.max_samples),
      [](const YAML::Node& n, std::optional<int64_t>* out) {
        int64_t v;
        if (!DecodeInt64(n, &v) || v < 1) return false;
        *out = v;
        return true;
      },
      [](const std::optional<int64_t>& v) { return v ? YAML::Node(std::to_string(*v)) : YAML::Node(); }));
  f.push_back(Choice({"data.mix_strategy", "mix_strategy"},
                     {"concat", "interleave_under", "interleave_over", "interleave_once"},
                     "several datasets: one after another (concat), or interleaved as HF datasets' "
                     "interleave_datasets (under: stop at the first exhausted, over: at the last, once: every row "
                     "once)",
                     REF(data.mix_strategy)));
  f.push_back(Make<std::vector<double>>(
      {"data.interleave_probs", "interleave_probs"}, "list", "a list (or comma-separated string) of numbers >= 0",
      "interleave_*: the probability of drawing each dataset (one per dataset, summing to 1; empty: round-robin)",
      REF(data.interleave_probs),
      [](const YAML::Node& n, std::vector<double>* out) {
        out->clear();
        std::vector<YAML::Node> items;
        if (n.IsSequence()) {
          for (const auto& item : n) items.push_back(item);
        } else {
          std::string s;
          if (!DecodeString(n, &s)) return false;
          std::stringstream in(s);
          for (std::string part; std::getline(in, part, ',');) items.push_back(YAML::Node(part));
        }
        for (const auto& item : items) {
          double v;
          if (!DecodeNumber(item, &v) || v < 0) return false;
          out->push_back(v);
        }
        return true;
      },
      [](const std::vector<double>& v) {
        YAML::Node n(YAML::NodeType::Sequence);
        for (double x : v) n.push_back(EncNumber(x));  // shortest text that reads back to x
        return n;
      }));
  f.push_back(Number(
      {"data.val_size", "val_size"}, "a number >= 0", [](double v) { return v >= 0; },
      "held-out validation split: a fraction (< 1) or a count (>= 1)", REF(data.val_size)));
  f.push_back(
      Flag({"data.packing", "packing"}, "pack several examples into each cutoff_len sequence", REF(data.packing)));
  f.push_back(
      Flag({"data.neat_packing", "neat_packing"}, "packing without cross-example attention", REF(data.neat_packing)));
  f.push_back(Flag({"data.train_on_prompt", "train_on_prompt"}, "also compute the loss on prompt tokens",
                   REF(data.train_on_prompt)));
  f.push_back(
      Flag({"data.mask_history", "mask_history"}, "multi-turn: train on the last turn only", REF(data.mask_history)));
  f.push_back(Flag({"data.skip_bad_rows", "skip_bad_rows"}, "skip malformed rows (counted) instead of failing",
                   REF(data.skip_bad_rows)));
  f.push_back(Text({"data.tokenized_cache_dir", "tokenized_cache_dir"},
                   "tokenized-dataset cache; empty: <output_dir>/../.anneal-cache", REF(data.tokenized_cache_dir)));
  f.push_back(PositiveInt({"data.preprocessing_batch_size", "preprocessing_batch_size"},
                          "stage pt with packing: rows concatenated and cut into blocks together (LLaMA-Factory's map "
                          "batch; the remainder of each group is dropped)",
                          REF(data.preprocessing_batch_size)));
  f.push_back(PositiveInt({"data.preprocessing_num_workers", "preprocessing_num_workers"},
                          "stage pt with packing: the rows are split into this many contiguous shards first, as "
                          "LLaMA-Factory's datasets.map(num_proc); no effect on sft",
                          REF(data.preprocessing_num_workers)));
  // train
  f.push_back(RequiredText({"train.output_dir", "output_dir"}, "where checkpoints and the result go; required",
                           REF(train.output_dir)));
  f.push_back(PositiveInt({"train.per_device_train_batch_size", "per_device_train_batch_size"},
                          "micro-batch size per data-parallel rank", REF(train.per_device_train_batch_size)));
  f.push_back(PositiveInt({"train.per_device_eval_batch_size", "per_device_eval_batch_size"},
                          "evaluation batch size per rank", REF(train.per_device_eval_batch_size)));
  f.push_back(PositiveInt({"train.gradient_accumulation_steps", "gradient_accumulation_steps"},
                          "micro-batches per optimizer step", REF(train.gradient_accumulation_steps)));
  f.push_back(Number(
      {"train.learning_rate", "learning_rate"}, "a positive number", [](double v) { return v > 0; },
      "peak learning rate", REF(train.learning_rate)));
  f.push_back(Number(
      {"train.num_train_epochs", "num_train_epochs"}, "a number >= 0", [](double v) { return v >= 0; },
      "epochs (fractions allowed); ignored when max_steps > 0", REF(train.num_train_epochs)));
  f.push_back(Make<int64_t>(
      {"train.max_steps", "max_steps"}, "integer", "-1 or a positive integer",
      "optimizer steps; > 0 overrides num_train_epochs", REF(train.max_steps),
      [](const YAML::Node& n, int64_t* out) { return DecodeInt64(n, out) && (*out == -1 || *out > 0); }, EncInt64));
  f.push_back(Choice({"train.lr_scheduler_type", "lr_scheduler_type"},
                     {"linear", "cosine", "constant", "constant_with_warmup"}, "learning-rate schedule after warmup",
                     REF(train.lr_scheduler_type)));
  f.push_back(Number(
      {"train.warmup_ratio", "warmup_ratio"}, "a number in [0, 1)", [](double v) { return v >= 0 && v < 1; },
      "warmup as a fraction of the total steps", REF(train.warmup_ratio)));
  f.push_back(NonNegativeInt64({"train.warmup_steps", "warmup_steps"}, "warmup steps; > 0 overrides warmup_ratio",
                               REF(train.warmup_steps)));
  f.push_back(Number(
      {"train.weight_decay", "weight_decay"}, "a number >= 0", [](double v) { return v >= 0; },
      "AdamW decoupled weight decay", REF(train.weight_decay)));
  f.push_back(Number(
      {"train.adam_beta1", "adam_beta1"}, "a number in [0, 1)", [](double v) { return v >= 0 && v < 1; }, "AdamW beta1",
      REF(train.adam_beta1)));
  f.push_back(Number(
      {"train.adam_beta2", "adam_beta2"}, "a number in [0, 1)", [](double v) { return v >= 0 && v < 1; }, "AdamW beta2",
      REF(train.adam_beta2)));
  f.push_back(Number(
      {"train.adam_epsilon", "adam_epsilon"}, "a positive number", [](double v) { return v > 0; }, "AdamW epsilon",
      REF(train.adam_epsilon)));
  f.push_back(
      Enum<Optimizer>({"train.optim", "optim"},
                      {{"adamw_torch", Optimizer::kAdamWTorch}, {"adamw_torch_fused", Optimizer::kAdamWTorchFused}},
                      "(the trainer's optimizer is torch's AdamW; adamw_hf is gone from transformers 5 and "
                      "others are not built: use adamw_torch)",
                      "optimizer: torch's AdamW (both names, the same update)", REF(train.optim)));
  f.push_back(Number(
      {"train.max_grad_norm", "max_grad_norm"}, "a number", [](double) { return true; },
      "global gradient-norm clipping; <= 0 disables it", REF(train.max_grad_norm)));
  f.push_back(Make<double>(
      {"train.neftune_noise_alpha", "neftune_noise_alpha"}, "number", "a non-negative number or null",
      "NEFTune: uniform noise of +-alpha / sqrt(tokens x hidden) on the input embeddings while training (0 or null: "
      "off)",
      REF(train.neftune_noise_alpha),
      [](const YAML::Node& n, double* out) {
        if (n.IsNull()) {
          *out = 0;
          return true;
        }
        return DecodeNumber(n, out) && *out >= 0;
      },
      EncNumber));
  f.push_back(
      Flag({"train.bf16", "bf16"}, "bfloat16 compute (fp32 master weights and optimizer state)", REF(train.bf16)));
  f.push_back(Flag({"train.fp16", "fp16"}, "refused when true: float16 needs a loss scaler, not built (use bf16)",
                   REF(train.fp16)));
  f.push_back(NonNegativeInt64({"train.seed", "seed"}, "random seed (init, dropout, data order)", REF(train.seed)));
  f.push_back(Flag({"train.gradient_checkpointing", "gradient_checkpointing"},
                   "recompute activations in backward to save memory", REF(train.gradient_checkpointing)));
  f.push_back(PositiveInt64({"train.logging_steps", "logging_steps"}, "report metrics every N steps",
                            REF(train.logging_steps)));
  f.push_back(ReportTo());
  f.push_back(
      Flag({"train.plot_loss", "plot_loss"},
           "write training_loss.png (and training_eval_loss.png) in output_dir at the end, as LLaMA-Factory does",
           REF(train.plot_loss)));
  f.push_back(
      Enum<SaveStrategy>({"train.save_strategy", "save_strategy"},
                         {{"no", SaveStrategy::kNo}, {"steps", SaveStrategy::kSteps}, {"epoch", SaveStrategy::kEpoch}},
                         "(best is not built: use steps with keep_best)",
                         "when to checkpoint: no, steps (every save_steps and at the end), epoch (every epoch)",
                         REF(train.save_strategy)));
  f.push_back(NonNegativeInt64({"train.save_steps", "save_steps"},
                               "save_strategy steps: checkpoint every N steps and at the end; 0: only at the end",
                               REF(train.save_steps)));
  f.push_back(NonNegativeInt64({"train.save_total_limit", "save_total_limit"},
                               "keep the latest N checkpoints; 0 keeps all", REF(train.save_total_limit)));
  f.push_back(NonNegativeInt64({"train.keep_best", "keep_best"},
                               "also keep the best K checkpoints by metric_for_best_model", REF(train.keep_best)));
  f.push_back(RequiredText({"train.metric_for_best_model", "metric_for_best_model"},
                           "metric that ranks checkpoints (eval_loss, loss, ...)", REF(train.metric_for_best_model)));
  f.push_back(Flag({"train.greater_is_better", "greater_is_better"}, "whether a larger metric is better",
                   REF(train.greater_is_better)));
  f.push_back(Choice({"train.eval_strategy", "eval_strategy", {}, {"evaluation_strategy"}}, {"no", "steps", "epoch"},
                     "when to evaluate during training (old name: evaluation_strategy)", REF(train.eval_strategy)));
  f.push_back(NonNegativeInt64({"train.eval_steps", "eval_steps"},
                               "eval_strategy steps: every N steps; 0: every logging_steps", REF(train.eval_steps)));
  f.push_back(NonNegativeInt64({"train.early_stopping_steps", "early_stopping_steps"},
                               "stop after N evaluations without improvement of metric_for_best_model; 0: never",
                               REF(train.early_stopping_steps)));
  f.push_back(Flag({"train.load_best_model_at_end", "load_best_model_at_end"},
                   "export the best evaluated checkpoint's weights (save steps must be a multiple of eval steps)",
                   REF(train.load_best_model_at_end)));
  f.push_back(Text({"train.resume_from_checkpoint", "resume_from_checkpoint"},
                   "a checkpoint-N directory or 'latest' to resume from", REF(train.resume_from_checkpoint)));
  f.push_back(Flag({"train.overwrite_output_dir", "overwrite_output_dir"},
                   "start fresh even if output_dir holds checkpoints", REF(train.overwrite_output_dir)));
  f.push_back(Choice({"train.device", "device"}, {"auto", "cpu", "cuda"}, "auto: cuda when available, else cpu",
                     REF(train.device)));
  // eval
  f.push_back(List({"eval.tasks", ""}, {"loss", "mmlu", "generate"}, true,
                   "eval jobs: loss (and perplexity), mmlu (multiple choice), generate (greedy samples)",
                   REF(eval.tasks)));
  f.push_back(Text({"eval.task_dir", "task_dir"}, "mmlu: directory of <subject>_dev.csv and <subject>_test.csv",
                   REF(eval.task_dir)));
  f.push_back(NonNegativeInt({"eval.n_shot", "n_shot"}, "mmlu: examples in the prompt", REF(eval.n_shot)));
  f.push_back(
      PositiveInt({"eval.max_new_tokens", "max_new_tokens"}, "generate: tokens per answer", REF(eval.max_new_tokens)));
  f.push_back(NonNegativeInt({"eval.min_new_tokens", "min_new_tokens"},
                             "generate: tokens before the end-of-sequence token may end an answer",
                             REF(eval.min_new_tokens)));
  f.push_back(PositiveInt({"eval.num_samples", ""}, "generate: prompts to sample", REF(eval.num_samples)));
  f.push_back(
      Text({"eval.output_file", ""}, "results file; empty: <output_dir>/eval_results.json", REF(eval.output_file)));
  // export
  f.push_back(Text({"export.dir", "export_dir"},
                   "kind export: where the merged HF model is written (the job's output_dir; either names both)",
                   REF(export_.dir)));
  f.push_back(PositiveInt({"export.size_gb", "export_size"},
                          "kind export: largest safetensors shard in GB (10^9 bytes, as LLaMA-Factory's export_size)",
                          REF(export_.size_gb)));
  // clean (kind clean: `data clean`'s options, trainer/data/clean.h)
  f.push_back(RequiredText({"clean.dataset_name", ""},
                           "kind clean: the name of the cleaned dataset in output_dir/dataset_info.json",
                           REF(clean.dataset_name)));
  f.push_back(Choice({"clean.normalize", ""}, {"NFC", "NFKC", "NFD", "NFKD", "none"}, "Unicode normalization",
                     REF(clean.normalize)));
  f.push_back(Flag({"clean.strip_markup", ""}, "remove HTML/XML tags, decode entities", REF(clean.strip_markup)));
  f.push_back(List({"clean.mask_pii", ""}, {"email", "phone", "id"}, false,
                   "mask e-mail addresses, phone numbers, ID numbers", REF(clean.mask_pii)));
  f.push_back(List({"clean.scripts", ""}, {}, false,
                   "keep conversations written in these Unicode scripts (Latin, Han, ...; zh, ja, ko, ru, ...)",
                   REF(clean.scripts)));
  f.push_back(Number(
      {"clean.script_fraction", ""}, "a number in (0, 1]", [](double v) { return v > 0 && v <= 1; },
      "share of letters in `scripts` to keep a row", REF(clean.script_fraction)));
  f.push_back(List({"clean.languages", ""}, {}, false,
                   "keep conversations in these languages (CLD2 statistical detection; codes en, zh, fr, ...)",
                   REF(clean.languages)));
  f.push_back(Number(
      {"clean.language_confidence", ""}, "a number in (0, 1]", [](double v) { return v > 0 && v <= 1; },
      "share of the text in `languages` to keep a row", REF(clean.language_confidence)));
  f.push_back(NonNegativeInt64({"clean.min_chars", ""}, "drop conversations shorter than this (code points; 0: none)",
                               REF(clean.min_chars)));
  f.push_back(NonNegativeInt64({"clean.max_chars", ""}, "drop conversations longer than this (code points; 0: none)",
                               REF(clean.max_chars)));
  f.push_back(Flag({"clean.exact_dedup", ""}, "drop exact duplicates", REF(clean.exact_dedup)));
  f.push_back(Flag({"clean.near_dedup", ""}, "drop near-duplicates (MinHash-LSH)", REF(clean.near_dedup)));
  f.push_back(Number(
      {"clean.jaccard_threshold", ""}, "a number in (0, 1)", [](double v) { return v > 0 && v < 1; },
      "near-dup Jaccard threshold", REF(clean.jaccard_threshold)));
  f.push_back(Make<int>({"clean.num_perm", ""}, "integer", "an integer >= 2", "MinHash permutations",
                        REF(clean.num_perm), IntIn(2, kIntMax), EncInt));
  f.push_back(PositiveInt({"clean.shingle", ""}, "character shingle length (code points)", REF(clean.shingle)));
  f.push_back(Make<int64_t>({"clean.minhash_seed", ""}, "integer", "an integer in [0, 4294967295]",
                            "MinHash seed (datasketch's)", REF(clean.minhash_seed), Int64In(0, 4294967295LL),
                            EncInt64));
  // resources
  f.push_back(PositiveInt({"resources.nodes", "nodes"}, "nodes the job spans", REF(resources.nodes)));
  f.push_back(PositiveInt({"resources.gpus_per_node", "gpus_per_node"}, "ranks per node (GPUs, or CPU slots)",
                          REF(resources.gpus_per_node)));
  f.push_back(PositiveInt({"resources.tensor_parallel", "tensor_model_parallel_size", {"resources.parallel.tensor"}},
                          "tensor-parallel size (within a node)", REF(resources.tensor_parallel)));
  f.push_back(
      PositiveInt({"resources.pipeline_parallel", "pipeline_model_parallel_size", {"resources.parallel.pipeline"}},
                  "pipeline-parallel stages", REF(resources.pipeline_parallel)));
  f.push_back(PositiveInt({"resources.expert_parallel", "expert_model_parallel_size", {"resources.parallel.expert"}},
                          "expert-parallel size: ranks sharing one replica's routed experts (mixture-of-experts "
                          "models; divides the data-parallel size and the experts)",
                          REF(resources.expert_parallel)));
  f.push_back(Make<int>({"resources.zero_stage", "zero_stage", {"resources.parallel.zero"}}, "integer", "0, 1, 2 or 3",
                        "1: shard optimizer state across data parallel (ZeRO-1); 2: also reduce-scatter the gradients "
                        "so each rank keeps only its shard's (ZeRO-2); 3: also the decoder layers' trainable "
                        "parameters, gathered only while their layer computes (ZeRO-3)",
                        REF(resources.zero_stage), IntIn(0, 3), EncInt));
  f.push_back(Choice({"resources.offload", "offload"}, {"none", "optimizer", "optimizer+params"},
                     "CPU offload (DeepSpeed's offload_optimizer / offload_param with device cpu): optimizer keeps "
                     "AdamW's moments and fp32 master weights in host memory and runs the step there (zero_stage 1, "
                     "2 or 3); optimizer+params also keeps ZeRO-3's parameter shards there, copied to the device for "
                     "each gather (zero_stage 3)",
                     REF(resources.offload)));
  f.push_back(Flag({"resources.sequence_parallel", "sequence_parallel", {"resources.parallel.sequence_parallel"}},
                   "split the activations between tensor-parallel regions along the sequence (Megatron-LM's sequence "
                   "parallelism; needs tensor parallel > 1)",
                   REF(resources.sequence_parallel)));
  f.push_back(NonNegativeInt({"resources.pipeline_microbatches", "pipeline_microbatches"},
                             "micro-batches per pipeline step; 0: gradient_accumulation_steps",
                             REF(resources.pipeline_microbatches)));
  f.push_back(Choice({"resources.pipeline_schedule", "pipeline_schedule"}, {"1f1b", "gpipe"},
                     "pipeline schedule: 1f1b (bounded activation memory) or gpipe (all forwards, then backwards)",
                     REF(resources.pipeline_schedule)));
  f.push_back(Number(
      {"resources.bucket_cap_mb", "ddp_bucket_cap_mb"}, "a number > 0", [](double v) { return v > 0; },
      "data-parallel gradient all-reduce bucket (MiB), started during backward as buckets fill",
      REF(resources.bucket_cap_mb)));
  // DeepSpeed's bucket sizes (elements); the translation of `deepspeed: <json>` sets them (llamafactory.cc).
  const auto bucket_elements = [](const YAML::Node& n, int64_t* out) {
    if (n.IsScalar() && n.Scalar() == "auto") return *out = -1, true;
    return DecodeInt64(n, out) && *out >= 0;
  };
  const auto encode_bucket = [](const int64_t& v) { return v == -1 ? YAML::Node("auto") : EncInt64(v); };
  f.push_back(Make<int64_t>({"resources.reduce_bucket_size", "reduce_bucket_size"}, "integer",
                            "an integer >= 0 or \"auto\"",
                            "gradient reduce (ZeRO-2/3: reduce-scatter) bucket in elements, DeepSpeed's "
                            "zero_optimization.reduce_bucket_size; auto: hidden_size^2 (as HF fills it); 0: "
                            "ddp_bucket_cap_mb",
                            REF(resources.reduce_bucket_size), bucket_elements, encode_bucket));
  f.push_back(Make<int64_t>({"resources.gather_bucket_size", "gather_bucket_size"}, "integer",
                            "an integer >= 0 or \"auto\"",
                            "ZeRO parameter all-gather bucket in elements: DeepSpeed's allgather_bucket_size (stage "
                            "1/2: after the step; auto: hidden_size^2) or stage3_prefetch_bucket_size (stage 3: each "
                            "layer's gather; auto: 0.9 x hidden_size^2, as HF fills it); 0: ddp_bucket_cap_mb",
                            REF(resources.gather_bucket_size), bucket_elements, encode_bucket));
  f.push_back(PositiveInt({"resources.comm_timeout_s", "comm_timeout_s", {}, {"ddp_timeout"}},
                          "collective timeout in seconds (LLaMA-Factory's ddp_timeout)",
                          REF(resources.comm_timeout_s)));
  // scheduling
  f.push_back(Text({"scheduling.name", ""}, "display name of the job", REF(scheduling.name)));
  f.push_back(Make<int>({"scheduling.priority", "priority"}, "integer", "an integer",
                        "higher runs first; FIFO within a priority", REF(scheduling.priority), IntIn(-kIntMax, kIntMax),
                        EncInt));
  f.push_back(PositiveInt({"scheduling.max_attempts", "max_attempts"}, "attempts before the job fails (1: no retry)",
                          REF(scheduling.max_attempts)));
  f.push_back(Duration({"scheduling.time_limit", "time_limit"},
                       "wall-clock limit of one run (90m, 2h, 1h30m, or seconds); past it the job checkpoints and "
                       "stops; backfill plans with it (null: none)",
                       REF(scheduling.time_limit_s)));
  f.push_back(NodeSelector({"scheduling.node_selector", "node_selector"},
                           "node labels every node of the job must carry (anneal-agent --label gpu=h100)"));
  f.push_back(NonNegativeInt({"scheduling.max_preemptions", "max_preemptions"},
                             "times the job may be preempted (checkpointed and requeued); 0: never preempted",
                             REF(scheduling.max_preemptions)));
  f.push_back(NonNegativeInt({"scheduling.max_infra_restarts", "max_infra_restarts"},
                             "restarts after a lost node or agent (infrastructure faults), counted apart from "
                             "max_attempts",
                             REF(scheduling.max_infra_restarts)));
  f.push_back(Text({"scheduling.stage_from", "stage_from"},
                   "without a shared filesystem: the node whose disk holds the model, adapter and dataset paths "
                   "(empty: the coordinator's --artifact-source)",
                   REF(scheduling.stage_from)));
  return f;
}

#undef REF

}  // namespace anneal::jobspec
