#include "agent/inventory.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>
#include <thread>

namespace anneal::agent {
namespace {

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

uint64_t TotalMemoryBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  while (in >> key >> kb) {
    if (key == "MemTotal:") return kb * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

}  // namespace

Nvml::Nvml(const std::string& library) : library_(library) {
  if (library_.available()) return;
  // No driver is the normal case of a CPU node; a driver NVML refuses is worth a warning.
  if (library_.loaded()) {
    spdlog::warn("NVML unavailable: {}", library_.reason());
  } else {
    spdlog::debug("NVML unavailable: {}", library_.reason());
  }
}

Nvml::~Nvml() = default;

std::vector<pb::GpuInfo> Nvml::Query() const {
  std::vector<pb::GpuInfo> gpus;
  for (const NvmlGpuReading& r : library_.Read()) {
    pb::GpuInfo g;
    g.set_index(r.index);
    g.set_name(r.name);
    g.set_uuid(r.uuid);
    g.set_memory_total_bytes(r.memory_total_bytes.value_or(0));
    g.set_memory_used_bytes(r.memory_used_bytes.value_or(0));
    g.set_utilization_percent(r.utilization_percent.value_or(0));
    g.set_temperature_c(r.temperature_c.value_or(0));
    gpus.push_back(std::move(g));
  }
  return gpus;
}

pb::NodeInventory BuildInventory(const AgentConfig& config, const Nvml& nvml) {
  pb::NodeInventory inv;
  inv.set_hostname(Hostname());
  inv.set_address(config.address);
  for (auto& g : nvml.Query()) *inv.add_gpus() = std::move(g);
  inv.set_slots(config.slots != 0 ? config.slots : static_cast<uint32_t>(inv.gpus_size()));
  for (const auto& [k, v] : config.labels) (*inv.mutable_labels())[k] = v;
  inv.set_cpu_count(std::thread::hardware_concurrency());
  inv.set_memory_total_bytes(TotalMemoryBytes());
  inv.set_rendezvous_port_begin(config.rendezvous_port_begin);
  inv.set_rendezvous_port_end(config.rendezvous_port_end);
  inv.set_work_dir(config.work_dir);
  return inv;
}

}  // namespace anneal::agent
