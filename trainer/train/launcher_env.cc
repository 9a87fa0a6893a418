// ReadLauncherEnv (launcher_env.h): torchrun's variables, else Slurm's.
#include "trainer/train/launcher_env.h"

#include <algorithm>
#include <cstdlib>

namespace anneal::train {
namespace {

// A non-negative integer variable; `fallback` when unset or empty.
StatusOr<int> Int(const EnvGetter& get, const char* name, int fallback) {
  const char* v = get(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1'000'000'000) {
    return InvalidArgumentError(std::string("environment ") + name + "='" + v + "' is not a non-negative integer");
  }
  return static_cast<int>(x);
}

// Slurm's SLURM_TASKS_PER_NODE is "4(x2),3": tasks on the first node lead.
StatusOr<int> FirstCount(const char* name, const char* value) {
  char* end = nullptr;
  const long x = std::strtol(value, &end, 10);
  if (end == value || x <= 0 || (*end != '\0' && *end != '(' && *end != ',')) {
    return InvalidArgumentError(std::string("environment ") + name + "='" + value + "' is not a Slurm task count");
  }
  return static_cast<int>(x);
}

StatusOr<LauncherEnv> FromTorchrun(const EnvGetter& get) {
  LauncherEnv env;
  env.launcher = "torchrun";
  ASSIGN_OR_RETURN(env.rank, Int(get, "RANK", 0));
  ASSIGN_OR_RETURN(env.world, Int(get, "WORLD_SIZE", 1));
  ASSIGN_OR_RETURN(env.local_rank, Int(get, "LOCAL_RANK", 0));
  ASSIGN_OR_RETURN(env.local_world, Int(get, "LOCAL_WORLD_SIZE", 1));
  if (const char* a = get("MASTER_ADDR")) env.master_addr = a;
  ASSIGN_OR_RETURN(env.master_port, Int(get, "MASTER_PORT", 0));
  return env;
}

StatusOr<LauncherEnv> FromSlurm(const EnvGetter& get) {
  LauncherEnv env;
  env.launcher = "slurm";
  if (get("SLURM_NTASKS") == nullptr) {
    return InvalidArgumentError(
        "environment SLURM_PROCID is set but SLURM_NTASKS is not: start the ranks with srun "
        "(--ntasks or --ntasks-per-node), or set torchrun's RANK and WORLD_SIZE");
  }
  ASSIGN_OR_RETURN(env.rank, Int(get, "SLURM_PROCID", 0));
  ASSIGN_OR_RETURN(env.world, Int(get, "SLURM_NTASKS", 1));
  ASSIGN_OR_RETURN(env.local_rank, Int(get, "SLURM_LOCALID", 0));
  if (const char* per_node = get("SLURM_NTASKS_PER_NODE"); per_node != nullptr && *per_node != '\0') {
    ASSIGN_OR_RETURN(env.local_world, FirstCount("SLURM_NTASKS_PER_NODE", per_node));
  } else if (const char* tasks = get("SLURM_TASKS_PER_NODE"); tasks != nullptr && *tasks != '\0') {
    ASSIGN_OR_RETURN(env.local_world, FirstCount("SLURM_TASKS_PER_NODE", tasks));
  } else {
    ASSIGN_OR_RETURN(int nodes, Int(get, "SLURM_NNODES", 1));
    env.local_world = nodes > 0 ? std::max(1, env.world / nodes) : 1;
  }
  if (const char* a = get("MASTER_ADDR"); a != nullptr && *a != '\0') {
    env.master_addr = a;
  } else if (const char* list = get("SLURM_JOB_NODELIST"); list != nullptr && *list != '\0') {
    ASSIGN_OR_RETURN(env.master_addr, FirstSlurmHost(list));
  } else if (const char* list2 = get("SLURM_NODELIST"); list2 != nullptr && *list2 != '\0') {
    ASSIGN_OR_RETURN(env.master_addr, FirstSlurmHost(list2));
  }
  ASSIGN_OR_RETURN(env.master_port, Int(get, "MASTER_PORT", 0));
  if (env.master_port == 0) {
    // Every rank of one job computes the same port, and jobs sharing a node get different ones (PyTorch
    // Lightning's rule): 15000-24999, below Linux's ephemeral ports (32768-60999).
    ASSIGN_OR_RETURN(int job_id, Int(get, "SLURM_JOB_ID", 0));
    env.master_port = 15000 + job_id % 10000;
  }
  return env;
}

}  // namespace

StatusOr<std::string> FirstSlurmHost(const std::string& nodelist) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("environment SLURM_JOB_NODELIST='" + nodelist + "': " + why);
  };
  const size_t bracket = nodelist.find('[');
  const size_t comma = nodelist.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket)) {
    std::string host = nodelist.substr(0, comma);
    if (host.empty()) return bad("no host before the first ','");
    return host;
  }
  const size_t close = nodelist.find(']', bracket);
  if (close == std::string::npos) return bad("'[' without ']'");
  const std::string prefix = nodelist.substr(0, bracket);
  const std::string inside = nodelist.substr(bracket + 1, close - bracket - 1);
  const size_t end = inside.find_first_of("-,");
  const std::string first = inside.substr(0, end);  // keeps zero padding: "007"
  if (prefix.empty() || first.empty() || first.find_first_not_of("0123456789") != std::string::npos) {
    return bad("expected host[N-M,...]");
  }
  return prefix + first + nodelist.substr(close + 1, nodelist.find(',', close) - close - 1);
}

StatusOr<LauncherEnv> ReadLauncherEnv(const EnvGetter& get) {
  LauncherEnv env;
  const char* rank = get("RANK");
  const char* procid = get("SLURM_PROCID");
  if (rank != nullptr && *rank != '\0') {
    ASSIGN_OR_RETURN(env, FromTorchrun(get));
  } else if (procid != nullptr && *procid != '\0') {
    ASSIGN_OR_RETURN(env, FromSlurm(get));
  } else {
    ASSIGN_OR_RETURN(env, FromTorchrun(get));  // WORLD_SIZE alone, or nothing: one process
    env.launcher = "none";
  }
  if (env.world < 1 || env.rank >= env.world) {
    return InvalidArgumentError("rank " + std::to_string(env.rank) + " is not below the world size " +
                                std::to_string(env.world) + " (launcher: " + env.launcher + ")");
  }
  if (env.local_world < 1 || env.local_rank >= env.local_world) {
    env.local_world = std::max(env.local_world, env.local_rank + 1);
  }
  return env;
}

}  // namespace anneal::train
