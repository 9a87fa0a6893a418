// A local cluster for one machine: `anneal up` starts anneal-coordinator and N anneal-agent processes found
// next to the anneal binary, daemonized (own session, logs in <state>/logs/), and records them in
// <state>/cluster.yaml; `anneal down` stops what that file lists (SIGTERM, then SIGKILL after a grace period).
//
// The daemons' command lines are built in CoordinatorArgv / AgentArgv only, so a flag change there is a
// one-line edit.
//
// Thread-safety: main thread only (fork/exec, signals).
// Ownership: the started daemons outlive this process; cluster.yaml is the record of them.
//
// Example:
//   LocalClusterOptions o{.agents = 2, .slots = 2, .state_dir = home};
//   ASSIGN_OR_RETURN(LocalCluster c, StartLocalCluster(o, std::cout));
//   ...
//   RETURN_IF_ERROR(StopLocalCluster(home, std::chrono::seconds(10), std::cout));
#pragma once

#include <sys/types.h>

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"

namespace anneal::cli {

struct LocalClusterOptions {
  int agents = 1;
  int slots = 2;           // 0: no --slots flag (the agent counts its GPUs)
  std::string state_dir;  // ~/.anneal by default
  int port = 0;           // coordinator port; 0 picks a free one
  std::chrono::milliseconds wait{30000};
  std::string bin_dir;    // where anneal-coordinator / anneal-agent are; default: next to this binary
};

struct DaemonProcess {
  std::string name;       // "coordinator", "agent local-0"
  std::string program;    // absolute path
  pid_t pid = 0;
  std::string log;
};

struct LocalCluster {
  std::string coordinator;  // tcp://127.0.0.1:PORT
  std::string token;
  std::vector<DaemonProcess> processes;  // coordinator first
};

// The directory of the running anneal binary.
std::string SelfDir();

std::vector<std::string> CoordinatorArgv(const std::string& program, const std::string& bind,
                                         const std::string& state_dir, const std::string& token,
                                         const std::string& config_file);
// slots 0: no --slots flag, so the agent schedules one rank per GPU it finds.
std::vector<std::string> AgentArgv(const std::string& program, const std::string& coordinator,
                                   const std::string& node, const std::string& work_dir, int slots);

// GPUs the NVIDIA driver lists (/proc/driver/nvidia/gpus); 0 without the driver.
int NvidiaGpuCount();

// Starts the daemons and waits until every agent is registered (ListNodes). On failure everything started is
// stopped again and the error carries the tail of the failing daemon's log.
StatusOr<LocalCluster> StartLocalCluster(const LocalClusterOptions& options, std::ostream& progress);

// Stops the processes recorded in <state_dir>/cluster.yaml and removes the file. NOT_FOUND when there is none.
Status StopLocalCluster(const std::string& state_dir, std::chrono::milliseconds grace, std::ostream& progress);

}  // namespace anneal::cli
