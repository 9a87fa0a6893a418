// Clock: the coordinator's time source, injected so unit tests drive failure detection and long polls
// deterministically.
//
// SystemClock reads the wall clock (milliseconds since the Unix epoch: the values stored in records).
// FakeClock only moves when a test advances it.
//
// Thread-safety: SystemClock is stateless; FakeClock is for single-threaded tests.
// Ownership: whoever constructs the Coordinator owns the clock and keeps it alive longer than the Coordinator.
//
// Example:
//   anneal::coordinator::FakeClock clock(1'000'000);
//   Coordinator core(options, store.get(), &clock);
//   clock.Advance(10'001);   // past the heartbeat timeout
//   core.Tick();
#pragma once

#include <chrono>
#include <cstdint>

namespace anneal::coordinator {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_; }
  void Advance(int64_t ms) { now_ms_ += ms; }

 private:
  int64_t now_ms_;
};

}  // namespace anneal::coordinator
