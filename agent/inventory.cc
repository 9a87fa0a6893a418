#include "agent/inventory.h"

#include <dlfcn.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

namespace anneal::agent {
namespace {

// The few NVML entry points the agent uses (nvml.h is not needed: these signatures are NVML's stable ABI).
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;

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

struct Nvml::Api {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  nvmlReturn_t (*device_count)(unsigned int*);
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*memory)(nvmlDevice_t, NvmlMemory*);
  nvmlReturn_t (*utilization)(nvmlDevice_t, NvmlUtilization*);
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int*);
};

Nvml::Nvml(const std::string& library) {
  handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ == nullptr) {
    reason_ = library + " not loadable (no NVIDIA driver): " + std::string(dlerror());
    spdlog::debug("NVML unavailable: {}", reason_);
    return;
  }
  api_ = new Api{};
  auto sym = [&](const char* name) { return dlsym(handle_, name); };
  api_->init = reinterpret_cast<decltype(api_->init)>(sym("nvmlInit_v2"));
  api_->shutdown = reinterpret_cast<decltype(api_->shutdown)>(sym("nvmlShutdown"));
  api_->device_count = reinterpret_cast<decltype(api_->device_count)>(sym("nvmlDeviceGetCount_v2"));
  api_->handle_by_index = reinterpret_cast<decltype(api_->handle_by_index)>(sym("nvmlDeviceGetHandleByIndex_v2"));
  api_->name = reinterpret_cast<decltype(api_->name)>(sym("nvmlDeviceGetName"));
  api_->uuid = reinterpret_cast<decltype(api_->uuid)>(sym("nvmlDeviceGetUUID"));
  api_->memory = reinterpret_cast<decltype(api_->memory)>(sym("nvmlDeviceGetMemoryInfo"));
  api_->utilization = reinterpret_cast<decltype(api_->utilization)>(sym("nvmlDeviceGetUtilizationRates"));
  api_->temperature = reinterpret_cast<decltype(api_->temperature)>(sym("nvmlDeviceGetTemperature"));
  if (!api_->init || !api_->shutdown || !api_->device_count || !api_->handle_by_index) {
    reason_ = library + " lacks the NVML entry points (nvmlInit_v2, nvmlDeviceGetCount_v2, ...)";
    spdlog::warn("NVML unavailable: {}", reason_);
    return;
  }
  const nvmlReturn_t rc = api_->init();
  if (rc != kNvmlSuccess) {
    reason_ = "nvmlInit_v2 failed with NVML error " + std::to_string(rc);
    spdlog::warn("NVML unavailable: {}", reason_);
    return;
  }
  initialized_ = true;
}

Nvml::~Nvml() {
  if (initialized_) api_->shutdown();
  delete api_;
  if (handle_ != nullptr) dlclose(handle_);
}

std::vector<pb::GpuInfo> Nvml::Query() const {
  std::vector<pb::GpuInfo> gpus;
  if (!available()) return gpus;
  unsigned int count = 0;
  if (api_->device_count(&count) != kNvmlSuccess) return gpus;
  for (unsigned int i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    if (api_->handle_by_index(i, &dev) != kNvmlSuccess) continue;
    pb::GpuInfo g;
    g.set_index(i);
    char buf[128] = {};
    if (api_->name && api_->name(dev, buf, sizeof(buf)) == kNvmlSuccess) g.set_name(buf);
    char ubuf[128] = {};
    if (api_->uuid && api_->uuid(dev, ubuf, sizeof(ubuf)) == kNvmlSuccess) g.set_uuid(ubuf);
    NvmlMemory mem{};
    if (api_->memory && api_->memory(dev, &mem) == kNvmlSuccess) {
      g.set_memory_total_bytes(mem.total);
      g.set_memory_used_bytes(mem.used);
    }
    NvmlUtilization util{};
    if (api_->utilization && api_->utilization(dev, &util) == kNvmlSuccess) g.set_utilization_percent(util.gpu);
    unsigned int temp = 0;
    if (api_->temperature && api_->temperature(dev, kNvmlTemperatureGpu, &temp) == kNvmlSuccess) {
      g.set_temperature_c(temp);
    }
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
