#include "trainer/train/preemption.h"

#include <signal.h>

#include <atomic>

namespace anneal::train {
namespace {

std::atomic<int> g_requests{0};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free counter");

extern "C" void OnPreemptSignal(int) {
  g_requests.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void InstallPreemptHandler() {
  struct sigaction sa {};
  sa.sa_handler = OnPreemptSignal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
}

bool PreemptRequested() {
  return g_requests.load(std::memory_order_relaxed) > 0;
}
int PreemptRequestCount() {
  return g_requests.load(std::memory_order_relaxed);
}
void ResetPreemptRequest() {
  g_requests.store(0, std::memory_order_relaxed);
}

}  // namespace anneal::train
