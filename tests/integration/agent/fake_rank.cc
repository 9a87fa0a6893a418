// fake_rank: a stand-in for anneal-train in the agent's integration tests. It follows the trainer contract
// (docs/trainer-contract.md: `train|eval --config FILE [--set k=v]`, torchrun's environment, JSON events on
// ANNEAL_EVENTS_FD) and does what the test asks through environment variables (LaunchTask.env):
//   FAKE_STEPS=N            metrics events to emit (default 3), then a checkpoint (rank 0) and `finished`
//   FAKE_INTERVAL_MS=T      pause between metrics events (default 10)
//   FAKE_SLEEP_MS=T         sleep after the events before exiting 0 (default 0)
//   FAKE_IGNORE_TERM=1      ignore SIGTERM (otherwise SIGTERM -> exit 143)
//   FAKE_CRASH_RANK=R       global rank R exits with code 3 after FAKE_CRASH_AFTER_MS (default 200)
//   FAKE_CHILD=1            fork a grandchild that sleeps (must be cleaned up with the rank's process group)
//   FAKE_OUTPUT_DIR=D       checkpoint path prefix (default /tmp)
//   FAKE_PREEMPT=exit       on SIGUSR1 (a preemption): after FAKE_PREEMPT_DELAY_MS (default 0), rank 0 emits a
//                           checkpoint and `preempted`, every rank `finished` with status "preempted", exit 75
//   FAKE_PREEMPT=ignore     SIGUSR1 is ignored (a rank the agent must kill at the deadline)
//   (unset: SIGUSR1 keeps its default action and kills the rank)
// Everything it sees (argv, env, config) is printed to stdout, i.e. the rank log.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

namespace {

volatile sig_atomic_t g_term = 0;
volatile sig_atomic_t g_usr1 = 0;
constexpr int kPreemptedExitCode = 75;  // protocol::kPreemptedExitCode (this program links nothing of Anneal's)

std::string Env(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}
long EnvInt(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}
long long NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void Emit(const std::string& json) {
  const long fd = EnvInt("ANNEAL_EVENTS_FD", -1);
  if (fd < 0) return;
  const std::string line = json + "\n";
  ssize_t n = ::write(static_cast<int>(fd), line.data(), line.size());
  (void)n;
}

void Checkpoint(const std::string& rank, long step) {
  if (rank != "0") return;
  const std::string out = Env("FAKE_OUTPUT_DIR", "/tmp");
  Emit("{\"type\":\"checkpoint\",\"rank\":0,\"time_ms\":" + std::to_string(NowMs()) +
       ",\"step\":" + std::to_string(step) + ",\"path\":\"" + out + "/checkpoint-" + std::to_string(step) +
       "\",\"files\":[{\"path\":\"model.safetensors\",\"size\":12,\"sha256\":\"ab\"}],"
       "\"layout\":{\"world_size\":2,\"tensor_parallel\":1,\"pipeline_parallel\":1,\"data_parallel\":2},"
       "\"metrics\":{\"loss\":1.0}}");
}

// What anneal-train does at the step boundary after a SIGUSR1: checkpoint, say so, exit 75.
[[noreturn]] void ExitPreempted(long step) {
  const std::string rank = Env("RANK", "0");
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(EnvInt("FAKE_PREEMPT_DELAY_MS", 0));
  while (std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const std::string path =
      step > 0 ? Env("FAKE_OUTPUT_DIR", "/tmp") + "/checkpoint-" + std::to_string(step) : std::string();
  if (step > 0) Checkpoint(rank, step);
  if (rank == "0") {
    Emit("{\"type\":\"preempted\",\"rank\":0,\"time_ms\":" + std::to_string(NowMs()) +
         ",\"step\":" + std::to_string(step) + ",\"checkpoint\":\"" + path + "\"}");
  }
  Emit("{\"type\":\"finished\",\"rank\":" + rank + ",\"time_ms\":" + std::to_string(NowMs()) +
       ",\"status\":\"preempted\",\"message\":\"preempted at step " + std::to_string(step) + "\"}");
  std::printf("rank %s: SIGUSR1, checkpointed at step %ld, exiting 75\n", rank.c_str(), step);
  std::fflush(stdout);
  std::_Exit(kPreemptedExitCode);
}

long g_step = 0;

void SleepMs(long ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until) {
    if (g_usr1) ExitPreempted(g_step);
    if (g_term) {
      std::printf("rank %s: SIGTERM, exiting 143\n", Env("RANK").c_str());
      std::fflush(stdout);
      std::_Exit(143);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (Env("FAKE_IGNORE_TERM") == "1") {
    signal(SIGTERM, SIG_IGN);
  } else {
    signal(SIGTERM, [](int) { g_term = 1; });
  }
  if (Env("FAKE_PREEMPT") == "exit") {
    signal(SIGUSR1, [](int) { g_usr1 = 1; });
  } else if (Env("FAKE_PREEMPT") == "ignore") {
    signal(SIGUSR1, SIG_IGN);
  }
  const std::string rank = Env("RANK", "0");
  std::printf(
      "fake rank RANK=%s WORLD_SIZE=%s LOCAL_RANK=%s LOCAL_WORLD_SIZE=%s MASTER_ADDR=%s MASTER_PORT=%s "
      "JOB=%s ATTEMPT=%s EPOCH=%s CUDA_VISIBLE_DEVICES=%s pgid_is_pid=%d\n",
      rank.c_str(), Env("WORLD_SIZE").c_str(), Env("LOCAL_RANK").c_str(), Env("LOCAL_WORLD_SIZE").c_str(),
      Env("MASTER_ADDR").c_str(), Env("MASTER_PORT").c_str(), Env("ANNEAL_JOB_ID").c_str(),
      Env("ANNEAL_ATTEMPT").c_str(), Env("ANNEAL_EPOCH").c_str(), Env("CUDA_VISIBLE_DEVICES", "-").c_str(),
      getpgrp() == getpid() ? 1 : 0);
  std::printf("args:");
  for (int i = 1; i < argc; ++i) std::printf(" %s", argv[i]);
  std::printf("\n");
  if (argc >= 3 && std::strcmp(argv[2], "--config") == 0) {
    std::ifstream cfg(argv[3]);
    std::string first;
    std::getline(cfg, first);
    std::printf("config first line: %s\n", cfg ? first.c_str() : "<unreadable>");
  }
  std::fprintf(stderr, "rank %s: stderr works\n", rank.c_str());
  std::fflush(stdout);

  if (Env("FAKE_CHILD") == "1" && fork() == 0) {
    // A grandchild in the rank's process group that would outlive it without the agent's group kill.
    for (int i = 0; i < 600; ++i) sleep(1);
    _exit(0);
  }

  Emit("{\"type\":\"started\",\"rank\":" + rank + ",\"time_ms\":" + std::to_string(NowMs()) +
       ",\"world_size\":" + Env("WORLD_SIZE", "1") + ",\"pid\":" + std::to_string(getpid()) + "}");
  const long crash_rank = EnvInt("FAKE_CRASH_RANK", -1);
  if (crash_rank == std::strtol(rank.c_str(), nullptr, 10)) {
    SleepMs(EnvInt("FAKE_CRASH_AFTER_MS", 200));
    std::fprintf(stderr, "rank %s: crashing on purpose\n", rank.c_str());
    Emit("{\"type\":\"finished\",\"rank\":" + rank + ",\"time_ms\":" + std::to_string(NowMs()) +
         ",\"status\":\"error\",\"message\":\"crashed on purpose\"}");
    return 3;
  }
  const long steps = EnvInt("FAKE_STEPS", 3);
  const long interval = EnvInt("FAKE_INTERVAL_MS", 10);
  for (long step = 1; step <= steps; ++step) {
    SleepMs(interval);
    g_step = step;
    if (rank == "0") {
      Emit("{\"type\":\"metrics\",\"rank\":0,\"time_ms\":" + std::to_string(NowMs()) +
           ",\"step\":" + std::to_string(step) + ",\"total_steps\":" + std::to_string(steps) +
           ",\"values\":{\"loss\":" + std::to_string(3.0 / static_cast<double>(step)) + ",\"lr\":0.0001}}");
    }
  }
  if (steps > 0) Checkpoint(rank, steps);
  SleepMs(EnvInt("FAKE_SLEEP_MS", 0));
  Emit("{\"type\":\"finished\",\"rank\":" + rank + ",\"time_ms\":" + std::to_string(NowMs()) +
       ",\"status\":\"ok\",\"message\":\"adapter written\",\"output\":\"/tmp\"}");
  std::printf("rank %s: done\n", rank.c_str());
  return 0;
}
