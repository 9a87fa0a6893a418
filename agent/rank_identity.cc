// Rank identity: run-as resolution, the environment allow-list, permission checks for the rank's user.
#include "agent/rank_identity.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "common/fsutil.h"

namespace anneal::agent {
namespace {

// Exact names and "PREFIX_*" patterns a rank inherits from the agent's environment.
constexpr std::array<const char*, 21> kAllowed = {
    "PATH",     "LANG",   "LANGUAGE", "LC_*",    "TZ",     "TMPDIR",   "LD_LIBRARY_PATH",
    "CUDA_*",   "NCCL_*", "OMP_*",    "MKL_*",   "KMP_*",  "TORCH_*",  "PYTORCH_*",
    "NVIDIA_*", "GLOO_*", "CUBLAS_*", "CUDNN_*", "NVTE_*", "TRITON_*", "HOSTNAME"};

bool Matches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '*') {
    return name.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  }
  return pattern == name;
}

bool ParseId(const std::string& text, unsigned long* out) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 10) return false;
  *out = std::stoul(text);
  return *out <= 0xfffffffeUL;  // (uid_t)-1 means "unchanged" to setuid
}

void FillFromDatabase(RankUser* user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(user->uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) user->name = pw.pw_name;
  user->groups = {user->gid};
  if (user->name.empty()) return;
  int n = 64;
  std::vector<gid_t> groups(n);
  if (::getgrouplist(user->name.c_str(), user->gid, groups.data(), &n) < 0) {
    groups.resize(n);
    if (::getgrouplist(user->name.c_str(), user->gid, groups.data(), &n) < 0) return;
  }
  groups.resize(n);
  for (gid_t g : groups) {
    if (g != 0 && std::find(user->groups.begin(), user->groups.end(), g) == user->groups.end()) {
      user->groups.push_back(g);
    }
  }
}

bool MayAccess(const struct stat& st, const RankUser& user, mode_t owner_bit, mode_t group_bit, mode_t other_bit) {
  if (st.st_uid == user.uid) return (st.st_mode & owner_bit) != 0;
  if (std::find(user.groups.begin(), user.groups.end(), st.st_gid) != user.groups.end()) {
    return (st.st_mode & group_bit) != 0;
  }
  return (st.st_mode & other_bit) != 0;
}

std::string ModeText(const struct stat& st) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return mode;
}

}  // namespace

std::string RankUser::Describe() const {
  return (name.empty() ? std::string("uid ") + std::to_string(uid) : name) + " (uid " + std::to_string(uid) + ", gid " +
         std::to_string(gid) + ")";
}

StatusOr<RankUser> ResolveRunAs(const std::string& value) {
  RankUser user;
  if (const auto colon = value.find(':'); colon != std::string::npos) {
    unsigned long uid = 0, gid = 0;
    if (!ParseId(value.substr(0, colon), &uid) || !ParseId(value.substr(colon + 1), &gid)) {
      return InvalidArgumentError("run_as '" + value + "': expected a user name or UID:GID (numbers)");
    }
    user.uid = static_cast<uid_t>(uid);
    user.gid = static_cast<gid_t>(gid);
  } else {
    std::vector<char> buf(16384);
    passwd pw{};
    passwd* found = nullptr;
    if (value.empty() || ::getpwnam_r(value.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
      return InvalidArgumentError("run_as '" + value + "': no such user (give a user name or UID:GID)");
    }
    user.uid = pw.pw_uid;
    user.gid = pw.pw_gid;
  }
  if (user.uid == 0 || user.gid == 0) {
    return InvalidArgumentError("run_as '" + value + "': uid and gid 0 (root) are refused: a rank never runs as root");
  }
  FillFromDatabase(&user);
  return user;
}

StatusOr<std::optional<RankUser>> RankUserFor(const RunAsConfig& run_as, const std::string& team, bool agent_is_root) {
  if (!agent_is_root) return std::optional<RankUser>();
  const auto it = run_as.teams.find(team);
  const std::string& value = it != run_as.teams.end() ? it->second : run_as.default_user;
  auto user = ResolveRunAs(value);
  if (!user.ok()) {
    return user.status().WithContext(it != run_as.teams.end() ? "run_as for team '" + team + "'"
                                                              : "run_as default (team '" + team + "')");
  }
  return std::optional<RankUser>(std::move(*user));
}

bool RankEnvAllowed(const std::string& name, const std::vector<std::string>& extra) {
  for (const char* p : kAllowed) {
    if (Matches(p, name)) return true;
  }
  for (const auto& p : extra) {
    if (Matches(p, name)) return true;
  }
  return false;
}

std::map<std::string, std::string> AllowedAgentEnvironment(char** environ, const std::vector<std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string kv(*e);
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    const std::string name = kv.substr(0, eq);
    if (RankEnvAllowed(name, extra)) env[name] = kv.substr(eq + 1);
  }
  return env;
}

Status CheckAccessibleBy(const std::string& what, const std::string& path, const RankUser& user, bool writable) {
  namespace fs = std::filesystem;
  const fs::path full = fs::path(path).lexically_normal();
  fs::path prefix;
  for (const auto& part : full) {
    prefix /= part;
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) {
      return FailedPreconditionError(what + " " + path + ": " + prefix.string() + ": " + ErrnoText(errno));
    }
    const bool last = prefix == full;
    if (S_ISDIR(st.st_mode) && !MayAccess(st, user, S_IXUSR, S_IXGRP, S_IXOTH)) {
      return FailedPreconditionError(what + " " + path + " is not reachable by " + user.Describe() + ": " +
                                     prefix.string() + " is not searchable by it (owner uid " +
                                     std::to_string(st.st_uid) + ", mode " + ModeText(st) + ")");
    }
    if (last && writable && !MayAccess(st, user, S_IWUSR, S_IWGRP, S_IWOTH)) {
      return FailedPreconditionError(what + " " + path + " is not writable by " + user.Describe() + " (owner uid " +
                                     std::to_string(st.st_uid) + ", mode " + ModeText(st) +
                                     "): give it to that user or choose another directory");
    }
  }
  return Status::Ok();
}

namespace {

// Creates `path` already owned by `user`: a fresh sibling is made, given away, then renamed into place without
// replacing anything (RENAME_NOREPLACE). Another agent creating the same directory at the same moment (agents
// of one job on a shared filesystem) then never sees it owned by root, as a plain mkdir + chown would let it.
// OK when `path` exists afterwards, whoever made it; `*made` says whether this call did.
Status MakeDirOwnedBy(const std::filesystem::path& path, const RankUser& user, bool* made) {
  *made = false;
  const std::string staged = path.string() + ".anneal-mkdir-" + std::to_string(::getpid());
  if (::mkdir(staged.c_str(), 0755) != 0 && errno != EEXIST) {  // EEXIST: left by a crashed agent of this pid
    return InternalError("mkdir " + path.string() + ": " + ErrnoText(errno));
  }
  if (::chown(staged.c_str(), user.uid, user.gid) != 0) {
    const int err = errno;
    ::rmdir(staged.c_str());
    return InternalError("chown " + staged + " to " + user.Describe() + ": " + ErrnoText(err));
  }
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
    *made = true;
    return Status::Ok();
  }
  const int err = errno;
  ::rmdir(staged.c_str());
  if (err == EEXIST) return Status::Ok();  // made meanwhile by someone else
  if (err != EINVAL) return InternalError("rename " + staged + " -> " + path.string() + ": " + ErrnoText(err));
  // No RENAME_NOREPLACE on this filesystem: mkdir, then give it away.
  if (::mkdir(path.c_str(), 0755) != 0) {
    if (errno == EEXIST) return Status::Ok();
    return InternalError("mkdir " + path.string() + ": " + ErrnoText(errno));
  }
  *made = true;
  if (::chown(path.c_str(), user.uid, user.gid) != 0) {
    return InternalError("chown " + path.string() + " to " + user.Describe() + ": " + ErrnoText(errno));
  }
  return Status::Ok();
}

}  // namespace

Status MakeDirsOwnedBy(const std::string& dir, const std::optional<RankUser>& user) {
  namespace fs = std::filesystem;
  fs::path prefix;
  for (const auto& part : fs::path(dir).lexically_normal()) {
    prefix /= part;
    if (part.empty()) continue;
    struct stat existing {};
    if (::stat(prefix.c_str(), &existing) == 0) continue;
    if (user) {
      bool made = false;
      RETURN_IF_ERROR(MakeDirOwnedBy(prefix, *user, &made));
    } else if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return InternalError("mkdir " + prefix.string() + ": " + ErrnoText(errno));
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return FailedPreconditionError(dir + " is not a directory");
  }
  return Status::Ok();
}

}  // namespace anneal::agent
