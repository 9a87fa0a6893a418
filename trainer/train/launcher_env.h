// LauncherEnv: who this rank is, read from its launcher's environment: torchrun's variables (also what the agent
// and `anneal-train launch` set), or Slurm's when a rank is started by `srun` without them.
//
//   torchrun / agent      RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   srun (Slurm)          SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE (or the first count
//                         of SLURM_TASKS_PER_NODE: "4(x2),2" -> 4), SLURM_NNODES; the rendezvous host is the
//                         first host of SLURM_JOB_NODELIST ("gpu[07-09,12],cpu1" -> "gpu07"), its port
//                         15000 + SLURM_JOB_ID % 10000, unless MASTER_ADDR / MASTER_PORT are set (they win).
// torchrun's variables win whenever RANK is set, so an agent or torchrun inside a Slurm allocation is read as
// such. Nothing set: one process (rank 0 of 1).
//
// Errors: INVALID_ARGUMENT naming the variable and its value (not a non-negative integer, a rank not below the
// world size, a malformed node list, SLURM_PROCID without SLURM_NTASKS).
//
// Thread-safety: pure; `get` is called for each variable read (std::getenv in the trainer, a map in tests).
//
// Example:
//   ASSIGN_OR_RETURN(LauncherEnv env, ReadLauncherEnv([](const char* n) { return std::getenv(n); }));
#pragma once

#include <functional>
#include <string>

#include "common/status.h"

namespace anneal::train {

struct LauncherEnv {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;
  std::string master_addr;  // empty when the environment names none (then world must be 1)
  int master_port = 0;
  std::string launcher = "none";  // "torchrun" (RANK set), "slurm" (SLURM_PROCID), or "none"
};

using EnvGetter = std::function<const char*(const char* name)>;

StatusOr<LauncherEnv> ReadLauncherEnv(const EnvGetter& get);

// The first host of a Slurm node list ("n[1-3]" -> "n1", "gpu[007-009]" -> "gpu007", "a,b" -> "a").
StatusOr<std::string> FirstSlurmHost(const std::string& nodelist);

}  // namespace anneal::train
