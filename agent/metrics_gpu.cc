#include "agent/metrics_gpu.h"

namespace anneal::agent {

GpuSampler::GpuSampler(const std::string& library) : library_(library) {}

GpuSampler::~GpuSampler() = default;

std::vector<GpuSample> GpuSampler::Sample() const {
  std::vector<GpuSample> out;
  for (const NvmlGpuReading& r : library_.Read()) {
    GpuSample g;
    g.index = r.index;
    g.name = r.name;
    g.uuid = r.uuid;
    g.memory_total_bytes = r.memory_total_bytes.value_or(0);
    g.memory_used_bytes = r.memory_used_bytes.value_or(0);
    g.utilization_ratio = r.utilization_percent.value_or(0) / 100.0;
    g.temperature_celsius = r.temperature_c.value_or(0);
    if (r.power_milliwatts) g.power_watts = *r.power_milliwatts / 1000.0;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace anneal::agent
