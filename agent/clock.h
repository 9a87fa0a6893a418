// Clock: the agent's only source of time, injectable so tests can drive heartbeats, grace periods and
// backoff deterministically.
//
// WallMs() is unix-epoch milliseconds (timestamps in reports); SteadyMs() is monotonic milliseconds (every
// deadline: heartbeat due, SIGKILL after grace, register retry). The event loop asks the clock on each tick
// and never reads std::chrono itself.
//
// Thread-safety: SystemClock is stateless; FakeClock is not synchronized (use it from the loop's thread).
// Ownership: the agent borrows the clock; whoever creates it keeps it alive longer than the agent.
//
// Example:
//   anneal::agent::FakeClock clock(/*wall_ms=*/1'000'000);
//   supervisor.Tick();           // nothing due
//   clock.Advance(5000);         // grace period over
//   supervisor.Tick();           // SIGKILL sent to ranks that ignored SIGTERM
#pragma once

#include <chrono>
#include <cstdint>

namespace anneal::agent {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t WallMs() const = 0;
  virtual int64_t SteadyMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t WallMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  int64_t SteadyMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t wall_ms = 1'700'000'000'000) : wall_ms_(wall_ms) {}
  int64_t WallMs() const override { return wall_ms_; }
  int64_t SteadyMs() const override { return steady_ms_; }
  void Advance(int64_t ms) {
    wall_ms_ += ms;
    steady_ms_ += ms;
  }

 private:
  int64_t wall_ms_;
  int64_t steady_ms_ = 0;
};

}  // namespace anneal::agent
