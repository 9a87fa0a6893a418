#include "agent/nvml.h"

#include <dlfcn.h>

namespace anneal::agent {
namespace {

// NVML's stable ABI for the entry points used here.
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
constexpr nvmlReturn_t kSuccess = 0;
constexpr int kTemperatureGpu = 0;

}  // namespace

struct NvmlLibrary::Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*device_count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, NvmlMemory*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, NvmlUtilization*) = nullptr;
  nvmlReturn_t (*temperature)(nvmlDevice_t, int, unsigned int*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned int*) = nullptr;  // milliwatts
};

NvmlLibrary::NvmlLibrary(const std::string& library) {
  handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ == nullptr) {
    const char* why = dlerror();
    reason_ = library + " is not loadable (no NVIDIA driver): " + (why ? why : "unknown");
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
  api_->power = reinterpret_cast<decltype(api_->power)>(sym("nvmlDeviceGetPowerUsage"));
  if (!api_->init || !api_->shutdown || !api_->device_count || !api_->handle_by_index) {
    reason_ = library + " lacks the NVML entry points (nvmlInit_v2, nvmlDeviceGetCount_v2, ...)";
    return;
  }
  if (const nvmlReturn_t rc = api_->init(); rc != kSuccess) {
    reason_ = "nvmlInit_v2 failed with NVML error " + std::to_string(rc);
    return;
  }
  initialized_ = true;
}

NvmlLibrary::~NvmlLibrary() {
  if (initialized_) api_->shutdown();
  delete api_;
  if (handle_ != nullptr) dlclose(handle_);
}

std::vector<NvmlGpuReading> NvmlLibrary::Read() const {
  std::vector<NvmlGpuReading> out;
  unsigned int count = 0;
  if (!initialized_ || api_->device_count(&count) != kSuccess) return out;
  for (unsigned int i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    if (api_->handle_by_index(i, &dev) != kSuccess) continue;
    NvmlGpuReading g;
    g.index = i;
    char text[128] = {};
    if (api_->name && api_->name(dev, text, sizeof(text) - 1) == kSuccess) g.name = text;
    char uuid[128] = {};
    if (api_->uuid && api_->uuid(dev, uuid, sizeof(uuid) - 1) == kSuccess) g.uuid = uuid;
    NvmlMemory mem{};
    if (api_->memory && api_->memory(dev, &mem) == kSuccess) {
      g.memory_total_bytes = mem.total;
      g.memory_used_bytes = mem.used;
    }
    NvmlUtilization util{};
    if (api_->utilization && api_->utilization(dev, &util) == kSuccess) g.utilization_percent = util.gpu;
    unsigned int celsius = 0;
    if (api_->temperature && api_->temperature(dev, kTemperatureGpu, &celsius) == kSuccess) g.temperature_c = celsius;
    unsigned int milliwatts = 0;
    if (api_->power && api_->power(dev, &milliwatts) == kSuccess) g.power_milliwatts = milliwatts;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace anneal::agent
