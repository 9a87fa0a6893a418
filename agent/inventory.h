// Node inventory: GPUs through NVML (loaded with dlopen, so the agent runs on machines without the NVIDIA
// driver), CPU count, memory, and the operator's declarations (slots, labels, address, ports, work dir).
//
// A missing libnvidia-ml.so.1, or an NVML that fails to initialize, means "no GPUs" (logged at debug), never
// an error: CPU nodes declare their rank slots with --slots N instead.
//
// Thread-safety: Nvml is not thread-safe (use it from the agent's loop). Ownership: Nvml owns its
// NvmlLibrary (agent/nvml.h: the dlopen handle, NVML shut down in its destructor).
//
// Example:
//   anneal::agent::Nvml nvml;                       // tries dlopen once
//   pb::NodeInventory inv = anneal::agent::BuildInventory(config, nvml);
//   // later, in a heartbeat: for (auto& g : nvml.Query()) ...
#pragma once

#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/nvml.h"
#include "protocol/anneal.pb.h"

namespace anneal::agent {

class Nvml {
 public:
  // `library` is the soname to dlopen; tests pass a name that does not exist.
  explicit Nvml(const std::string& library = "libnvidia-ml.so.1");
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  bool available() const { return library_.available(); }
  // Why NVML is not available ("" when it is).
  const std::string& unavailable_reason() const { return library_.reason(); }
  // One entry per GPU with current memory use, utilization and temperature; empty without NVML.
  std::vector<pb::GpuInfo> Query() const;

 private:
  NvmlLibrary library_;
};

// The inventory reported at registration. slots = config.slots when set, else the GPU count.
pb::NodeInventory BuildInventory(const AgentConfig& config, const Nvml& nvml);

}  // namespace anneal::agent
