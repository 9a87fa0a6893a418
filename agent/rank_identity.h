// Who a rank runs as and what it inherits: the user an agent running as root maps a team to, the
// environment allow-list, and the permission checks the pre-launch checks make for that user.
//
// - RunAs (agent config `run_as: {default: nobody, teams: {nlp: "2001:2001"}}`): an agent running as root
//   starts the ranks of team T as teams[T], else as `default`. A value is a user name (its uid and primary
//   gid from the user database) or "UID:GID". uid 0 or gid 0 is refused: a rank never runs as root. An agent
//   not running as root starts ranks as itself (it could not switch anyway).
// - The environment: only the agent's variables the allow-list names reach a rank (PATH, LANG, LANGUAGE,
//   LC_*, TZ, TMPDIR, LD_LIBRARY_PATH, CUDA_*, NCCL_*, OMP_*, MKL_*, KMP_*, TORCH_*, PYTORCH_*, NVIDIA_*,
//   GLOO_*, CUBLAS_*, CUDNN_*, plus the config's `rank_env_allow` names, where "FOO_*" is a prefix); the
//   agent's other variables (tokens, credentials, ANNEAL_*) never do. The job's variables (LaunchTask.env)
//   and Anneal's contract are added on top by the supervisor.
//
// Thread-safety: stateless functions (getpwnam_r, stat).
//
// Example:
//   ASSIGN_OR_RETURN(std::optional<RankUser> user, RankUserFor(run_as, launch.team(), ::geteuid() == 0));
//   std::map<std::string, std::string> env = AllowedAgentEnvironment(environ, config.rank_env_allow);
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::agent {

struct RunAsConfig {
  std::string default_user = "nobody";
  std::map<std::string, std::string> teams;  // team -> user name or "UID:GID"
};

struct RankUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::string name;              // from the user database; empty when the uid has no entry
  std::vector<gid_t> groups;     // supplementary groups (the database's, without group 0); at least `gid`
  std::string Describe() const;  // "nobody (uid 65534, gid 65534)"
};

// "name" or "UID:GID" -> the user. INVALID_ARGUMENT naming `value` (unknown user, malformed, uid/gid 0).
StatusOr<RankUser> ResolveRunAs(const std::string& value);

// The user the ranks of `team` run as; nullopt when the agent is not root (ranks run as the agent's user).
// Errors name the team and the configured value.
StatusOr<std::optional<RankUser>> RankUserFor(const RunAsConfig& run_as, const std::string& team, bool agent_is_root);

// True when the allow-list (above, plus `extra`: names, or "PREFIX_*") admits the agent variable `name`.
bool RankEnvAllowed(const std::string& name, const std::vector<std::string>& extra);
// The agent variables (from `environ`) a rank inherits.
std::map<std::string, std::string> AllowedAgentEnvironment(char** environ, const std::vector<std::string>& extra);

// FAILED_PRECONDITION unless `user` can search (x) every directory from / down to `path` and, when
// `writable`, write into `path` (owner, group or other permission bits; ACLs are not read).
Status CheckAccessibleBy(const std::string& what, const std::string& path, const RankUser& user, bool writable);

// Creates `dir` (mkdir -p); the directories this call created are given to `user` (fchown, never through a
// symlink), so the rank can write there. Directories that existed keep their owner.
Status MakeDirsOwnedBy(const std::string& dir, const std::optional<RankUser>& user);

}  // namespace anneal::agent
