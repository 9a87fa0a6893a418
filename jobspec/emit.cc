// ToYaml and the enum names: the complete spec in the native nested spelling.
//
// Strings are always double-quoted so that values such as "no", "1" or "" read back as the same strings;
// numbers use the shortest text that parses back to the same double, so ParseJobSpec(ToYaml(s)) == s.
#include <yaml-cpp/yaml.h>

#include <string>

#include "jobspec/jobspec.h"
#include "jobspec/schema.h"

namespace anneal::jobspec {
namespace {

void EmitValue(YAML::Emitter& out, const Field& field, const YAML::Node& value) {
  const bool quote = field.type == "string" || field.type == "enum" || field.type == "list";
  if (!value.IsDefined() || value.IsNull()) {
    out << YAML::Null;
  } else if (value.IsMap()) {
    out << YAML::Flow << YAML::BeginMap;
    for (const auto& pair : value) {
      out << YAML::Key << YAML::DoubleQuoted << pair.first.Scalar() << YAML::Value << YAML::DoubleQuoted
          << pair.second.Scalar();
    }
    out << YAML::EndMap;
  } else if (value.IsSequence()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : value) out << YAML::DoubleQuoted << item.Scalar();
    out << YAML::EndSeq;
  } else if (quote) {
    out << YAML::DoubleQuoted << value.Scalar();
  } else {
    out << value.Scalar();
  }
}

}  // namespace

std::string_view JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kTrain:
      return "train";
    case JobKind::kEval:
      return "eval";
    case JobKind::kClean:
      return "clean";
    case JobKind::kExport:
      return "export";
  }
  return "train";
}

std::string_view FinetuningTypeName(FinetuningType t) {
  switch (t) {
    case FinetuningType::kLora:
      return "lora";
    case FinetuningType::kFull:
      return "full";
    case FinetuningType::kFreeze:
      return "freeze";
  }
  return "lora";
}

std::string_view SaveStrategyName(SaveStrategy s) {
  switch (s) {
    case SaveStrategy::kNo:
      return "no";
    case SaveStrategy::kSteps:
      return "steps";
    case SaveStrategy::kEpoch:
      return "epoch";
  }
  return "steps";
}

std::string_view OptimizerName(Optimizer o) {
  switch (o) {
    case Optimizer::kAdamWTorch:
      return "adamw_torch";
    case Optimizer::kAdamWTorchFused:
      return "adamw_torch_fused";
  }
  return "adamw_torch";
}

std::string_view AttentionName(Attention a) {
  switch (a) {
    case Attention::kAuto:
      return "auto";
    case Attention::kSdpa:
      return "sdpa";
    case Attention::kFa2:
      return "fa2";
    case Attention::kFa3:
      return "fa3";
  }
  return "auto";
}

std::string ToYaml(const JobSpec& spec) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  // Top-level fields first (kind), then each section in table order.
  for (const Field& f : KnownFields()) {
    if (!f.section().empty()) continue;
    out << YAML::Key << std::string(f.leaf()) << YAML::Value;
    EmitValue(out, f, f.get(spec));
  }
  for (const std::string& section : Sections()) {
    if (section.find('.') != std::string::npos) continue;  // alias sections (resources.parallel) are not written
    if (section == "export" && spec.kind != JobKind::kExport) continue;  // only an export job has export keys
    if (section == "clean" && spec.kind != JobKind::kClean) continue;    // only a clean job has clean keys
    if (section == "model" && spec.kind == JobKind::kClean) continue;    // a clean job reads no model
    out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    for (const Field& f : KnownFields()) {
      if (f.section() != section) continue;
      if (!spec.resources.world_size_given &&
          (f.nested == "resources.nodes" || f.nested == "resources.gpus_per_node")) {
        continue;  // the launcher decides the world size
      }
      out << YAML::Key << std::string(f.leaf()) << YAML::Value;
      EmitValue(out, f, f.get(spec));
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  // Warnings are not written: the text depends on the settings alone, so it can be hashed and compared.
  std::string text = out.c_str();
  text += "\n";
  return text;
}

}  // namespace anneal::jobspec
