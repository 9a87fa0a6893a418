// PathPolicy: which directories a team's jobs may read models and datasets from and write outputs to.
//
// The cluster config (the coordinator's YAML, key `path_policy`) gives allowed roots per category:
//
//   path_policy:
//     default:                       # every team without its own entry, and what a team entry leaves out
//       models:   [/shared/models]
//       datasets: [/shared/datasets, /data/{team}/datasets]   # {team} is replaced by the team's name
//       outputs:  [/data/{team}/outputs]
//     teams:
//       nlp:
//         models: [/shared/models, /nlp/models]              # replaces default.models for team nlp
//
// A team's entry replaces the default's list for each category it names; a category it leaves out is the
// default's. Every root is absolute, has no `..` component and may use `{team}`.
//
// CheckSpecPaths checks EVERY path a JobSpec names against the roots of its category:
//
//   key                              category   may lie under
//   model.model_name_or_path         models     models or outputs roots (a team may reuse its own outputs)
//   model.adapter_name_or_path       models     models or outputs roots
//   data.dataset_dir                 datasets   datasets or outputs roots
//   data.dataset / data.eval_dataset datasets   entries naming a path (with a '/'); relative ones are taken
//                                               under dataset_dir; the file_name of every named entry of
//                                               <dataset_dir>/dataset_info.json, when that file is readable here
//   eval.task_dir                    datasets   datasets or outputs roots
//   train.resume_from_checkpoint     outputs    outputs roots ("latest" names no path)
//   train.output_dir                 outputs    strictly below an outputs root (never the root itself)
//   data.tokenized_cache_dir         outputs    strictly below an outputs root; when empty, its default
//                                               <output_dir>/../.anneal-cache is checked the same way
//   eval.output_file                 outputs    strictly below an outputs root
// (The LLaMA-Factory `deepspeed` key names no path in a JobSpec: it is read where the spec is parsed, and the
// coordinator parses with ParseOptions{.open_files = false}, so it never opens it.)
//
// A path is checked as the kernel will see it: it must be absolute (`anneal submit` makes relative paths
// absolute) and have no `..` component (refused outright: after a symlink `..` is not what it reads like);
// it is normalized lexically (`.` and repeated slashes), then its longest existing prefix is resolved with
// realpath(3) (so a symlink pointing out of a root is an escape) and the rest appended. Roots are resolved
// the same way. A path is under a root when its resolved form equals the root or lies below it, component
// by component (/data/outputs2 is not under /data/outputs).
//
// The check happens where the coordinator runs; on a cluster the agents may see other filesystems, so the
// agent repeats the output check at launch (LaunchTask.output_roots) and ranks run as an unprivileged user:
// filesystem permissions are the last line. A symlink created between the check and the use (TOCTOU) is
// only caught by the agent's re-check and the rank's permissions.
//
// Thread-safety: pure functions over values (they read the filesystem: realpath, dataset_info.json); safe
// from any thread.
//
// Example:
//   ASSIGN_OR_RETURN(PathPolicy policy, ParsePathPolicy(config["path_policy"], "coordinator.yaml"));
//   Status st = CheckSpecPaths(spec, "nlp", policy);
//   // st: PERMISSION_DENIED "key 'train.output_dir': path /etc/x is outside the outputs roots of team 'nlp'
//   //     (allowed: /data/nlp/outputs)"
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "jobspec/jobspec.h"

namespace YAML {
class Node;
}

namespace anneal::jobspec {

enum class PathCategory { kModels, kDatasets, kOutputs };
std::string_view PathCategoryName(PathCategory c);  // "models", "datasets", "outputs"

struct PathRoots {
  std::vector<std::string> models;
  std::vector<std::string> datasets;
  std::vector<std::string> outputs;

  const std::vector<std::string>& Of(PathCategory c) const;
  bool operator==(const PathRoots&) const = default;
};

// A team's entry: an unset category falls back to the default's.
struct TeamPathRoots {
  std::optional<std::vector<std::string>> models;
  std::optional<std::vector<std::string>> datasets;
  std::optional<std::vector<std::string>> outputs;

  bool operator==(const TeamPathRoots&) const = default;
};

struct PathPolicy {
  PathRoots defaults;
  std::map<std::string, TeamPathRoots> teams;

  // The team's roots, {team} replaced. INVALID_ARGUMENT when the team name cannot be put in a path
  // (empty, ".", "..", or a character outside [A-Za-z0-9._-]).
  StatusOr<PathRoots> RootsFor(std::string_view team) const;
  bool operator==(const PathPolicy&) const = default;
};

// Parses the `path_policy` mapping (shape above). Errors: INVALID_ARGUMENT naming `where`, the key and what
// is expected (unknown keys, a root that is not absolute or has `..`, a bad team name).
StatusOr<PathPolicy> ParsePathPolicy(const YAML::Node& node, std::string_view where);
// The policy as YAML text (the `path_policy:` block, for `anneal up` to write); ParsePathPolicy reads it back.
std::string PathPolicyYaml(const PathPolicy& policy);

// The path as the kernel will resolve it: absolute and `..`-free required (INVALID_ARGUMENT otherwise),
// lexically normalized, the longest existing prefix realpath'ed, the rest appended.
StatusOr<std::string> ResolvePolicyPath(std::string_view path);
// True when `resolved` equals `resolved_root` or lies below it (both from ResolvePolicyPath).
bool PathIsUnder(std::string_view resolved, std::string_view resolved_root);
// True when `resolved` lies strictly below `resolved_root`.
bool PathIsStrictlyUnder(std::string_view resolved, std::string_view resolved_root);

// Checks one path of `key` against `roots` (strictly below one of them when `strict`). PERMISSION_DENIED
// naming the key, the path (and what it resolves to when that differs) and the roots; INVALID_ARGUMENT for a
// relative path or a `..` component.
Status CheckPathUnderRoots(std::string_view key, std::string_view path, const std::vector<std::string>& roots,
                           std::string_view roots_name, bool strict);

// Checks every path of `spec` (table above) for `team`. The first offending key is reported:
// PERMISSION_DENIED "key '<key>': path <path> is outside the <category> roots of team '<team>' (allowed: ...)".
Status CheckSpecPaths(const JobSpec& spec, std::string_view team, const PathPolicy& policy);

}  // namespace anneal::jobspec
