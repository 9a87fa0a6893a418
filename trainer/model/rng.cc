#include "trainer/model/rng.h"

#include <ATen/Context.h>

#include <mutex>

namespace anneal::model {
namespace {

at::Tensor GetState(const at::Generator& gen_ref) {
  at::Generator gen = gen_ref;
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void SetState(const at::Generator& gen_ref, const at::Tensor& state) {
  at::Generator gen = gen_ref;
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

RngState RngState::Capture(const c10::Device& device) {
  RngState s;
  s.where = device;
  s.cpu = GetState(at::globalContext().defaultGenerator(c10::Device(c10::kCPU)));
  if (device.is_cuda()) s.device = GetState(at::globalContext().defaultGenerator(device));
  return s;
}

void RngState::Restore() const {
  if (cpu.defined()) SetState(at::globalContext().defaultGenerator(c10::Device(c10::kCPU)), cpu);
  if (device.defined() && where.is_cuda()) SetState(at::globalContext().defaultGenerator(where), device);
}

}  // namespace anneal::model
