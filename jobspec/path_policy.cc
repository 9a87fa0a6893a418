// PathPolicy: parsing, path resolution and the per-key checks of a JobSpec (jobspec/path_policy.h).
#include "jobspec/path_policy.h"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace anneal::jobspec {
namespace {

constexpr std::string_view kTeamPlaceholder = "{team}";

std::vector<std::string> SplitComponents(std::string_view path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t slash = path.find('/', start);
    const size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > start) out.emplace_back(path.substr(start, end - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out;
}

bool ValidTeamName(std::string_view team) {
  if (team.empty() || team == "." || team == "..") return false;
  for (char c : team) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string Substitute(std::string root, std::string_view team) {
  for (size_t at = root.find(kTeamPlaceholder); at != std::string::npos; at = root.find(kTeamPlaceholder, at)) {
    root.replace(at, kTeamPlaceholder.size(), team);
    at += team.size();
  }
  return root;
}

// A root as written in the config: absolute, no `..` ({team} may appear anywhere).
Status CheckRootText(const std::string& root, const std::string& where) {
  if (root.empty() || root[0] != '/') {
    return InvalidArgumentError(fmt::format("{}: root '{}' is not an absolute path", where, root));
  }
  for (const auto& c : SplitComponents(root)) {
    if (c == "..") return InvalidArgumentError(fmt::format("{}: root '{}' has a '..' component", where, root));
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ParseRootList(const YAML::Node& node, const std::string& where) {
  if (!node.IsSequence()) {
    return InvalidArgumentError(fmt::format("{}: expected a list of absolute directories", where));
  }
  std::vector<std::string> roots;
  for (const auto& item : node) {
    if (!item.IsScalar())
      return InvalidArgumentError(fmt::format("{}: expected a list of absolute directories", where));
    RETURN_IF_ERROR(CheckRootText(item.Scalar(), where));
    roots.push_back(item.Scalar());
  }
  return roots;
}

// One roots mapping ({models, datasets, outputs}); `team` set: the categories it names.
Status ParseRootsMap(const YAML::Node& node, const std::string& where, PathRoots* roots, TeamPathRoots* team) {
  if (node.IsNull()) return Status::Ok();
  if (!node.IsMap())
    return InvalidArgumentError(fmt::format("{}: expected a mapping of models, datasets, outputs", where));
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const std::string at = fmt::format("{}.{}", where, key);
    std::vector<std::string>* plain = nullptr;
    std::optional<std::vector<std::string>>* optional = nullptr;
    if (key == "models") {
      plain = roots ? &roots->models : nullptr;
      optional = team ? &team->models : nullptr;
    } else if (key == "datasets") {
      plain = roots ? &roots->datasets : nullptr;
      optional = team ? &team->datasets : nullptr;
    } else if (key == "outputs") {
      plain = roots ? &roots->outputs : nullptr;
      optional = team ? &team->outputs : nullptr;
    } else {
      return InvalidArgumentError(fmt::format("{}: unknown key (known: models, datasets, outputs)", at));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> list, ParseRootList(kv.second, at));
    if (plain) *plain = std::move(list);
    if (optional) *optional = std::move(list);
  }
  return Status::Ok();
}

void EmitList(std::ostringstream& out, const char* indent, const char* key, const std::vector<std::string>& roots) {
  out << indent << key << ": [";
  for (size_t i = 0; i < roots.size(); ++i) {
    YAML::Emitter e;
    e << YAML::DoubleQuoted << roots[i];
    out << (i ? ", " : "") << e.c_str();
  }
  out << "]\n";
}

// The resolved form of `path` for the messages: " (resolves to X)" when it differs.
std::string ResolvesTo(std::string_view path, const std::string& resolved) {
  if (resolved == path) return "";
  return fmt::format(" (resolves to {})", resolved);
}

}  // namespace

std::string_view PathCategoryName(PathCategory c) {
  switch (c) {
    case PathCategory::kModels:
      return "models";
    case PathCategory::kDatasets:
      return "datasets";
    case PathCategory::kOutputs:
      return "outputs";
  }
  return "?";
}

const std::vector<std::string>& PathRoots::Of(PathCategory c) const {
  switch (c) {
    case PathCategory::kModels:
      return models;
    case PathCategory::kDatasets:
      return datasets;
    case PathCategory::kOutputs:
      break;
  }
  return outputs;
}

StatusOr<PathRoots> PathPolicy::RootsFor(std::string_view team) const {
  if (!ValidTeamName(team)) {
    return InvalidArgumentError(
        fmt::format("team name '{}' cannot be used in a path (expected letters, digits, '.', '_', '-')", team));
  }
  PathRoots roots = defaults;
  if (auto it = teams.find(std::string(team)); it != teams.end()) {
    if (it->second.models) roots.models = *it->second.models;
    if (it->second.datasets) roots.datasets = *it->second.datasets;
    if (it->second.outputs) roots.outputs = *it->second.outputs;
  }
  for (auto* list : {&roots.models, &roots.datasets, &roots.outputs}) {
    for (auto& r : *list) r = Substitute(r, team);
  }
  return roots;
}

StatusOr<PathPolicy> ParsePathPolicy(const YAML::Node& node, std::string_view where) {
  PathPolicy policy;
  const std::string base = fmt::format("{}: path_policy", where);
  if (!node.IsMap()) return InvalidArgumentError(fmt::format("{}: expected a mapping with default and teams", base));
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (key == "default") {
      RETURN_IF_ERROR(ParseRootsMap(kv.second, base + ".default", &policy.defaults, nullptr));
    } else if (key == "teams") {
      if (kv.second.IsNull()) continue;
      if (!kv.second.IsMap())
        return InvalidArgumentError(fmt::format("{}.teams: expected a mapping team -> roots", base));
      for (const auto& t : kv.second) {
        const std::string team = t.first.as<std::string>();
        const std::string at = fmt::format("{}.teams.{}", base, team);
        if (!ValidTeamName(team)) {
          return InvalidArgumentError(fmt::format("{}: invalid team name (letters, digits, '.', '_', '-')", at));
        }
        RETURN_IF_ERROR(ParseRootsMap(t.second, at, nullptr, &policy.teams[team]));
      }
    } else {
      return InvalidArgumentError(fmt::format("{}.{}: unknown key (known: default, teams)", base, key));
    }
  }
  return policy;
}

std::string PathPolicyYaml(const PathPolicy& policy) {
  std::ostringstream out;
  out << "path_policy:\n  default:\n";
  EmitList(out, "    ", "models", policy.defaults.models);
  EmitList(out, "    ", "datasets", policy.defaults.datasets);
  EmitList(out, "    ", "outputs", policy.defaults.outputs);
  if (!policy.teams.empty()) {
    out << "  teams:\n";
    for (const auto& [team, roots] : policy.teams) {
      out << "    " << team << ":" << (roots == TeamPathRoots{} ? " {}" : "") << "\n";
      if (roots.models) EmitList(out, "      ", "models", *roots.models);
      if (roots.datasets) EmitList(out, "      ", "datasets", *roots.datasets);
      if (roots.outputs) EmitList(out, "      ", "outputs", *roots.outputs);
    }
  }
  return out.str();
}

StatusOr<std::string> ResolvePolicyPath(std::string_view path) {
  if (path.empty() || path[0] != '/') {
    return InvalidArgumentError(fmt::format("path '{}' is not absolute", path));
  }
  const std::vector<std::string> parts = SplitComponents(path);
  for (const auto& p : parts) {
    if (p == "..") return InvalidArgumentError(fmt::format("path '{}' has a '..' component", path));
  }
  // Walk from the root: each existing component is resolved (symlinks followed) before the next is added;
  // from the first missing one on, the rest is appended as written ('.' dropped).
  std::string resolved = "/";
  size_t i = 0;
  for (; i < parts.size(); ++i) {
    if (parts[i] == ".") continue;
    const std::string candidate = resolved == "/" ? "/" + parts[i] : resolved + "/" + parts[i];
    struct stat st {};
    if (::lstat(candidate.c_str(), &st) != 0) break;  // missing (or unreadable): the rest is lexical
    char buf[PATH_MAX];
    if (::realpath(candidate.c_str(), buf) == nullptr) {
      if (S_ISLNK(st.st_mode) && errno == ENOENT) {
        return InvalidArgumentError(
            fmt::format("path '{}': {} is a symlink to nothing (it could be made to point anywhere)", path, candidate));
      }
      break;
    }
    resolved = buf;
  }
  for (; i < parts.size(); ++i) {
    if (parts[i] == ".") continue;
    resolved += (resolved == "/" ? "" : "/") + parts[i];
  }
  return resolved;
}

bool PathIsUnder(std::string_view resolved, std::string_view root) {
  if (root == "/") return !resolved.empty() && resolved[0] == '/';
  if (resolved.size() < root.size() || resolved.substr(0, root.size()) != root) return false;
  return resolved.size() == root.size() || resolved[root.size()] == '/';
}

bool PathIsStrictlyUnder(std::string_view resolved, std::string_view root) {
  return PathIsUnder(resolved, root) && resolved != root;
}

Status CheckPathUnderRoots(std::string_view key, std::string_view path, const std::vector<std::string>& roots,
                           std::string_view roots_text, bool strict) {
  auto resolved = ResolvePolicyPath(path);
  if (!resolved.ok()) return InvalidArgumentError(fmt::format("key '{}': {}", key, resolved.status().message()));
  bool equals_root = false;
  for (const auto& root : roots) {
    auto r = ResolvePolicyPath(root);
    if (!r.ok()) continue;  // a bad root allows nothing (ParsePathPolicy refuses them)
    if (strict ? PathIsStrictlyUnder(*resolved, *r) : PathIsUnder(*resolved, *r)) return Status::Ok();
    equals_root = equals_root || *resolved == *r;
  }
  if (equals_root) {
    return PermissionDeniedError(
        fmt::format("key '{}': path {}{} is one of {} itself; use a directory below it (allowed: below {})", key, path,
                    ResolvesTo(path, *resolved), roots_text, Join(roots)));
  }
  const std::string allowed = roots.empty() ? "none are configured" : Join(roots);
  return PermissionDeniedError(fmt::format("key '{}': path {}{} is outside {} (allowed: {})", key, path,
                                           ResolvesTo(path, *resolved), roots_text, allowed));
}

namespace {

struct PathCheck {
  std::string key;
  std::string path;
  bool outputs_only = false;  // written (or a checkpoint read back): outputs roots only
  PathCategory category = PathCategory::kOutputs;
  bool strict = false;  // strictly below a root
};

// The `file_name` of every dataset_info.json entry the spec names, as the trainer resolves it
// (<dataset_dir>/<file_name>). Nothing when the file is missing or unreadable here, or not a JSON object.
void DatasetInfoChecks(const JobSpec& spec, std::vector<PathCheck>* checks) {
  const std::string info_path = spec.data.dataset_dir + "/dataset_info.json";
  std::ifstream in(info_path, std::ios::binary);
  if (!in) return;
  std::ostringstream text;
  text << in.rdbuf();
  YAML::Node info;
  try {
    info = YAML::Load(text.str());  // JSON is YAML
  } catch (const YAML::Exception&) {
    return;  // the trainer reports a malformed dataset_info.json
  }
  if (!info.IsMap()) return;
  auto add = [&](const char* key, const std::vector<std::string>& names) {
    for (const auto& name : names) {
      const YAML::Node entry = info[name];
      if (!entry.IsMap() || !entry["file_name"] || !entry["file_name"].IsScalar()) continue;
      const std::filesystem::path file =
          std::filesystem::path(spec.data.dataset_dir) / entry["file_name"].Scalar();  // absolute file_name wins
      checks->push_back({fmt::format("{} ('{}': file_name in {})", key, name, info_path), file.string(), false,
                         PathCategory::kDatasets, false});
    }
  };
  add("data.dataset", spec.data.dataset);
  add("data.eval_dataset", spec.data.eval_dataset);
}

void DatasetEntryChecks(const char* key, const std::vector<std::string>& entries, const std::string& dataset_dir,
                        std::vector<PathCheck>* checks) {
  for (const auto& entry : entries) {
    std::string path;
    if (entry.find('/') != std::string::npos) {
      path = entry[0] == '/' ? entry : dataset_dir + "/" + entry;  // a relative path is found under dataset_dir
    } else {
      // A name: from dataset_info.json (checked there), else a file in dataset_dir (or the task directory).
      const std::string candidate = dataset_dir + "/" + entry;
      struct stat st {};
      if (::lstat(candidate.c_str(), &st) != 0) continue;
      path = candidate;
    }
    checks->push_back({fmt::format("{} ('{}')", key, entry), path, false, PathCategory::kDatasets, false});
  }
}

std::vector<PathCheck> SpecPathChecks(const JobSpec& spec) {
  std::vector<PathCheck> c;
  if (spec.kind != JobKind::kClean) {  // a clean job reads no model
    c.push_back({"model.model_name_or_path", spec.model.model_name_or_path, false, PathCategory::kModels, false});
  }
  if (spec.kind != JobKind::kClean && !spec.model.adapter_name_or_path.empty()) {
    c.push_back({"model.adapter_name_or_path", spec.model.adapter_name_or_path, false, PathCategory::kModels, false});
  }
  if (spec.kind == JobKind::kExport) {  // reads no data and keeps no cache: the model, the adapter, the export
    c.push_back({"export.dir (the job's output_dir)", spec.train.output_dir, true, PathCategory::kOutputs, true});
    return c;
  }
  c.push_back({"data.dataset_dir", spec.data.dataset_dir, false, PathCategory::kDatasets, false});
  // Checked before it is read (DatasetInfoChecks): a symlink there must not make the coordinator read elsewhere.
  if (struct stat st{}; ::lstat((spec.data.dataset_dir + "/dataset_info.json").c_str(), &st) == 0) {
    c.push_back({"data.dataset_dir (its dataset_info.json)", spec.data.dataset_dir + "/dataset_info.json", false,
                 PathCategory::kDatasets, false});
  }
  if (!spec.eval.task_dir.empty()) {
    c.push_back({"eval.task_dir", spec.eval.task_dir, false, PathCategory::kDatasets, false});
  }
  c.push_back({"train.output_dir", spec.train.output_dir, true, PathCategory::kOutputs, true});
  if (!spec.data.tokenized_cache_dir.empty()) {
    c.push_back({"data.tokenized_cache_dir", spec.data.tokenized_cache_dir, true, PathCategory::kOutputs, true});
  } else if (!spec.train.output_dir.empty() && spec.train.output_dir[0] == '/') {
    const std::string cache =
        (std::filesystem::path(spec.train.output_dir).parent_path() / ".anneal-cache").string();  // as the agent
    c.push_back({"data.tokenized_cache_dir (default <output_dir>/../.anneal-cache)", cache, true,
                 PathCategory::kOutputs, true});
  }
  if (!spec.eval.output_file.empty()) {
    c.push_back({"eval.output_file", spec.eval.output_file, true, PathCategory::kOutputs, true});
  }
  if (!spec.train.resume_from_checkpoint.empty() && spec.train.resume_from_checkpoint != "latest") {
    c.push_back(
        {"train.resume_from_checkpoint", spec.train.resume_from_checkpoint, true, PathCategory::kOutputs, false});
  }
  return c;
}

}  // namespace

Status CheckSpecPaths(const JobSpec& spec, std::string_view team, const PathPolicy& policy) {
  ASSIGN_OR_RETURN(PathRoots roots, policy.RootsFor(team));
  std::vector<PathCheck> checks = SpecPathChecks(spec);
  const size_t fixed = checks.size();
  const bool reads_data = spec.kind != JobKind::kExport;
  if (reads_data) {
    DatasetEntryChecks("data.dataset", spec.data.dataset, spec.data.dataset_dir, &checks);
    DatasetEntryChecks("data.eval_dataset", spec.data.eval_dataset, spec.data.dataset_dir, &checks);
  }
  for (size_t i = 0; i < checks.size(); ++i) {
    const PathCheck& check = checks[i];
    std::vector<std::string> allowed = roots.Of(check.category);
    std::string text = fmt::format("the {} roots of team '{}'", PathCategoryName(check.category), team);
    if (!check.outputs_only && check.category != PathCategory::kOutputs) {
      for (const auto& root : roots.outputs) {
        if (std::find(allowed.begin(), allowed.end(), root) == allowed.end()) allowed.push_back(root);
      }
      text = fmt::format("the {} and outputs roots of team '{}'", PathCategoryName(check.category), team);
    }
    RETURN_IF_ERROR(CheckPathUnderRoots(check.key, check.path, allowed, text, check.strict));
    // dataset_info.json is read only once dataset_dir itself passed (never a file outside the roots).
    if (i + 1 == fixed && reads_data) {
      std::vector<PathCheck> info;
      DatasetInfoChecks(spec, &info);
      checks.insert(checks.end(), info.begin(), info.end());
    }
  }
  return Status::Ok();
}

}  // namespace anneal::jobspec
