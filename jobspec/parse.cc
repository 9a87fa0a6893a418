// ParseJobSpec: YAML text + overrides -> validated JobSpec.
//
// Three passes: (1) walk the document and the overrides, mapping every key (flat, nested, alias) to its field
// and remembering where it was written; a field set twice is an error, an override replaces; (2) decode each
// value into the spec (type and range checks, schema.cc); (3) resolve defaults that depend on other fields and
// check what involves several fields (required keys, parallel sizes, precision, evaluation set).
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "jobspec/jobspec.h"
#include "jobspec/language_codes.h"
#include "jobspec/schema.h"
#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

// Flat names kept for old configs; using one adds a warning naming the new key.
const std::map<std::string, std::string, std::less<>> kDeprecated = {{"evaluation_strategy", "eval_strategy"}};

struct Assignment {
  const Field* field = nullptr;
  YAML::Node value;
  std::string key;    // as written: "lora_rank", "finetuning.lora_rank", "resources.parallel.tensor"
  std::string where;  // "at job.yaml:7" or "in override 'lora_rank=8'"
  const TranslatedKey* translated = nullptr;  // set when `key` is deepspeed / disable_gradient_checkpointing
};

// Where `text` stops being valid UTF-8 (npos when it all is): truncated or stray continuation bytes, overlong
// forms, surrogates, code points past U+10FFFF. YAML is Unicode text; yaml-cpp reads raw bytes, but its emitter
// rewrites an invalid one, so ToYaml of such a spec (what the trainer runs) would name another path.
size_t InvalidUtf8At(std::string_view s) {
  static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    size_t length = 1;
    uint32_t cp = lead;
    if (lead >= 0x80) {
      length = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 0;
      if (length == 0 || i + length > s.size()) return i;
      cp = lead & (0x7F >> length);
      for (size_t k = 1; k < length; ++k) {
        const auto next = static_cast<unsigned char>(s[i + k]);
        if ((next & 0xC0) != 0x80) return i;
        cp = (cp << 6) | (next & 0x3F);
      }
      if (cp < kMinForLength[length] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    }
    i += length;
  }
  return std::string_view::npos;
}

// INVALID_ARGUMENT naming `where` (source:line:column, or the override) and the offending byte.
Status CheckUtf8(std::string_view text, const std::function<std::string(size_t)>& where) {
  const size_t at = InvalidUtf8At(text);
  if (at == std::string_view::npos) return Status::Ok();
  return InvalidArgumentError(fmt::format("{}: byte 0x{:02X} is not valid UTF-8 (a job spec is UTF-8 text)", where(at),
                                          static_cast<unsigned char>(text[at])));
}

std::string UnknownKeySuffix(std::string_view key) {
  std::string suggestion = SuggestKey(key);
  if (!suggestion.empty()) return fmt::format(" (did you mean '{}'?)", suggestion);
  return " (see docs/job-spec.md for the accepted keys)";
}

class SpecReader {
 public:
  explicit SpecReader(std::string_view source) : source_(source) {}

  Status ReadDocument(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) {
      return InvalidArgumentError(fmt::format(
          "{}: the job spec is empty: expected a mapping with at least model_name_or_path, dataset and output_dir",
          source_));
    }
    if (!root.IsMap()) {
      return InvalidArgumentError(
          fmt::format("{}: the job spec must be a mapping of keys, got {}", At(root), jobspec::Describe(root)));
    }
    return Walk(root, "");
  }

  Status ReadOverride(const std::string& text) {
    size_t eq = text.find('=');
    std::string key = eq == std::string::npos ? "" : text.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (eq == std::string::npos || key.empty()) {
      return InvalidArgumentError(
          fmt::format("override '{}': expected key=value (e.g. learning_rate=1e-4 or train.learning_rate=1e-4)", text));
    }
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(fmt::format("override '{}': malformed value: {}", text, e.msg));
    }
    std::string where = fmt::format("in override '{}'", text);
    if (IsSection(key)) {
      return InvalidArgumentError(fmt::format(
          "override '{}': '{}' is a section; override one of its keys (e.g. {}.<key>=value)", text, key, key));
    }
    if (const Field* field = FindField(key)) return Record(field, value, key, where, /*replace=*/true);
    if (key == "do_train") return RecordDoTrain(value, key, where);
    bool known = false;
    RETURN_IF_ERROR(ReadLlamaFactoryKey(key, value, where, /*replace=*/true, &known));
    if (known) return Status::Ok();
    return InvalidArgumentError(fmt::format("override '{}': unknown key '{}'{}", text, key, UnknownKeySuffix(key)));
  }

  // Decodes every assignment into `spec` and resolves the defaults that depend on what was given.
  Status Apply(JobSpec& spec, const ParseOptions& options) {
    for (const Assignment& a : assignments_) {
      if (!a.field) continue;
      YAML::Node value = a.value;
      if (a.translated && a.translated->key == "deepspeed" && !options.open_files) {
        return InvalidArgumentError(fmt::format(
            "key '{}' {}: names a file, which is not opened here (the coordinator never opens files a submitted "
            "spec names): `anneal submit` reads the DeepSpeed JSON and sends resources.zero_stage instead",
            a.key, a.where));
      }
      if (a.translated) {
        ASSIGN_OR_RETURN(value, a.translated->translate(a.value, a.key, a.where));
      }
      if (a.translated && value.IsMap()) {  // a translation setting more than its target: {nested path: value}
        for (const auto& kv : value) {
          const std::string path = kv.first.as<std::string>();
          const Field* field = FindNestedField(path);
          if (const Assignment* other = Given(path); field != a.field && other != nullptr) {
            return InvalidArgumentError(
                fmt::format("key '{}' {} sets {} too, which is already given as '{}' {}; "
                            "give it once",
                            a.key, a.where, path, other->key, other->where));
          }
          RETURN_IF_ERROR(field->assign(kv.second, a.key, a.where, spec));
        }
        continue;
      }
      RETURN_IF_ERROR(a.field->assign(value, a.key, a.where, spec));
    }
    RETURN_IF_ERROR(ResolveExport(spec));
    RETURN_IF_ERROR(RefuseCleanKeysOutsideClean(spec));
    if (do_train_.has_value() && spec.kind != JobKind::kExport) {
      const Assignment* kind = Given("kind");
      if (!do_train_->value && kind && spec.kind == JobKind::kTrain) {
        return InvalidArgumentError(fmt::format("key '{}' {}: do_train: false contradicts key '{}' {} (kind: train)",
                                                do_train_->key, do_train_->where, kind->key, kind->where));
      }
      if (!do_train_->value && !kind) spec.kind = JobKind::kEval;
    }
    if (!Given("finetuning.lora_alpha")) spec.finetuning.lora_alpha = 2.0 * spec.finetuning.lora_rank;
    // LLaMA-Factory checkpoints activations unless disable_gradient_checkpointing: true; the nested spelling
    // keeps Anneal's default (off). A document is LLaMA-Factory's when it has no section.
    if (!Given("train.gradient_checkpointing")) spec.train.gradient_checkpointing = !saw_section_;
    if (spec.finetuning.stage != "sft") RETURN_IF_ERROR(CheckSftOnlyKeys(spec.finetuning.stage));
    if (const Assignment* a = Given("finetuning.additional_target");
        a && !spec.finetuning.additional_target.empty() && spec.finetuning.type != FinetuningType::kLora) {
      warnings_.push_back(
          fmt::format("key '{}' {} is ignored: it adds modules to LoRA, and this job is {} (as "
                      "LLaMA-Factory)",
                      a->key, a->where, FinetuningTypeName(spec.finetuning.type)));
    }
    // LLaMA-Factory: "`loraplus_lr_ratio` is only valid for LoRA training."
    if (const Assignment* a = Given("finetuning.loraplus_lr_ratio");
        a && spec.finetuning.loraplus_lr_ratio > 0 && spec.finetuning.type != FinetuningType::kLora) {
      return InvalidArgumentError(
          fmt::format("key '{}' {}: LoRA+ is only for finetuning_type lora (this job is {}); "
                      "remove the key",
                      a->key, a->where, FinetuningTypeName(spec.finetuning.type)));
    }
    RETURN_IF_ERROR(CheckPissa(spec));
    if (spec.finetuning.stage == "dpo" || spec.finetuning.stage == "rm" || spec.finetuning.stage == "kto") {
      if (const Assignment* a = Given("data.packing"); a && spec.data.packing) {
        warnings_.push_back(
            fmt::format("key '{}' {} is ignored: stage {} does not pack preference pairs (as "
                        "LLaMA-Factory)",
                        a->key, a->where, spec.finetuning.stage));
        spec.data.packing = false;
      }
    }
    if (spec.finetuning.stage == "pt") {
      // LLaMA-Factory: packing (concatenate and cut into cutoff_len blocks) is on for pt unless given.
      if (!Given("data.packing")) spec.data.packing = true;
    }
    if (spec.data.neat_packing) spec.data.packing = true;  // LLaMA-Factory: neat_packing implies packing
    if (const Assignment* a = Given("model.flash_attn");
        a && (spec.model.flash_attn == Attention::kFa2 || spec.model.flash_attn == Attention::kFa3)) {
      warnings_.push_back(fmt::format(
          "key '{}' {}: '{}' runs PyTorch SDPA (its FlashAttention kernel on CUDA where it applies): the same result "
          "up to rounding",
          a->key, a->where, AttentionName(spec.model.flash_attn)));
    }
    spec.resources.world_size_given = Given("resources.nodes") || Given("resources.gpus_per_node");
    spec.warnings = warnings_;
    return Status::Ok();
  }

  // PiSSA: what LLaMA-Factory refuses with pissa_init (hparams/parser.py, finetuning_args.py, model/adapter.py),
  // and what Anneal does not build with it. Each names both keys.
  Status CheckPissa(const JobSpec& spec) const {
    const Assignment* pissa = Given("finetuning.pissa_init");
    if (!pissa || !spec.finetuning.pissa_init) return Status::Ok();
    const std::string at = fmt::format("key '{}' {}", pissa->key, pissa->where);
    auto refuse = [&](const std::string& other, const std::string& why) {
      const Assignment* a = Given(other);
      const std::string named = a ? fmt::format("'{}' {}", a->key, a->where) : other;
      return InvalidArgumentError(fmt::format("{}: PiSSA cannot be used with {}: {}", at, named, why));
    };
    const auto& ft = spec.finetuning;
    if (ft.type != FinetuningType::kLora) {
      return refuse("finetuning.type",
                    "pissa_init is only valid for LoRA training (as in LLaMA-Factory): use finetuning_type: lora or "
                    "remove pissa_init");
    }
    if (ft.stage == "kto" || ft.stage == "ppo" ||
        (ft.stage == "dpo" && ft.pref_loss != "orpo" && ft.pref_loss != "simpo")) {
      return refuse("finetuning.stage",
                    "LLaMA-Factory refuses PiSSA for stages that need a reference model (kto, ppo, and dpo unless "
                    "pref_loss is orpo or simpo): remove pissa_init");
    }
    if (spec.model.quantization_bit != 0) {
      return refuse("model.quantization_bit",
                    "a quantized base cannot be initialized with PiSSA (as in LLaMA-Factory, which points to its "
                    "scripts/pissa_init.py): remove one of the keys");
    }
    if (spec.resources.zero_stage == 3) {
      return refuse(
          "resources.zero_stage",
          "PiSSA under ZeRO-3 is refused by LLaMA-Factory too: use zero_stage 2 or lower, or remove pissa_init");
    }
    if (ft.use_dora)
      return refuse("finetuning.use_dora",
                    "PiSSA with DoRA is not built: use one of them (remove pissa_init or use_dora)");
    if (!spec.model.adapter_name_or_path.empty()) {
      return refuse("model.adapter_name_or_path",
                    "the adapter keeps its own initialization (peft reads init_lora_weights from its "
                    "adapter_config.json); remove pissa_init");
    }
    return Status::Ok();
  }

  // LLaMA-Factory refuses these outside sft (hparams/parser.py); so does Anneal, naming the key.
  Status CheckSftOnlyKeys(const std::string& stage_name) const {
    const Assignment* stage = Given("finetuning.stage");
    if (!stage) return Status::Ok();
    const bool pt = stage_name == "pt";
    for (const char* nested : {"data.neat_packing", "data.train_on_prompt", "data.mask_history"}) {
      const Assignment* a = Given(nested);
      bool on = false;
      if (a && DecodeBool(a->value, &on) && on) {
        const std::string why = pt ? std::string("pt trains on every token of the raw text") +
                                         (std::string_view(nested) == "data.neat_packing" ? "; use packing" : "")
                                   : stage_name + (stage_name == "rm" ? " scores" : " trains on") +
                                         (stage_name == "kto" ? " tagged answers" : " the answers of preference pairs");
        return InvalidArgumentError(fmt::format("key '{}' {}: only for stage sft, but '{}' {} is {} ({})", a->key,
                                                a->where, stage->key, stage->where, stage_name, why));
      }
    }
    return Status::Ok();
  }

  // The assignment of a field (by canonical nested path), or nullptr when it kept its default.
  const Assignment* Given(std::string_view nested) const {
    for (const Assignment& a : assignments_) {
      if (a.field && a.field->nested == nested) return &a;
    }
    return nullptr;
  }

  // `clean` keys belong to a clean job: on any other kind they would be silently unused.
  Status RefuseCleanKeysOutsideClean(const JobSpec& spec) const {
    if (spec.kind == JobKind::kClean) return Status::Ok();
    for (const Assignment& a : assignments_) {
      if (a.field && a.field->nested.rfind("clean.", 0) == 0) {
        return InvalidArgumentError(
            fmt::format("key '{}' {}: clean keys belong to a clean job (kind: clean), this "
                        "job is kind: {}",
                        a.key, a.where, JobKindName(spec.kind)));
      }
    }
    return Status::Ok();
  }

  // LLaMA-Factory's export config has no kind (it is run by `llamafactory-cli export`): export_dir makes the job
  // an export. An export job's export_dir and output_dir are one directory: either names both.
  Status ResolveExport(JobSpec& spec) const {
    const Assignment* dir = spec.export_.dir.empty() ? nullptr : Given("export.dir");  // export_dir: null is none
    if (dir && !Given("kind")) {
      if (do_train_ && do_train_->value) {
        return InvalidArgumentError(fmt::format("key '{}' {}: do_train: true contradicts key '{}' {} (an export job)",
                                                do_train_->key, do_train_->where, dir->key, dir->where));
      }
      spec.kind = JobKind::kExport;
    }
    if (spec.kind != JobKind::kExport) {
      for (const Assignment* a : {dir, Given("export.size_gb")}) {
        if (a != nullptr) {
          return InvalidArgumentError(
              fmt::format("key '{}' {}: export keys belong to an export job (kind: export), "
                          "this job is kind: {}",
                          a->key, a->where, JobKindName(spec.kind)));
        }
      }
      return Status::Ok();
    }
    const Assignment* out = Given("train.output_dir");
    if (spec.export_.dir.empty()) {
      spec.export_.dir = spec.train.output_dir;
    } else if (!out) {
      spec.train.output_dir = spec.export_.dir;
    } else if (NormalDir(spec.export_.dir) != NormalDir(spec.train.output_dir)) {
      return InvalidArgumentError(
          fmt::format("key '{}' {} and key '{}' {} name different directories: an export job "
                      "writes its model to one directory; give one of them",
                      dir->key, dir->where, out->key, out->where));
    }
    return Status::Ok();
  }

  static std::string NormalDir(const std::string& path) {
    std::string s = std::filesystem::path(path).lexically_normal().string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return s;
  }

  // "key 'bf16' at job.yaml:14" for a given field; "the default of 'train.bf16'" otherwise.
  std::string Located(std::string_view nested) const {
    if (const Assignment* a = Given(nested)) return fmt::format("'{}' {}", a->key, a->where);
    return fmt::format("'{}' (default)", nested);
  }

  const std::string& source() const { return source_; }

 private:
  struct DoTrain {
    bool value = true;
    std::string key, where;
  };

  std::string At(const YAML::Node& node) const { return fmt::format("{}:{}", source_, node.Mark().line + 1); }

  Status Walk(const YAML::Node& map, const std::string& prefix) {
    for (const auto& pair : map) {
      const YAML::Node key_node = pair.first;  // copies: the iterator yields a temporary pair
      const YAML::Node value = pair.second;
      if (!key_node.IsScalar()) {
        return InvalidArgumentError(
            fmt::format("{}: keys must be plain names, got {}", At(key_node), jobspec::Describe(key_node)));
      }
      const std::string name = key_node.Scalar();
      const std::string dotted = prefix.empty() ? name : prefix + "." + name;
      const std::string where = "at " + At(key_node);
      if (IsSection(dotted)) {
        saw_section_ = true;
        if (value.IsNull()) continue;  // "train:" with nothing under it
        if (!value.IsMap()) {
          return InvalidArgumentError(fmt::format("key '{}' {}: expected a mapping of {} keys, got {}", dotted, where,
                                                  dotted, jobspec::Describe(value)));
        }
        RETURN_IF_ERROR(Walk(value, dotted));
        continue;
      }
      const Field* field = prefix.empty() ? FindField(dotted) : FindNestedField(dotted);
      if (field) {
        RETURN_IF_ERROR(Record(field, value, dotted, where, /*replace=*/false));
        continue;
      }
      if (prefix.empty() && dotted == "do_train") {
        RETURN_IF_ERROR(RecordDoTrain(value, dotted, where));
        continue;
      }
      if (prefix.empty()) {
        bool known = false;
        RETURN_IF_ERROR(ReadLlamaFactoryKey(dotted, value, where, /*replace=*/false, &known));
        if (known) continue;
      }
      return InvalidArgumentError(fmt::format("unknown key '{}' {}{}", dotted, where, UnknownKeySuffix(dotted)));
    }
    return Status::Ok();
  }

  // A translated, refused or ignored LLaMA-Factory key; *known is false when `key` is none of them.
  Status ReadLlamaFactoryKey(const std::string& key, const YAML::Node& value, const std::string& where, bool replace,
                             bool* known) {
    *known = true;
    if (const TranslatedKey* translated = FindTranslatedKey(key)) {
      return Record(FindNestedField(translated->target), value, key, where, replace, translated);
    }
    if (const RefusedKey* refused = FindRefusedKey(key)) {
      if (IsHarmlessValue(*refused, value)) return Status::Ok();
      return InvalidArgumentError(fmt::format("key '{}' {} is not supported: {}", key, where, refused->instead));
    }
    if (const IgnoredKey* ignored = FindIgnoredKey(key)) {
      warnings_.push_back(fmt::format("key '{}' {} is ignored: {}", key, where, ignored->reason));
      return Status::Ok();
    }
    *known = false;
    return Status::Ok();
  }

  Status Record(const Field* field, const YAML::Node& value, const std::string& key, const std::string& where,
                bool replace, const TranslatedKey* translated = nullptr) {
    auto previous =
        std::find_if(assignments_.begin(), assignments_.end(), [&](const Assignment& a) { return a.field == field; });
    if (previous != assignments_.end()) {
      if (!replace) {
        return InvalidArgumentError(
            fmt::format("key '{}' {}: the same setting is already given as '{}' {}; give it once", key, where,
                        previous->key, previous->where));
      }
      // A tombstone, not erase(): erase would move-assign YAML::Nodes, and Node assignment writes through to
      // the shared node data instead of rebinding the handle.
      previous->field = nullptr;
    }
    if (auto d = kDeprecated.find(key); d != kDeprecated.end()) {
      warnings_.push_back(fmt::format("key '{}' {} is deprecated: use '{}'", key, where, d->second));
    }
    if (value.IsNull()) return Status::Ok();  // "key:" or "key: null" keeps the default
    assignments_.push_back({field, value, key, where, translated});
    return Status::Ok();
  }

  Status RecordDoTrain(const YAML::Node& value, const std::string& key, const std::string& where) {
    bool b = true;
    if (!value.IsNull() && !DecodeBool(value, &b)) {
      return InvalidArgumentError(
          fmt::format("key '{}' {}: expected true or false, got {}", key, where, jobspec::Describe(value)));
    }
    do_train_ = DoTrain{b, key, where};
    return Status::Ok();
  }

  std::string source_;
  std::vector<Assignment> assignments_;
  std::vector<std::string> warnings_;
  std::optional<DoTrain> do_train_;
  bool saw_section_ = false;  // the document uses the nested spelling somewhere
};

// What LLaMA-Factory refuses about evaluation during training (data/data_utils.py split_dataset).
Status CheckTrainEvalSet(const JobSpec& s, const SpecReader& r) {
  if (s.kind != JobKind::kTrain || s.data.eval_dataset.empty() || s.data.val_size <= 0) return Status::Ok();
  return InvalidArgumentError(
      fmt::format("{}: {} and {} are both given: validate on eval_dataset or on a val_size "
                  "split of the training data, not both (as LLaMA-Factory); use one",
                  r.source(), r.Located("data.val_size"), r.Located("data.eval_dataset")));
}

// early_stopping_steps and load_best_model_at_end as HF's Trainer requires them (EarlyStoppingCallback.
// on_train_begin, TrainingArguments.__post_init__): an evaluation to judge by, an evaluation metric, and with
// load_best_model_at_end a checkpoint at every evaluation (save strategy = eval strategy, save steps a multiple of
// the eval steps), so the best evaluation has weights to load.
Status CheckEarlyStopping(const JobSpec& s, const SpecReader& r) {
  const TrainSpec& t = s.train;
  if (s.kind != JobKind::kTrain || (t.early_stopping_steps == 0 && !t.load_best_model_at_end)) return Status::Ok();
  if (t.load_best_model_at_end && s.finetuning.stage == "rm") {  // LLaMA-Factory's parser refuses it the same way
    return InvalidArgumentError(fmt::format(
        "{}: {}: stage rm does not support load_best_model_at_end (as LLaMA-Factory); remove it (keep_best with "
        "metric_for_best_model: eval_accuracy and greater_is_better: true keeps the best checkpoints)",
        r.source(), r.Located("train.load_best_model_at_end")));
  }
  const std::string what =
      t.early_stopping_steps > 0 ? r.Located("train.early_stopping_steps") : r.Located("train.load_best_model_at_end");
  if (t.eval_strategy == "no") {
    return InvalidArgumentError(
        fmt::format("{}: {} needs evaluations during training: set eval_strategy (steps or "
                    "epoch) with val_size or eval_dataset",
                    r.source(), what));
  }
  if (t.metric_for_best_model != "eval_loss") {
    return InvalidArgumentError(fmt::format(
        "{}: {} judges by {} = '{}', but the only metric evaluated during training is eval_loss (and 'loss' means "
        "the training loss to keep_best): set metric_for_best_model: eval_loss",
        r.source(), what, r.Located("train.metric_for_best_model"), t.metric_for_best_model));
  }
  if (!t.load_best_model_at_end) return Status::Ok();
  const bool same_strategy = (t.save_strategy == SaveStrategy::kSteps && t.eval_strategy == "steps") ||
                             (t.save_strategy == SaveStrategy::kEpoch && t.eval_strategy == "epoch");
  if (!same_strategy) {
    return InvalidArgumentError(
        fmt::format("{}: {} needs a checkpoint at every evaluation: save_strategy must equal "
                    "eval_strategy ('{}')",
                    r.source(), r.Located("train.load_best_model_at_end"), t.eval_strategy));
  }
  const int64_t eval_steps = t.eval_steps > 0 ? t.eval_steps : t.logging_steps;
  if (t.eval_strategy == "steps" && (t.save_steps <= 0 || eval_steps <= 0 || t.save_steps % eval_steps != 0)) {
    return InvalidArgumentError(fmt::format(
        "{}: {} needs a checkpoint at every evaluation: save_steps ({}) must be a multiple of eval_steps ({}), as "
        "HF's Trainer requires",
        r.source(), r.Located("train.load_best_model_at_end"), t.save_steps, eval_steps));
  }
  return Status::Ok();
}

// What LLaMA-Factory refuses about interleave_probs (hparams/data_args.py __post_init__).
Status CheckInterleaveProbs(const JobSpec& s, const SpecReader& r) {
  const size_t n = s.data.interleave_probs.size();
  if (n == 0) return Status::Ok();
  if (s.data.mix_strategy == "concat")
    return InvalidArgumentError(
        fmt::format("{}: {} is only valid with an interleave_* mix_strategy (as LLaMA-Factory): use mix_strategy: "
                    "interleave_under, interleave_over or interleave_once, or remove it",
                    r.source(), r.Located("data.interleave_probs")));
  for (const auto* list : {&s.data.dataset, &s.data.eval_dataset}) {
    if (!list->empty() && list->size() != n)
      return InvalidArgumentError(fmt::format("{}: {} has {} probabilities for {} datasets ({}); give one per dataset",
                                              r.source(), r.Located("data.interleave_probs"), n, list->size(),
                                              list == &s.data.dataset ? "dataset" : "eval_dataset"));
  }
  return Status::Ok();
}

// An export job: a destination, and one process (the merge runs on the CPU of one node).
Status CheckExport(const JobSpec& s, const SpecReader& r) {
  if (s.export_.dir.empty()) {
    return InvalidArgumentError(fmt::format(
        "{}: missing required key 'export_dir' (nested: export.dir; or output_dir): where the merged model goes",
        r.source()));
  }
  const ResourceSpec& res = s.resources;
  if ((res.world_size_given && res.world_size() != 1) || res.tensor_parallel != 1 || res.pipeline_parallel != 1 ||
      res.expert_parallel != 1) {
    return InvalidArgumentError(fmt::format(
        "{}: an export job runs one process: nodes x gpus_per_node must be 1 (got {} x {}) and tensor/pipeline/"
        "expert parallel 1 (got {}, {}, {})",
        r.source(), res.nodes, res.gpus_per_node, res.tensor_parallel, res.pipeline_parallel, res.expert_parallel));
  }
  return Status::Ok();
}

// A clean job: datasets to read, a directory to write, one process; language codes known to CLD2.
Status CheckClean(const JobSpec& s, const SpecReader& r) {
  if (s.train.output_dir.empty()) {
    return InvalidArgumentError(
        fmt::format("{}: missing required key 'output_dir' (nested: train.output_dir): where the cleaned dataset goes",
                    r.source()));
  }
  if (s.data.dataset.empty()) {
    return InvalidArgumentError(fmt::format(
        "{}: missing required key 'dataset' (nested: data.dataset): the datasets a clean job reads", r.source()));
  }
  const ResourceSpec& res = s.resources;
  if ((res.world_size_given && res.world_size() != 1) || res.tensor_parallel != 1 || res.pipeline_parallel != 1 ||
      res.expert_parallel != 1) {
    return InvalidArgumentError(fmt::format(
        "{}: a clean job runs one process: nodes x gpus_per_node must be 1 (got {} x {}) and tensor/pipeline/"
        "expert parallel 1 (got {}, {}, {})",
        r.source(), res.nodes, res.gpus_per_node, res.tensor_parallel, res.pipeline_parallel, res.expert_parallel));
  }
  for (const std::string& code : s.clean.languages) {
    if (!IsKnownLanguageCode(code)) {
      return InvalidArgumentError(fmt::format(
          "{}: {}: unknown language '{}' (CLD2 codes: en, zh, ja, ko, fr, de, es, ru, ar, ...; 'un' keeps text too "
          "short to tell)",
          r.source(), r.Located("clean.languages"), code));
    }
  }
  if (s.clean.dataset_name.find_first_of("/\\,") != std::string::npos) {
    return InvalidArgumentError(fmt::format("{}: {}: '{}' is a dataset name, not a path (no '/', '\\' or ',')",
                                            r.source(), r.Located("clean.dataset_name"), s.clean.dataset_name));
  }
  return Status::Ok();
}

// QLoRA: what LLaMA-Factory refuses with quantization_bit (hparams/parser.py).
Status CheckQuantization(const JobSpec& s, const SpecReader& r) {
  if (s.model.quantization_bit == 0) return Status::Ok();
  const std::string key = r.Located("model.quantization_bit");
  if (s.kind == JobKind::kExport) {
    return InvalidArgumentError(fmt::format(
        "{}: {} is set on an export job: an adapter cannot be merged into a quantized model (as in LLaMA-Factory); "
        "remove quantization_bit: the export merges the adapter into the unquantized base",
        r.source(), key));
  }
  if (s.kind == JobKind::kTrain && s.finetuning.type != FinetuningType::kLora) {
    return InvalidArgumentError(fmt::format(
        "{}: {} asks for a quantized base, whose weights are frozen, but {} is {}: quantization is only compatible "
        "with LoRA (as in LLaMA-Factory); use finetuning_type: lora, or remove quantization_bit",
        r.source(), key, r.Located("finetuning.type"), FinetuningTypeName(s.finetuning.type)));
  }
  return Status::Ok();
}

// Auxiliary-loss-free balancing moves a buffer of the base model: what it is built for (which routers have the bias
// is the trainer's check, against the model).
Status CheckExpertBias(const JobSpec& s, const SpecReader& r) {
  if (s.kind != JobKind::kTrain || !s.model.moe_router_enable_expert_bias) return Status::Ok();
  const std::string key = r.Located("model.moe_router_enable_expert_bias");
  if (s.finetuning.type == FinetuningType::kLora) {
    return InvalidArgumentError(fmt::format(
        "{}: {} with {} lora is not built: the bias it trains is a buffer of the base model, which a PEFT adapter "
        "does not carry; use finetuning_type: full or freeze, or remove moe_router_enable_expert_bias",
        r.source(), key, r.Located("finetuning.type")));
  }
  if (s.finetuning.stage != "sft" && s.finetuning.stage != "pt") {
    return InvalidArgumentError(
        fmt::format("{}: {} with {} {} is not built (stages sft and pt count the routed tokens)", r.source(), key,
                    r.Located("finetuning.stage"), s.finetuning.stage));
  }
  return Status::Ok();
}

// Checks that involve several fields. Runs after Apply, so every value is in range on its own.
Status CheckCrossField(const JobSpec& s, const SpecReader& r) {
  const std::string& src = r.source();
  if (s.kind == JobKind::kClean) return CheckClean(s, r);
  if (s.model.model_name_or_path.empty()) {
    return InvalidArgumentError(fmt::format(
        "{}: missing required key 'model_name_or_path' (nested: model.model_name_or_path): the local HF model "
        "directory",
        src));
  }
  if (s.kind == JobKind::kExport) {
    RETURN_IF_ERROR(CheckQuantization(s, r));
    return CheckExport(s, r);
  }
  if (s.train.output_dir.empty()) {
    return InvalidArgumentError(fmt::format(
        "{}: missing required key 'output_dir' (nested: train.output_dir): where checkpoints and results go", src));
  }
  if (s.kind == JobKind::kTrain && s.data.dataset.empty()) {
    return InvalidArgumentError(
        fmt::format("{}: missing required key 'dataset' (nested: data.dataset): a train job needs training data", src));
  }
  if (s.kind == JobKind::kTrain && s.train.num_train_epochs <= 0 && s.train.max_steps <= 0) {
    return InvalidArgumentError(
        fmt::format("{}: nothing to train: {} is 0 and max_steps is not set; set num_train_epochs > 0 or max_steps > 0",
                    src, r.Located("train.num_train_epochs")));
  }
  if (s.resources.offload != "none" && s.resources.zero_stage < (s.resources.offload == "optimizer" ? 1 : 3)) {
    return InvalidArgumentError(fmt::format(
        "{}: {} with {}: offloading {} needs zero_stage {} (as DeepSpeed's {}); raise zero_stage or set offload: {}",
        src, r.Located("resources.offload"), r.Located("resources.zero_stage"),
        s.resources.offload == "optimizer" ? "the optimizer" : "the parameters",
        s.resources.offload == "optimizer" ? "1, 2 or 3" : "3",
        s.resources.offload == "optimizer" ? "offload_optimizer" : "offload_param",
        s.resources.offload == "optimizer" ? "none" : "optimizer"));
  }
  if (s.train.fp16) {
    return InvalidArgumentError(fmt::format(
        "{}: {} is not supported: float16 training needs a dynamic loss scaler, which is not built; use bf16: true "
        "(bfloat16 has float32's range and needs no loss scaling)",
        src, r.Located("train.fp16")));
  }
  if (s.data.val_size >= 1 && s.data.val_size != static_cast<double>(static_cast<int64_t>(s.data.val_size))) {
    return InvalidArgumentError(fmt::format("{}: {}: expected a fraction below 1 or a whole count of examples, got {}",
                                            src, r.Located("data.val_size"), FormatNumber(s.data.val_size)));
  }
  if (s.train.eval_strategy != "no" && s.data.val_size <= 0 && s.data.eval_dataset.empty()) {
    return InvalidArgumentError(
        fmt::format("{}: {} is '{}' but there is no evaluation set: set val_size (e.g. 0.1) or eval_dataset", src,
                    r.Located("train.eval_strategy"), s.train.eval_strategy));
  }
  RETURN_IF_ERROR(CheckTrainEvalSet(s, r));
  RETURN_IF_ERROR(CheckEarlyStopping(s, r));
  RETURN_IF_ERROR(CheckInterleaveProbs(s, r));
  RETURN_IF_ERROR(CheckQuantization(s, r));
  RETURN_IF_ERROR(CheckExpertBias(s, r));
  if (s.kind == JobKind::kEval &&
      (s.finetuning.stage == "dpo" || s.finetuning.stage == "rm" || s.finetuning.stage == "kto")) {
    return InvalidArgumentError(fmt::format(
        "{}: {} is {} but this is an eval job, whose tasks (loss, perplexity, mmlu, generate) read plain datasets: "
        "use stage: sft for kind: eval; a {} training job evaluates its {} on eval_dataset or val_size",
        src, r.Located("finetuning.stage"), s.finetuning.stage, s.finetuning.stage,
        s.finetuning.stage == "rm" ? "pairwise loss and accuracy" : "preference loss"));
  }
  if (s.kind == JobKind::kEval && std::find(s.eval.tasks.begin(), s.eval.tasks.end(), "mmlu") != s.eval.tasks.end() &&
      s.eval.task_dir.empty()) {
    return InvalidArgumentError(fmt::format(
        "{}: eval task 'mmlu' needs 'eval.task_dir' (flat: task_dir): the directory of <subject>_dev.csv and "
        "<subject>_test.csv",
        src));
  }
  const ResourceSpec& res = s.resources;
  const int64_t model_parallel = static_cast<int64_t>(res.tensor_parallel) * res.pipeline_parallel;
  const int64_t world = static_cast<int64_t>(res.nodes) * res.gpus_per_node;
  if (res.world_size_given && world % model_parallel != 0) {
    return InvalidArgumentError(fmt::format(
        "{}: impossible parallel layout: tensor parallel (tp={}) x pipeline parallel (pp={}) = {} does not divide "
        "the world size {} (nodes {} x gpus_per_node {}); choose tp and pp so that tp*pp divides nodes*gpus_per_node",
        src, res.tensor_parallel, res.pipeline_parallel, model_parallel, world, res.nodes, res.gpus_per_node));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<JobSpec> ParseJobSpec(std::string_view yaml_text, std::string_view source,
                               const std::vector<std::string>& overrides, const ParseOptions& options) {
  RETURN_IF_ERROR(CheckUtf8(yaml_text, [&](size_t at) {
    const size_t line_start = yaml_text.rfind('\n', at == 0 ? 0 : at - 1);
    const size_t column = line_start == std::string_view::npos || at == 0 ? at : at - line_start - 1;
    return fmt::format("{}:{}:{}", source, std::count(yaml_text.begin(), yaml_text.begin() + at, '\n') + 1, column + 1);
  }));
  for (const std::string& o : overrides) {
    RETURN_IF_ERROR(CheckUtf8(o, [&](size_t) { return fmt::format("override '{}'", o); }));
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(
        fmt::format("{}:{}:{}: malformed YAML: {}", source, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  SpecReader reader(source);
  RETURN_IF_ERROR(reader.ReadDocument(root));
  for (const std::string& o : overrides) RETURN_IF_ERROR(reader.ReadOverride(o));
  JobSpec spec;
  RETURN_IF_ERROR(reader.Apply(spec, options));
  RETURN_IF_ERROR(CheckCrossField(spec, reader));
  if (spec.resources.sequence_parallel && spec.resources.tensor_parallel == 1) {
    spec.warnings.push_back(fmt::format("{}: sequence_parallel has no effect with tensor_parallel 1", reader.source()));
  }
  return spec;
}

StatusOr<JobSpec> LoadJobSpecFile(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return InvalidArgumentError(fmt::format("job spec {} is a directory, not a YAML file", path));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == EACCES) return PermissionDeniedError(fmt::format("cannot read job spec {}: permission denied", path));
    if (err == ENOENT) return NotFoundError(fmt::format("job spec file not found: {}", path));
    return InvalidArgumentError(fmt::format("cannot read job spec {}: {}", path, std::strerror(err)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return InvalidArgumentError(fmt::format("cannot read job spec {}: read error", path));
  return ParseJobSpec(text.str(), path, overrides);
}

}  // namespace anneal::jobspec
