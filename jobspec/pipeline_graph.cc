// The pipeline's DAG (needs, cycles, ancestors) and its ${...} references (jobspec/pipeline.h).
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <set>

#include "jobspec/pipeline.h"
#include "jobspec/values.h"

namespace anneal::jobspec {
namespace {

std::string StepAt(std::string_view source, const PipelineStep& step) {
  return fmt::format("{}:{}: step '{}'", source, step.line, step.name);
}

std::string Closest(const PipelineSpec& pipeline, std::string_view name) {
  const PipelineStep* best = nullptr;
  size_t best_distance = 3;
  for (const auto& s : pipeline.steps) {
    if (size_t d = EditDistance(name, s.name); d < best_distance) best = &s, best_distance = d;
  }
  return best == nullptr ? "" : fmt::format(" (did you mean '{}'?)", best->name);
}

// The first cycle found, as "a -> b -> a"; empty when the graph is acyclic.
std::string FindCycle(const PipelineSpec& pipeline) {
  std::map<std::string, int> color;  // 0 unvisited, 1 on the stack, 2 done
  std::vector<std::string> stack;
  std::string cycle;
  std::function<bool(const PipelineStep&)> visit = [&](const PipelineStep& step) {
    color[step.name] = 1;
    stack.push_back(step.name);
    for (const auto& need : step.needs) {
      const PipelineStep* next = pipeline.Find(need);
      if (next == nullptr) continue;
      if (color[need] == 1) {
        auto from = std::find(stack.begin(), stack.end(), need);
        std::vector<std::string> path(from, stack.end());
        path.push_back(need);
        cycle = fmt::format("{}", fmt::join(path, " -> "));
        return true;
      }
      if (color[need] == 0 && visit(*next)) return true;
    }
    stack.pop_back();
    color[step.name] = 2;
    return false;
  };
  for (const auto& step : pipeline.steps) {
    if (color[step.name] == 0 && visit(step)) return cycle;
  }
  return "";
}

Status CheckAncestor(const PipelineSpec& pipeline, std::string_view source, const PipelineStep& step,
                     const std::string& target, const std::string& what) {
  const PipelineStep* other = pipeline.Find(target);
  if (other == nullptr) {
    return InvalidArgumentError(fmt::format("{}: {} names step '{}', which is not a step{}", StepAt(source, step), what,
                                            target, Closest(pipeline, target)));
  }
  const auto ancestors = Ancestors(pipeline, step.name);
  if (std::find(ancestors.begin(), ancestors.end(), target) == ancestors.end()) {
    return InvalidArgumentError(
        fmt::format("{}: {} names step '{}', which is not among its needs (directly or "
                    "through other steps): add `needs: [{}]`",
                    StepAt(source, step), what, target, target));
  }
  return Status::Ok();
}

Status CheckPromote(const PipelineSpec& pipeline, std::string_view source, const PipelineStep& step) {
  const PromoteSpec& p = step.promote;
  RETURN_IF_ERROR(CheckAncestor(pipeline, source, step, p.train_step, "promote.train_step"));
  RETURN_IF_ERROR(CheckAncestor(pipeline, source, step, p.eval_step, "promote.eval_step"));
  if (const StepKind k = pipeline.Find(p.train_step)->kind; k != StepKind::kTrain && k != StepKind::kExport) {
    return InvalidArgumentError(fmt::format("{}: promote.train_step '{}' is not a train or export job step",
                                            StepAt(source, step), p.train_step));
  }
  if (pipeline.Find(p.eval_step)->kind != StepKind::kEval) {
    return InvalidArgumentError(
        fmt::format("{}: promote.eval_step '{}' is not an eval job step", StepAt(source, step), p.eval_step));
  }
  if (!p.production_eval_step.empty()) {
    RETURN_IF_ERROR(CheckAncestor(pipeline, source, step, p.production_eval_step, "promote.production_eval_step"));
    if (pipeline.Find(p.production_eval_step)->kind != StepKind::kEval) {
      return InvalidArgumentError(fmt::format("{}: promote.production_eval_step '{}' is not an eval job step",
                                              StepAt(source, step), p.production_eval_step));
    }
  }
  return Status::Ok();
}

Status CheckReferences(const PipelineSpec& pipeline, std::string_view source, const PipelineStep& step) {
  ASSIGN_OR_RETURN(auto refs, FindReferences(step.job_yaml, StepAt(source, step) + " job"));
  for (const auto& ref : refs) {
    if (ref.kind == Reference::Kind::kPipelineId || ref.kind == Reference::Kind::kModelProductionPath) continue;
    RETURN_IF_ERROR(CheckAncestor(pipeline, source, step, ref.target, fmt::format("reference ${{{}}}", ref.text)));
    if (pipeline.Find(ref.target)->kind == StepKind::kPromote) {
      return InvalidArgumentError(fmt::format("{}: reference ${{{}}}: step '{}' is a promote step, which runs no job",
                                              StepAt(source, step), ref.text, ref.target));
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateGraph(const PipelineSpec& pipeline, std::string_view source) {
  for (const auto& step : pipeline.steps) {
    for (const auto& need : step.needs) {
      if (need == step.name) {
        return InvalidArgumentError(fmt::format("{}: needs itself (a cycle)", StepAt(source, step)));
      }
      if (pipeline.Find(need) == nullptr) {
        return InvalidArgumentError(
            fmt::format("{}: needs '{}', which is not a step{}", StepAt(source, step), need, Closest(pipeline, need)));
      }
    }
  }
  if (std::string cycle = FindCycle(pipeline); !cycle.empty()) {
    const PipelineStep* first = pipeline.Find(cycle.substr(0, cycle.find(' ')));
    return InvalidArgumentError(
        fmt::format("{}: is in a cycle of needs: {} (a pipeline is a DAG)", StepAt(source, *first), cycle));
  }
  for (const auto& step : pipeline.steps) {
    if (step.kind == StepKind::kPromote) {
      RETURN_IF_ERROR(CheckPromote(pipeline, source, step));
    } else {
      RETURN_IF_ERROR(CheckReferences(pipeline, source, step));
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<Reference>> FindReferences(std::string_view text, std::string_view where) {
  std::vector<Reference> out;
  std::set<std::string> seen;
  for (size_t at = text.find("${"); at != std::string_view::npos; at = text.find("${", at + 2)) {
    const size_t end = text.find('}', at);
    if (end == std::string_view::npos) {
      return InvalidArgumentError(fmt::format("{}: unterminated reference '{}'", where, text.substr(at, 40)));
    }
    Reference ref;
    ref.text = std::string(text.substr(at + 2, end - at - 2));
    std::vector<std::string> parts;
    for (size_t from = 0;;) {
      const size_t dot = ref.text.find('.', from);
      parts.push_back(ref.text.substr(from, dot == std::string::npos ? std::string::npos : dot - from));
      if (dot == std::string::npos) break;
      from = dot + 1;
    }
    const bool any_empty = std::any_of(parts.begin(), parts.end(), [](const auto& p) { return p.empty(); });
    if (!any_empty && parts.size() == 2 && parts[0] == "pipeline" && parts[1] == "id") {
      ref.kind = Reference::Kind::kPipelineId;
    } else if (!any_empty && parts[0] == "steps" && parts.size() == 3 && parts[2] == "output_dir") {
      ref.kind = Reference::Kind::kStepOutputDir;
    } else if (!any_empty && parts[0] == "steps" && parts.size() == 3 && parts[2] == "job_id") {
      ref.kind = Reference::Kind::kStepJobId;
    } else if (!any_empty && parts[0] == "steps" && parts.size() >= 4 && parts[2] == "metrics") {
      ref.kind = Reference::Kind::kStepMetric;
      ref.key = ref.text.substr(ref.text.find(".metrics.") + 9);
    } else if (!any_empty && parts[0] == "models" && parts.size() == 4 && parts[2] == "production" &&
               parts[3] == "path") {
      ref.kind = Reference::Kind::kModelProductionPath;
    } else {
      return InvalidArgumentError(
          fmt::format("{}: unknown reference '${{{}}}' (known: ${{pipeline.id}}, ${{steps.NAME.output_dir}}, "
                      "${{steps.NAME.job_id}}, ${{steps.NAME.metrics.KEY}}, ${{models.NAME.production.path}})",
                      where, ref.text));
    }
    if (ref.kind != Reference::Kind::kPipelineId) ref.target = parts[1];
    if (seen.insert(ref.text).second) out.push_back(std::move(ref));
  }
  return out;
}

std::string SubstituteReferences(std::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  size_t from = 0;
  for (size_t at = text.find("${"); at != std::string_view::npos; at = text.find("${", from)) {
    const size_t end = text.find('}', at);
    if (end == std::string_view::npos) break;
    auto it = values.find(std::string(text.substr(at + 2, end - at - 2)));
    out.append(text.substr(from, at - from));
    out.append(it == values.end() ? std::string(text.substr(at, end + 1 - at)) : it->second);
    from = end + 1;
  }
  out.append(text.substr(from));
  return out;
}

std::vector<const PipelineStep*> TopologicalOrder(const PipelineSpec& pipeline) {
  std::vector<const PipelineStep*> order;
  std::set<std::string> placed;
  while (order.size() < pipeline.steps.size()) {
    bool progressed = false;
    for (const auto& step : pipeline.steps) {
      if (placed.count(step.name)) continue;
      const bool ready = std::all_of(step.needs.begin(), step.needs.end(),
                                     [&](const std::string& need) { return placed.count(need) > 0; });
      if (!ready) continue;
      order.push_back(&step);
      placed.insert(step.name);
      progressed = true;
    }
    if (!progressed) break;  // a cycle (ParsePipeline refuses them): the rest has no order
  }
  return order;
}

std::vector<std::string> Ancestors(const PipelineSpec& pipeline, std::string_view step) {
  std::vector<std::string> out;
  std::vector<std::string> todo;
  if (const PipelineStep* s = pipeline.Find(step)) todo = s->needs;
  while (!todo.empty()) {
    std::string name = todo.back();
    todo.pop_back();
    if (std::find(out.begin(), out.end(), name) != out.end()) continue;
    out.push_back(name);
    if (const PipelineStep* s = pipeline.Find(name)) todo.insert(todo.end(), s->needs.begin(), s->needs.end());
  }
  return out;
}

}  // namespace anneal::jobspec
