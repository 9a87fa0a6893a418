// NvmlLibrary: NVIDIA's management library loaded with dlopen at run time, so the agent builds and runs on
// machines without the driver. The one place that knows NVML's ABI (the few entry points the agent uses;
// nvml.h is not needed to build). The inventory (agent/inventory.h, Nvml: GpuInfo for registration and
// heartbeats) and the metrics endpoint (agent/metrics_gpu.h, GpuSampler) both read GPUs through it.
//
// Outcomes: without the library (loaded() false), without the entry points it needs, or when nvmlInit_v2
// fails, available() is false, reason() says why and Read() returns nothing. A GPU whose handle cannot be had
// is left out of a reading; a figure the GPU does not report stays unset (std::nullopt).
//
// Thread-safety: NVML itself is thread-safe; an NvmlLibrary is used by one thread. Ownership: owns the dlopen
// handle; the destructor calls nvmlShutdown (NVML counts its initializations, so two instances coexist).
//
// Example:
//   NvmlLibrary nvml;                              // tries libnvidia-ml.so.1 once
//   for (const NvmlGpuReading& g : nvml.Read()) if (g.utilization_percent) ...
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace anneal::agent {

// One GPU's figures at one moment.
struct NvmlGpuReading {
  uint32_t index = 0;
  std::string name;
  std::string uuid;
  std::optional<uint64_t> memory_total_bytes;
  std::optional<uint64_t> memory_used_bytes;
  std::optional<uint32_t> utilization_percent;
  std::optional<uint32_t> temperature_c;
  std::optional<uint32_t> power_milliwatts;
};

class NvmlLibrary {
 public:
  // `library` is the soname to dlopen; tests pass a name that does not exist.
  explicit NvmlLibrary(const std::string& library = "libnvidia-ml.so.1");
  ~NvmlLibrary();
  NvmlLibrary(const NvmlLibrary&) = delete;
  NvmlLibrary& operator=(const NvmlLibrary&) = delete;

  bool loaded() const { return handle_ != nullptr; }  // dlopen succeeded (available() may still be false)
  bool available() const { return initialized_; }
  const std::string& reason() const { return reason_; }  // why not available ("" when it is)
  std::vector<NvmlGpuReading> Read() const;              // one entry per GPU; empty when not available

 private:
  struct Api;
  void* handle_ = nullptr;
  Api* api_ = nullptr;
  bool initialized_ = false;
  std::string reason_;
};

}  // namespace anneal::agent
