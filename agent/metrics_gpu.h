// GpuSampler: per-GPU utilization, memory, temperature and power for the agent's /metrics, through NVML loaded
// with dlopen at run time, so the agent builds and runs without libnvidia-ml (docs/agent.md, "Metrics").
//
// Without the library, without an entry point it needs, or when nvmlInit_v2 fails, available() is false,
// reason() says why and Sample() returns nothing (the endpoint then exports anneal_agent_nvml_available 0).
// A GPU whose query fails is left out of that sample; a GPU that does not report its power draw has no power.
//
// Thread-safety: NVML itself is thread-safe; one GpuSampler is used by one thread (the agent's HTTP thread).
// Ownership: owns its NvmlLibrary (agent/nvml.h; NVML counts its initializations, so the agent's inventory Nvml
// is not disturbed).
//
// Example:
//   GpuSampler gpus;                       // tries libnvidia-ml.so.1 once
//   for (const GpuSample& g : gpus.Sample()) ...
#pragma once

#include <string>
#include <vector>

#include "agent/metrics.h"
#include "agent/nvml.h"

namespace anneal::agent {

class GpuSampler {
 public:
  explicit GpuSampler(const std::string& library = "libnvidia-ml.so.1");
  ~GpuSampler();
  GpuSampler(const GpuSampler&) = delete;
  GpuSampler& operator=(const GpuSampler&) = delete;

  bool available() const { return library_.available(); }
  const std::string& reason() const { return library_.reason(); }
  std::vector<GpuSample> Sample() const;

 private:
  NvmlLibrary library_;
};

}  // namespace anneal::agent
