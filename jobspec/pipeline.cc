// The pipeline YAML: structure, DAG and references (jobspec/pipeline.h).
#include "jobspec/pipeline.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

const std::vector<std::string> kTopKeys = {"name", "steps"};
const std::vector<std::string> kStepKeys = {"name", "needs", "kind", "job", "promote"};
const std::vector<std::string> kPromoteKeys = {"model", "train_step", "eval_step",           "metric",
                                               "mode",  "margin",     "production_eval_step"};
const std::set<std::string> kCommandKeys = {"run", "command", "commands", "script", "shell", "exec", "args"};

// " (did you mean 'x'?)" when a known key is close, else the list of known keys.
std::string Suggest(std::string_view key, const std::vector<std::string>& known) {
  const std::string* best = nullptr;
  size_t best_distance = 3;
  for (const auto& k : known) {
    if (size_t d = EditDistance(key, k); d < best_distance) best = &k, best_distance = d;
  }
  if (best != nullptr) return fmt::format(" (did you mean '{}'?)", *best);
  return fmt::format(" (known: {})", fmt::join(known, ", "));
}

struct Context {
  std::string_view source;
  std::string At(const YAML::Node& node) const { return fmt::format("{}:{}", source, node.Mark().line + 1); }
  Status Error(const YAML::Node& node, const std::string& what) const {
    return InvalidArgumentError(fmt::format("{}: {}", At(node), what));
  }
};

bool ValidStepName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError(fmt::format("cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Status DecodePromote(const Context& ctx, const YAML::Node& node, const std::string& step, PromoteSpec* out) {
  if (!node.IsMap()) return ctx.Error(node, fmt::format("step '{}': promote must be a mapping", step));
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const YAML::Node& value = kv.second;
    auto bad = [&](const std::string& expected) {
      return ctx.Error(
          value, fmt::format("step '{}': key 'promote.{}' expects {}, got {}", step, key, expected, Describe(value)));
    };
    std::string text;
    if (key == "margin") {
      if (!DecodeNumber(value, &out->margin) || out->margin < 0) return bad("a number >= 0");
    } else if (key == "mode") {
      if (!DecodeString(value, &text) || (text != "min" && text != "max")) return bad("min or max");
      out->higher_is_better = text == "max";
    } else if (std::find(kPromoteKeys.begin(), kPromoteKeys.end(), key) != kPromoteKeys.end()) {
      if (!DecodeString(value, &text) || text.empty()) return bad("a non-empty string");
      if (key == "model") out->model = text;
      if (key == "train_step") out->train_step = text;
      if (key == "eval_step") out->eval_step = text;
      if (key == "metric") out->metric = text;
      if (key == "production_eval_step") out->production_eval_step = text;
    } else {
      return ctx.Error(kv.first,
                       fmt::format("step '{}': unknown key 'promote.{}'{}", step, key, Suggest(key, kPromoteKeys)));
    }
  }
  for (const auto& [key, value] : {std::pair{"model", &out->model}, std::pair{"train_step", &out->train_step},
                                   std::pair{"eval_step", &out->eval_step}}) {
    if (value->empty()) return ctx.Error(node, fmt::format("step '{}': promote needs key '{}'", step, key));
  }
  return Status::Ok();
}

// The job spec text of a step and its kind (the spec's own `kind`, train when absent).
Status DecodeJob(const Context& ctx, const YAML::Node& node, const std::string& step,
                 const ParsePipelineOptions& options, PipelineStep* out) {
  YAML::Node spec = node;
  if (node.IsScalar()) {
    const std::string path = node.as<std::string>();
    if (!options.open_files) {
      return ctx.Error(node, fmt::format("step '{}': key 'job' names the file '{}', which the coordinator never "
                                         "opens: submit with `anneal pipeline submit`, which inlines it",
                                         step, path));
    }
    std::filesystem::path full(path);
    if (full.is_relative() && !options.base_dir.empty()) full = std::filesystem::path(options.base_dir) / full;
    auto text = ReadFile(full.string());
    if (!text.ok()) return ctx.Error(node, fmt::format("step '{}': key 'job': {}", step, text.status().message()));
    try {
      spec = YAML::Load(*text);
    } catch (const YAML::Exception& e) {
      return InvalidArgumentError(fmt::format("{}:{}: malformed YAML (the job spec of step '{}'): {}", full.string(),
                                              e.mark.line + 1, step, e.msg));
    }
  }
  if (!spec.IsMap()) {
    return ctx.Error(node, fmt::format("step '{}': key 'job' must be a job spec (a mapping) or a file path", step));
  }
  std::string kind = "train";
  if (spec["kind"] && !DecodeString(spec["kind"], &kind)) kind = "?";
  // A LLaMA-Factory export config has no kind: export_dir makes it an export (as jobspec's parser decides).
  const YAML::Node export_section = spec["export"];
  if (!spec["kind"] && (spec["export_dir"] || (export_section.IsMap() && export_section["dir"]))) kind = "export";
  if (kind != "train" && kind != "eval" && kind != "export" && kind != "clean") {
    return ctx.Error(
        node, fmt::format("step '{}': job kind '{}' is not a step kind (train, eval, export or clean)", step, kind));
  }
  out->kind = kind == "eval"     ? StepKind::kEval
              : kind == "export" ? StepKind::kExport
              : kind == "clean"  ? StepKind::kClean
                                 : StepKind::kTrain;
  YAML::Emitter emitter;
  emitter << spec;
  out->job_yaml = std::string(emitter.c_str()) + "\n";
  return Status::Ok();
}

Status DecodeStep(const Context& ctx, const YAML::Node& node, const ParsePipelineOptions& options, PipelineStep* out) {
  if (!node.IsMap()) return ctx.Error(node, "a step must be a mapping (name, needs, job or promote)");
  out->line = node.Mark().line + 1;
  if (!node["name"] || !DecodeString(node["name"], &out->name) || !ValidStepName(out->name)) {
    return ctx.Error(node, "a step needs a `name` of letters, digits, '-' and '_' (at most 64)");
  }
  const std::string& name = out->name;
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (kCommandKeys.count(key)) {
      return ctx.Error(kv.first,
                       fmt::format("step '{}': key '{}' is refused: pipeline steps run no commands; a step "
                                   "is a train, eval, export or clean job (`job:`) or the built-in promote step "
                                   "(`promote:`)",
                                   name, key));
    }
    if (std::find(kStepKeys.begin(), kStepKeys.end(), key) == kStepKeys.end()) {
      return ctx.Error(kv.first, fmt::format("step '{}': unknown key '{}'{}", name, key, Suggest(key, kStepKeys)));
    }
  }
  std::string kind;
  if (node["kind"] && !DecodeString(node["kind"], &kind)) kind = "?";
  if (!kind.empty() && kind != "train" && kind != "eval" && kind != "export" && kind != "clean" && kind != "promote") {
    return ctx.Error(node["kind"],
                     fmt::format("step '{}': unknown kind '{}' (train, eval, export, clean or promote)", name, kind));
  }
  const bool has_job = static_cast<bool>(node["job"]);
  const bool has_promote = static_cast<bool>(node["promote"]);
  if (has_job == has_promote) {
    return ctx.Error(
        node, fmt::format("step '{}': give exactly one of `job` (a train, eval or export job) or `promote`", name));
  }
  if (node["needs"] && !DecodeList(node["needs"], &out->needs)) {
    return ctx.Error(node["needs"], fmt::format("step '{}': key 'needs' expects a list of step names, got {}", name,
                                                Describe(node["needs"])));
  }
  if (has_promote) {
    if (!kind.empty() && kind != "promote") {
      return ctx.Error(node, fmt::format("step '{}': kind '{}' contradicts key 'promote'", name, kind));
    }
    out->kind = StepKind::kPromote;
    return DecodePromote(ctx, node["promote"], name, &out->promote);
  }
  if (kind == "promote") return ctx.Error(node, fmt::format("step '{}': kind promote needs key 'promote'", name));
  RETURN_IF_ERROR(DecodeJob(ctx, node["job"], name, options, out));
  if (!kind.empty() && kind != StepKindName(out->kind)) {
    return ctx.Error(node, fmt::format("step '{}': kind '{}' contradicts the job spec's kind '{}'", name, kind,
                                       StepKindName(out->kind)));
  }
  return Status::Ok();
}

// "STEP.KEY=VALUE" overrides: promote keys go into the YAML before decoding; job keys to the step's overrides.
Status ApplyOverrides(YAML::Node steps, const std::map<std::string, std::string>& overrides,
                      std::map<std::string, std::vector<std::string>>* job_overrides) {
  for (const auto& [key, value] : overrides) {
    const size_t dot = key.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == key.size()) {
      return InvalidArgumentError(
          fmt::format("override '{}={}': the key must read STEP.KEY (e.g. train.learning_rate)", key, value));
    }
    const std::string step = key.substr(0, dot);
    const std::string rest = key.substr(dot + 1);
    std::vector<std::string> names;
    bool found = false;
    for (YAML::Node s : steps) {
      if (!s.IsMap() || !s["name"]) continue;
      names.push_back(s["name"].as<std::string>());
      if (names.back() != step) continue;
      found = true;
      if (s["promote"]) {
        if (std::find(kPromoteKeys.begin(), kPromoteKeys.end(), rest) == kPromoteKeys.end()) {
          return InvalidArgumentError(fmt::format("override '{}={}': unknown promote key '{}'{}", key, value, rest,
                                                  Suggest(rest, kPromoteKeys)));
        }
        s["promote"][rest] = value;
      } else {
        (*job_overrides)[step].push_back(rest + "=" + value);
      }
    }
    if (!found) {
      return InvalidArgumentError(
          fmt::format("override '{}={}': no step '{}' (steps: {})", key, value, step, fmt::join(names, ", ")));
    }
  }
  return Status::Ok();
}

}  // namespace

std::string_view StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kTrain:
      return "train";
    case StepKind::kEval:
      return "eval";
    case StepKind::kExport:
      return "export";
    case StepKind::kClean:
      return "clean";
    case StepKind::kPromote:
      return "promote";
  }
  return "?";
}

const PipelineStep* PipelineSpec::Find(std::string_view step) const {
  for (const auto& s : steps) {
    if (s.name == step) return &s;
  }
  return nullptr;
}

Status ValidateGraph(const PipelineSpec& pipeline, std::string_view source);  // pipeline_graph.cc

StatusOr<PipelineSpec> ParsePipeline(std::string_view yaml_text, std::string_view source,
                                     const std::map<std::string, std::string>& overrides,
                                     const ParsePipelineOptions& options) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(fmt::format("{}:{}: malformed YAML: {}", source, e.mark.line + 1, e.msg));
  }
  const Context ctx{source};
  if (!root.IsMap()) return InvalidArgumentError(fmt::format("{}: a pipeline is a mapping (name, steps)", source));
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(kTopKeys.begin(), kTopKeys.end(), key) == kTopKeys.end()) {
      return ctx.Error(kv.first, fmt::format("unknown key '{}'{}", key, Suggest(key, kTopKeys)));
    }
  }
  PipelineSpec pipeline;
  if (root["name"] && !DecodeString(root["name"], &pipeline.name)) {
    return ctx.Error(root["name"], "key 'name' expects a string");
  }
  YAML::Node steps = root["steps"];
  if (!steps || !steps.IsSequence() || steps.size() == 0) {
    return InvalidArgumentError(fmt::format("{}: key 'steps' must be a non-empty list of steps", source));
  }
  std::map<std::string, std::vector<std::string>> job_overrides;
  RETURN_IF_ERROR(ApplyOverrides(steps, overrides, &job_overrides));
  for (const auto& node : steps) {
    PipelineStep step;
    RETURN_IF_ERROR(DecodeStep(ctx, node, options, &step));
    if (pipeline.Find(step.name) != nullptr) {
      return ctx.Error(node, fmt::format("step '{}' is defined twice", step.name));
    }
    step.overrides = job_overrides[step.name];
    pipeline.steps.push_back(std::move(step));
  }
  RETURN_IF_ERROR(ValidateGraph(pipeline, source));
  return pipeline;
}

StatusOr<PipelineSpec> ParsePipelineFile(const std::string& path, const std::map<std::string, std::string>& overrides) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParsePipeline(text, path, overrides,
                       {.open_files = true, .base_dir = std::filesystem::absolute(path).parent_path().string()});
}

std::string EmitPipeline(const PipelineSpec& pipeline) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  if (!pipeline.name.empty()) out << YAML::Key << "name" << YAML::Value << pipeline.name;
  out << YAML::Key << "steps" << YAML::Value << YAML::BeginSeq;
  for (const auto& step : pipeline.steps) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << step.name;
    if (!step.needs.empty()) out << YAML::Key << "needs" << YAML::Value << YAML::Flow << step.needs;
    if (step.kind == StepKind::kPromote) {
      const PromoteSpec& p = step.promote;
      out << YAML::Key << "promote" << YAML::Value << YAML::BeginMap;
      out << YAML::Key << "model" << YAML::Value << p.model;
      out << YAML::Key << "train_step" << YAML::Value << p.train_step;
      out << YAML::Key << "eval_step" << YAML::Value << p.eval_step;
      out << YAML::Key << "metric" << YAML::Value << p.metric;
      out << YAML::Key << "mode" << YAML::Value << (p.higher_is_better ? "max" : "min");
      out << YAML::Key << "margin" << YAML::Value << FormatNumber(p.margin);
      if (!p.production_eval_step.empty()) {
        out << YAML::Key << "production_eval_step" << YAML::Value << p.production_eval_step;
      }
      out << YAML::EndMap;
    } else {
      out << YAML::Key << "job" << YAML::Value << YAML::Load(step.job_yaml);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace anneal::jobspec
