// Fair-share usage: slot-seconds a team consumed, decayed exponentially with a half-life (as Slurm's
// multifactor priority does with PriorityDecayHalfLife), so last week's burst weighs less than this hour's.
//
//   usage(t + dt) = usage(t) * 2^(-dt / half_life) + integral over [t, t + dt] of slots * 2^(-(t + dt - s) / half_life)
//   ds
//                 = usage(t) * d + slots * half_life / ln 2 * (1 - d),   d = 2^(-dt / half_life)
// where `slots` is what the team held during [t, t + dt] (constant between scheduling events). The closed form
// makes the result independent of how often it is called: accruing 10 s ten times equals accruing 100 s once.
// A half-life of 0 disables decay (plain slot-seconds).
//
// Thread-safety: pure functions.
//
// Example:
//   usage = AccrueUsage(usage, /*slots=*/8, /*elapsed_ms=*/now - last, half_life_ms);
#pragma once

#include <cmath>
#include <cstdint>

namespace anneal::coordinator {

inline double DecayFactor(int64_t elapsed_ms, int64_t half_life_ms) {
  if (half_life_ms <= 0 || elapsed_ms <= 0) return 1.0;
  return std::exp2(-static_cast<double>(elapsed_ms) / static_cast<double>(half_life_ms));
}

// `usage` decayed over `elapsed_ms`, plus `slots` held for that time (slot-seconds, decayed the same way).
inline double AccrueUsage(double usage, double slots, int64_t elapsed_ms, int64_t half_life_ms) {
  if (elapsed_ms <= 0) return usage;
  const double seconds = static_cast<double>(elapsed_ms) / 1000.0;
  if (half_life_ms <= 0) return usage + slots * seconds;
  const double d = DecayFactor(elapsed_ms, half_life_ms);
  const double half_life_s = static_cast<double>(half_life_ms) / 1000.0;
  return usage * d + slots * half_life_s / std::log(2.0) * (1.0 - d);
}

}  // namespace anneal::coordinator
